"""``python -m imserver [--config FILE] [--check]``: start a node with gunicorn.

Run it in a checkout: the config is ``config/app.yaml`` of the current directory
unless ``--config`` names another file. The process becomes gunicorn (exec), so its
pid is the gunicorn master's and signals reach gunicorn directly.
"""
import argparse
import os
import sys

from .config import CONFIG_ENV, DEFAULT_PATH, SECRET_KEYS, ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _masked(key: str, value):
    """Secrets are shown as *** by --check."""
    if (key == "redis.password" or key in SECRET_KEYS) and value:
        return "***"
    if key == "redis.url" and "@" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imserver", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help=f"YAML config file (default: {DEFAULT_PATH} if present)")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, print it and exit")
    args = parser.parse_args(argv)
    path = args.config or os.environ.get(CONFIG_ENV)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"imserver: config error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for key, value in cfg.items():
            print(f"{key}: {_masked(key, value)!r}")
        return 0
    env = dict(os.environ)
    if path:
        env[CONFIG_ENV] = os.path.abspath(path)
    elif os.path.exists(DEFAULT_PATH):
        env[CONFIG_ENV] = os.path.abspath(DEFAULT_PATH)
    argv = [sys.executable, "-m", "gunicorn", "-c", os.path.join(ROOT, "gunicorn.conf.py")]
    os.execve(sys.executable, argv, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
