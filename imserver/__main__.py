"""``python -m imserver [--config FILE] [--check] [--dev]``: start a node with gunicorn.

Run it in a checkout: the config is ``config/app.yaml`` of the current directory
unless ``--config`` names another file. The process becomes gunicorn (exec), so its
pid is the gunicorn master's and signals reach gunicorn directly.
"""
import argparse
import errno
import ipaddress
import os
import socket
import sys

from .config import (CONFIG_ENV, DEFAULT_PATH, SECRET_KEYS, ConfigError, given_keys,
                     is_cluster, load_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_HOST = "127.0.0.1"

DESCRIPTION = """\
Start an imserver node: gunicorn with gevent-websocket workers, serving the HTTP API and
chat page on app.httpPort and the WebSocket endpoint /acc on app.webSocketPort.

Settings come from the defaults in code, then the YAML file (config/app.yaml of the
current directory, --config FILE or $IMSERVER_CONFIG), then IMSERVER_<SECTION>_<KEY>
environment variables. Every key is in docs/CONFIG.md."""

EPILOG = """\
examples:
  python -m imserver                          start with config/app.yaml
  python -m imserver --check                  print the resolved configuration
  IMSERVER_APP_HTTPPORT=8081 python -m imserver
  IMSERVER_REDIS_ADDR=127.0.0.1:6379 python -m imserver   a node of a cluster"""


def _masked(key: str, value):
    """Secrets are shown as *** by --check."""
    if (key == "redis.password" or key in SECRET_KEYS) and value:
        return "***"
    if key == "redis.url" and "@" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return value


def _print_config(cfg: dict) -> int:
    try:
        for key, value in cfg.items():
            print(f"{key}: {_masked(key, value)!r}")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader had enough (`--check | head -3`): that is not an error. Later writes
        # (the interpreter's flush at exit) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listeners(cfg: dict):
    """(setting, host setting, host, port) of every port the node will listen on."""
    yield "app.httpPort", "app.host", cfg["app.host"], cfg["app.httpPort"]
    yield "app.webSocketPort", "app.host", cfg["app.host"], cfg["app.webSocketPort"]
    if is_cluster(cfg):
        for index in range(cfg["app.workers"]):
            key = "app.rpcPort" + (f" + {index} (worker {index})" if index else "")
            yield key, "app.rpcHost", cfg["app.rpcHost"], cfg["app.rpcPort"] + index


def _env_of(key: str) -> str:
    return "IMSERVER_" + key.replace(".", "_").upper()


def listen_problem(cfg: dict) -> "str | None":
    """One line saying which port cannot be listened on and why, or None. Checked before
    gunicorn starts: its own message for a port in use is "Can't connect" after retries."""
    for key, host_key, host, port in _listeners(cfg):
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except socket.gaierror:
            return f"{host_key} {host!r} is not a host name or address of this machine"
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            try:
                probe.bind(addr)
            except OSError as exc:
                where = f"cannot listen on {host}:{port} ({key})"
                setting = key.split(" ")[0]
                if exc.errno == errno.EADDRINUSE:
                    return (f"{where}: the port is in use by another process; stop it, or "
                            f"choose another port with {setting} (e.g. "
                            f"{_env_of(setting)}={port + 1 if port < 65535 else 1024})")
                if exc.errno == errno.EACCES:
                    return (f"{where}: permission denied (ports below 1024 need privileges); "
                            f"choose another port with {setting}")
                if exc.errno == errno.EADDRNOTAVAIL:
                    return f"{where}: {host} is not an address of this machine ({host_key})"
                return f"{where}: {exc.strerror}"
    return None


def listen_banner(cfg: dict, dev_default: bool) -> str:
    """Where the node listens, and a warning when its push API is open to the network."""
    host, http, ws = cfg["app.host"], cfg["app.httpPort"], cfg["app.webSocketPort"]
    if _is_loopback(host):
        shown = "localhost" if host in ("127.0.0.1", "localhost") else host
        line = (f"imserver: listening on {host} only, other machines cannot connect; chat page "
                f"http://{shown}:{http}/home/index, WebSocket ws://{shown}:{ws}/acc")
        if dev_default:
            line += "; IMSERVER_APP_HOST=0.0.0.0 opens it to the network (docs/CONFIG.md)"
        return line
    where = "every interface" if host in ("", "0.0.0.0", "::") else host
    if not cfg["auth.apiKey"]:
        return (f"imserver: WARNING: listening on {where} (app.host {host}) with the push API "
                f"open: anyone who reaches port {http} can push messages to any user. Set "
                "auth.apiKey (docs/SECURITY.md), or app.host: 127.0.0.1")
    return f"imserver: listening on {where} (app.host {host}), HTTP :{http}, WebSocket :{ws}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imserver", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help=f"YAML config file (default: {DEFAULT_PATH} if present)")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, print it and exit")
    parser.add_argument("--dev", action="store_true",
                        help=f"a node for development: listen on {DEV_HOST} only unless app.host "
                             "is set in the file or IMSERVER_APP_HOST (python3 dev.py run "
                             "passes this)")
    args = parser.parse_args(argv)
    path = args.config or os.environ.get(CONFIG_ENV)
    env = dict(os.environ)
    try:
        dev_default = args.dev and "app.host" not in given_keys(path)
        if dev_default:
            env["IMSERVER_APP_HOST"] = DEV_HOST  # gunicorn.conf.py reads the config again
        cfg = load_config(path, env=env)
    except ConfigError as exc:
        print(f"imserver: config error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return _print_config(cfg)
    problem = listen_problem(cfg)
    if problem:
        print(f"imserver: {problem}", file=sys.stderr)
        return 2
    print(listen_banner(cfg, dev_default), file=sys.stderr, flush=True)
    if path:
        env[CONFIG_ENV] = os.path.abspath(path)
    elif os.path.exists(DEFAULT_PATH):
        env[CONFIG_ENV] = os.path.abspath(DEFAULT_PATH)
    argv = [sys.executable, "-m", "gunicorn", "-c", os.path.join(ROOT, "gunicorn.conf.py")]
    os.execve(sys.executable, argv, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
