"""Real processes for the tests and the load tool: nodes, redis-server, comparison peers.

Every process is started from an argv with its output appended to a log file, waited on
until it answers, and stopped by its pid (SIGTERM, then SIGKILL for it and its children).
Nothing here patches or needs gevent; under gevent's monkey-patching the waits yield.
"""
import ctypes
import ctypes.util
import errno
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from . import procstat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOPBACK = "127.0.0.1"


# -- ports -----------------------------------------------------------------------------------

def free_port() -> int:
    """A port free on loopback now, chosen by the kernel (from its ephemeral range)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    # gRPC binds the wildcard address, the HTTP servers loopback: the port must be free
    # on each (IPv6 only where the machine has it).
    for family, host in ((socket.AF_INET, LOOPBACK), (socket.AF_INET, "0.0.0.0"),
                         (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        except OSError as exc:
            if family != socket.AF_INET6 or exc.errno not in (errno.EAFNOSUPPORT,
                                                                errno.EADDRNOTAVAIL):
                return False
    return True


def low_ports(n: int, consecutive: bool = False, rng=None) -> "list[int]":
    """``n`` free ports below the kernel's ephemeral range (and below 32768): no outgoing
    connection can take one between a check and a bind, or between a process's stop and
    its restart on the same port. ``consecutive``: ``first .. first + n - 1``."""
    rng = rng or random.Random()
    high = min(32768, ephemeral_low())
    low = 20000 if high - 20000 >= 1000 else 10000
    ports = []
    for _ in range(2000):
        if consecutive:
            first = rng.randrange(low, high - n)
            if all(_bindable(p) for p in range(first, first + n)):
                return list(range(first, first + n))
            continue
        port = rng.randrange(low, high)
        if port not in ports and _bindable(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} {'consecutive ' if consecutive else ''}free ports "
                       f"in {low}-{high}")


# -- waiting ---------------------------------------------------------------------------------

def wait_until(predicate, timeout=5.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError with
    its last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout: float) -> bool:
    try:
        wait_until(lambda: not any(alive(p) for p in pids), timeout, what="processes gone")
        return True
    except TimeoutError:
        return False


def kill_pid(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- processes -------------------------------------------------------------------------------

try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
except OSError:
    _LIBC = None
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: SIGTERM when the parent dies (even by SIGKILL), so that
    nothing a long run started outlives it."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Process:
    """A child process: its output goes to ``log_path``; it is stopped by pid.

    ``detached``: a session of its own (a terminal's Ctrl-C reaches only its parent,
    which stops it in order) and SIGTERM when the parent dies. ``banner``: a line naming
    the owner written to the log before each start."""

    what = "process"
    start_timeout = 30.0  # seconds until it must answer
    ready_interval = 0.05
    stop_timeout = 20.0  # seconds after SIGTERM before SIGKILL

    def __init__(self, name: str, argv, log_path: str, env=None, cwd: str = ROOT,
                 detached: bool = False, banner: str = ""):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.detached = detached
        self.banner = banner
        self.proc = None
        self.pids_seen = set()  # every pid of it and its children, for a final sweep
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            if self.banner:
                log.write(f"\n---- {self.banner}: starting {self.what}: "
                          f"{' '.join(self.argv)}\n".encode())
                log.flush()
            extra = ({"preexec_fn": _die_with_parent, "start_new_session": True}
                     if self.detached else {})
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                         **extra)
        self.starts += 1
        self.pids_seen.add(self.proc.pid)

    def output(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def startup_failure(self, reason: str) -> str:
        """The message of a failed start (a caller may add the log's text)."""
        return f"{reason} (see {self.log_path})"

    def ready(self) -> bool:
        """Does it answer yet? (A process with nothing to ask is ready once started.)"""
        return True

    def start(self, timeout: float = None) -> "Process":
        """Start it and wait until it is ready; RuntimeError when it exits first or does
        not answer within ``timeout`` seconds (then it is stopped)."""
        timeout = self.start_timeout if timeout is None else timeout
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(self.startup_failure(
                    f"{self.what} exited with {self.proc.returncode}"))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(self.startup_failure(
                    f"{self.what} did not answer within {timeout:g}s"))
            time.sleep(self.ready_interval)
        return self

    def children(self) -> "list[int]":
        if not self.alive():
            return []
        kids = sorted(procstat.children_of({self.pid}))
        self.pids_seen.update(kids)
        return kids

    def stop(self, sig=signal.SIGTERM, timeout: float = None):
        """``sig``, then SIGKILL after ``timeout`` s (``stop_timeout``); children left
        behind are killed after 5 s more. The exit status (None when never started)."""
        if self.proc is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not wait_gone(kids, 5):
            for pid in kids:
                kill_pid(pid, signal.SIGKILL)
        return self.proc.returncode

    def kill(self) -> "list[int]":
        """SIGKILL the process, then its children (gathered first: a dead master cannot
        start another worker). The pids killed."""
        if self.proc is None:
            return []
        kids = self.children()
        if self.proc.poll() is None:
            kill_pid(self.pid, signal.SIGKILL)
        for pid in kids:
            kill_pid(pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        wait_gone(kids, 10)
        return [self.pid] + kids

    def sweep(self) -> "list[int]":
        """Kill what is left of every pid this process ever had, if it still runs one of
        our programs (a pid may have been reused by another)."""
        killed = []
        for pid in sorted(self.pids_seen):
            name = procstat.proc_name(pid)
            if alive(pid) and name and any(x in name for x in ("imserver", "gunicorn", "redis")):
                kill_pid(pid, signal.SIGKILL)
                killed.append(pid)
        return killed

    def rss_kb(self):
        return procstat.rss_kb(self.pid) if self.alive() else None


# -- redis-server ----------------------------------------------------------------------------

def redis_server_path() -> "str | None":
    """redis-server from PATH, else Debian's /usr/bin/redis-server; None when missing."""
    path = shutil.which("redis-server")
    if path is None and os.access("/usr/bin/redis-server", os.X_OK):
        path = "/usr/bin/redis-server"
    return path


class RedisServer(Process):
    """redis-server on loopback without persistence; it may be stopped and started again
    on the same port (empty)."""

    what = "redis-server"
    start_timeout = 15.0
    stop_timeout = 10.0

    def __init__(self, binary: str, port: int, workdir: str, log_path: str, **kw):
        self.port = port
        super().__init__("redis", [binary, "--port", str(port), "--bind", LOOPBACK,
                                   "--save", "", "--appendonly", "no", "--dir", workdir],
                         log_path, **kw)

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        """It answers PING."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# -- nodes -----------------------------------------------------------------------------------

def node_config(http_port: int, ws_port: int, rpc_port: int, *overrides) -> dict:
    """A node's configuration on loopback with these ports; each override
    ``{section: {key: value}}`` is laid over it, key by key."""
    config = {"app": {"host": LOOPBACK, "rpcHost": LOOPBACK, "httpPort": http_port,
                      "webSocketPort": ws_port, "rpcPort": rpc_port}}
    for override in overrides:
        for section, values in (override or {}).items():
            config.setdefault(section, {}).update(values)
    return config


def clean_env(extra=None) -> dict:
    """This process's environment without IMSERVER_* (they would override the config
    file), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    env.update(extra or {})
    return env


class NodeServer(Process):
    """A node started the way the README starts one, ``python -m imserver --config FILE``,
    from a configuration written to ``config_path``; ready when ``/system/state``
    answers."""

    what = "node"
    ready_interval = 0.1

    def __init__(self, name: str, config: dict, config_path: str, log_path: str, env=None,
                 **kw):
        self.config = config
        self.config_path = config_path
        app = config["app"]
        self.http_port, self.ws_port, self.rpc_port = (
            app["httpPort"], app["webSocketPort"], app["rpcPort"])
        super().__init__(name, [sys.executable, "-m", "imserver", "--config", config_path],
                         log_path, env=clean_env(env), **kw)
        self.what = f"node {name}"
        self.http_url = f"http://{LOOPBACK}:{self.http_port}"
        self.ws_url = f"ws://{LOOPBACK}:{self.ws_port}/acc"

    @property
    def addr(self) -> str:
        """Its gRPC address, as the cluster's registry names it."""
        return f"{LOOPBACK}:{self.rpc_port}"

    def spawn(self) -> None:
        import yaml
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(self.config, fh)
        super().spawn()

    def ready(self) -> bool:
        """``/system/state`` answers (JSON, whatever the status)."""
        try:
            status, _, body = self.request("GET", "/system/state", timeout=1)
            json.loads(body)
            return True
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def request(self, method, path, params=None, body=None, headers=None, timeout=10):
        """(status, headers, body bytes) of one HTTP request; never raises for 4xx/5xx."""
        url = self.http_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    def worker_pids(self) -> "list[int]":
        """The gunicorn workers: the master's children."""
        return self.children()


# -- comparison peers ------------------------------------------------------------------------

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
PEER_CONFS = {"naive": "naive_gunicorn.conf.py", "socketio": "socketio_gunicorn.conf.py"}


class PeerServer(Process):
    """A comparison server of peers/ under gunicorn on a loopback port; ready when
    ``/system/state`` answers."""

    start_timeout = 15.0
    stop_timeout = 10.0  # gunicorn's graceful timeout in the peers' settings is 5 s

    def __init__(self, kind: str, port: int, log_path: str, env=None, **kw):
        self.kind = kind
        self.port = port
        self.what = f"peer {kind}"
        env = dict(os.environ, PEER_PORT=str(port), **(env or {}))
        super().__init__(kind, [sys.executable, "-m", "gunicorn", "-c",
                                os.path.join(PEERS, PEER_CONFS[kind])], log_path, env=env, **kw)

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def get(self, path: str, timeout: float = 5):
        with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
            return json.loads(resp.read())

    def ready(self) -> bool:
        try:
            self.get("/system/state", timeout=1)
            return True
        except OSError:
            return False

    def worker_pid(self) -> int:
        """The one gunicorn worker."""
        kids = self.children()
        if len(kids) != 1:
            raise RuntimeError(f"expected one worker, found {kids}")
        return kids[0]
