#!/usr/bin/env python3
"""Set-up and everyday commands for a checkout; needs only Python 3.11+.

    python3 dev.py run  [--config FILE] [--check]
                                          start a node for development, listening on
                                          127.0.0.1 only unless app.host is set (e.g.
                                          IMSERVER_APP_HOST=0.0.0.0); creates .venv on
                                          first use
    python3 dev.py test [PYTEST ARGS]     run the test suite (installs what it needs)

Both create the virtual environment ``.venv`` from requirements.txt when it is missing
or out of date. ``test`` also installs the system packages the suite drives for real
(chromium, redis-server, nginx) when they are missing and it may (apt-get).
"""
import hashlib
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
PY = os.path.join(VENV, "bin", "python")
STAMP = os.path.join(VENV, ".requirements.sha256")


def say(msg: str) -> None:
    print(f"dev.py: {msg}", file=sys.stderr, flush=True)


def ensure_venv() -> None:
    with open(os.path.join(ROOT, "requirements.txt"), "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if os.path.exists(STAMP) and open(STAMP).read().strip() == digest and os.path.exists(PY):
        return
    if not os.path.exists(PY):
        say(f"creating virtual environment {VENV}")
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    say("installing requirements.txt into .venv (first run takes a minute)")
    subprocess.check_call([PY, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           "-r", os.path.join(ROOT, "requirements.txt")])
    with open(STAMP, "w") as fh:
        fh.write(digest)


TEST_PROGRAMS = {"chromium": "/usr/bin/chromium", "redis-server": "/usr/bin/redis-server",
                 "nginx": "/usr/sbin/nginx"}


def ensure_system_packages() -> None:
    """Install the real programs the tests drive (browser, Redis, nginx) when missing."""
    missing = [name for name, path in TEST_PROGRAMS.items() if not os.path.exists(path)]
    if not missing:
        return
    script = os.path.join(ROOT, "scripts", "install-test-deps.sh")
    if (os.geteuid() == 0 or shutil.which("sudo")) and shutil.which("apt-get"):
        say("installing " + ", ".join(missing) + " with apt-get")
        subprocess.check_call(["bash", script])
    else:
        say("missing " + ", ".join(missing) + ": install them (Debian/Ubuntu: `sudo bash "
            "scripts/install-test-deps.sh`); the tests that drive them fail until then")


def main(argv) -> int:
    if sys.version_info < (3, 11):
        say("Python 3.11 or newer is needed")
        return 2
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    os.chdir(ROOT)
    if command == "run":
        # --dev: loopback unless app.host is set, so that a node started for development
        # does not offer its open push API to the network.
        os.execv(PY, [PY, "-m", "imserver", "--dev", *rest])
    ensure_system_packages()
    # pytest runs under gevent's monkey-patching from its first import, as the node does.
    os.execv(PY, [PY, "-m", "gevent.monkey", "--module", "pytest", *rest])
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
