"""``python -m imserver.bench soak``: a long run with churn and faults, orchestrated.

Unlike the other scenarios, which load addresses they are given, the soak controls its
processes, so it starts them itself, on loopback, and stops them by pid at the end:

- its own ``redis-server`` (``--save "" --appendonly no``) and two cluster nodes A and B
  (``python -m imserver --config <run folder>/node-a.yaml``), on free ports below the
  kernel's ephemeral range (a restarted process gets its port back);
- ``--steady`` users logged in on node A for the whole run, with heartbeats;
- churners: ``--churn-rate`` connect/login/hold/leave cycles a second, alternating A and
  B, each holding a random ``--churn-hold-min``..``--churn-hold-max`` seconds, drawn from
  ``--churners`` user IDs (a user comes back under the same ID; at most that many at once);
- traffic: ``/user/sendMessage`` to random steady users at ``--rate``/s with unique
  msgIDs, the HTTP entry alternating A and B (half of them cross nodes), and a room
  broadcast ``/user/sendMessageAll`` every ``--broadcast-interval`` s, also alternating;
- events: at 1/3 of ``--duration`` Redis is stopped (SIGTERM) for ``--redis-down`` s and
  started again, empty, on its port; the nodes must register again and rewrite their
  users (checked from node B: ``/user/list`` lists every steady user and ``/user/online``
  answers true). At 2/3 node B's master and worker are SIGKILLed and B restarted after
  ``--node-down`` s (checked the same way).

A send is ACCEPTED when it answers code 200 with ``sendResults`` true; anything else is
refused and counted by answer (``1004``, ``1100``, ``200 user is not online``, ``error
ConnectionRefusedError`` ...). A broadcast answered "delivered on this node only" (Redis
down) is accepted locally: it must reach the steady users only when it entered at A.

Measured: node A's worker RSS at the baseline (steady users logged in, a short warm-up,
before churn) and at the end (churn stopped, ``--settle`` s later), sampled every
``--sample-interval`` s; every accepted unicast must reach its user (matched by msgID),
every accepted broadcast every steady user; steady users dropped (must be 0); churn rate
and failures by reason and phase; the events' times and the recoveries.

Exit code 0 when every accepted message reached its steady user(s), no steady user was
dropped, both recoveries were seen, nothing was refused or failed outside the event
windows (a send or churn cycle overlapping a window, give or take 1 s, is put down to
it), and the end RSS of node A's worker is at most the baseline plus the larger of
``--rss-tolerance-pct`` (20 %) and ``--rss-tolerance-mb`` (10 MB); 1 otherwise (the
reasons on stderr and in results.json), 2 when the run could not be set up, 3 when
``--max-seconds`` stopped it, 130 when interrupted.

Output in ``--out``: results.json, results.md, rss.png (RSS over time with the events),
sends.jsonl (every send and its answer), and the nodes' and Redis's logs.
"""
import argparse
import ctypes
import ctypes.util
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import socket
import sys
import time
from collections import Counter, defaultdict

import gevent
from gevent import subprocess
from gevent.event import Event
from gevent.pool import Group, Pool

from . import procstat
from .coordinator import ROOT, HttpPool
from .drivers import PUSH_CMDS, AccDriver
from .stats import summary
from .wsclient import WSError

NAME = "soak"
HTTP_ERRORS = (OSError, ValueError, http.client.HTTPException)
HELP = "self-contained long run: Redis restart and a node kill under churn; memory, delivery"
BROADCAST_SENDER = "soak-ops"
CLEAN_CLOSE = ("closed 1000", "closed 1005")
EVENT_GRACE = 1.0  # seconds around an event window in which a failure is put down to it
EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_MAX_SECONDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


# -- command line ---------------------------------------------------------------------------

def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``soak`` on the CLI's subparsers (its options are its own: it targets no
    given address)."""
    p = sub.add_parser(NAME, help=HELP, description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--duration", type=float, default=1200.0,
                   help="seconds of churn and traffic. Default: %(default)s")
    g.add_argument("--steady", type=int, default=200,
                   help="users logged in on node A for the whole run. Default: %(default)s")
    g.add_argument("--churners", type=int, default=200,
                   help="churner user IDs (at most this many churners online at once). "
                        "Default: %(default)s")
    g.add_argument("--churn-rate", type=float, default=20.0,
                   help="churn cycles started per second, alternating A and B. "
                        "Default: %(default)s")
    g.add_argument("--churn-hold-min", type=float, default=0.5,
                   help="shortest stay of a churner, in seconds. Default: %(default)s")
    g.add_argument("--churn-hold-max", type=float, default=10.0,
                   help="longest stay of a churner, in seconds. Default: %(default)s")
    g.add_argument("--rate", type=float, default=20.0,
                   help="unicasts per second to random steady users. Default: %(default)s")
    g.add_argument("--broadcast-interval", type=float, default=5.0,
                   help="seconds between two room broadcasts. Default: %(default)s")
    g.add_argument("--redis-down", type=float, default=20.0,
                   help="seconds Redis stays stopped (at 1/3 of the run). Default: %(default)s")
    g.add_argument("--node-down", type=float, default=20.0,
                   help="seconds node B stays killed (at 2/3 of the run). Default: %(default)s")
    g.add_argument("--heartbeat-interval", type=float, default=30.0,
                   help="seconds between two heartbeats of a steady user. Default: %(default)s")
    g.add_argument("--warmup", type=int, default=20,
                   help="unicasts (and two broadcasts) sent before the baseline, so that "
                        "first-use allocations are not counted as growth. Default: %(default)s")
    g.add_argument("--baseline-settle", type=float, default=10.0,
                   help="seconds between the warm-up and the baseline RSS. Default: %(default)s")
    g.add_argument("--settle", type=float, default=30.0,
                   help="seconds between the end of the deliveries and the end RSS. "
                        "Default: %(default)s")
    g.add_argument("--wait", type=float, default=30.0,
                   help="seconds to wait for the last deliveries. Default: %(default)s")
    g.add_argument("--recovery-timeout", type=float, default=60.0,
                   help="seconds a recovery (after Redis, after node B) may take. "
                        "Default: %(default)s")
    g.add_argument("--sample-interval", type=float, default=10.0,
                   help="seconds between two RSS samples. Default: %(default)s")
    g.add_argument("--progress-interval", type=float, default=10.0,
                   help="seconds between two progress lines on stderr. Default: %(default)s")
    g.add_argument("--rss-tolerance-pct", type=float, default=20.0,
                   help="end RSS may exceed the baseline by the larger of this percentage...")
    g.add_argument("--rss-tolerance-mb", type=float, default=10.0,
                   help="...and this many MB. Defaults: 20 %% and 10 MB")
    g.add_argument("--seed", type=int, default=None, help="random seed")

    s = p.add_argument_group("processes")
    s.add_argument("--redis-server", default="",
                   help="redis-server binary. Default: from PATH, else /usr/bin/redis-server")
    s.add_argument("--report-interval", type=float, default=2.0,
                   help="the nodes' app.reportInterval. Default: %(default)s")
    s.add_argument("--node-log-level", default="info", help="the nodes' app.logLevel")
    s.add_argument("--access-log", action="store_true", help="the nodes write access-log lines")
    s.add_argument("--app-id", type=int, default=101, help="appID (the room). Default: %(default)s")

    o = p.add_argument_group("output and limits")
    o.add_argument("--out", default="",
                   help="results folder. Default: bench-results/soak-<timestamp>/")
    o.add_argument("--no-plots", action="store_true", help="skip rss.png")
    o.add_argument("--quiet", action="store_true", help="no progress on stderr")
    o.add_argument("--max-seconds", type=float, default=None,
                   help="stop everything after this many seconds (exit 3). Default: --duration "
                        "plus every wait and settle plus 300")
    o.add_argument("--http-timeout", type=float, default=10.0,
                   help="seconds for one HTTP call. Default: %(default)s")
    o.add_argument("--http-concurrency", type=int, default=50,
                   help="HTTP sends in flight at most. Default: %(default)s")
    o.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds for one connect + handshake + login. Default: %(default)s")
    return p


def check_args(args) -> "list[str]":
    errors = []
    third = args.duration / 3
    if args.duration <= 0:
        errors.append("--duration must be > 0")
    if args.steady < 1:
        errors.append("--steady must be at least 1")
    if args.churners < 0 or args.churn_rate < 0 or args.rate <= 0:
        errors.append("--churners and --churn-rate must be >= 0, --rate > 0")
    if not 0 <= args.churn_hold_min <= args.churn_hold_max:
        errors.append("need 0 <= --churn-hold-min <= --churn-hold-max")
    if not 0 < args.redis_down < third:
        errors.append(f"--redis-down must be > 0 and shorter than a third of --duration "
                      f"({third:g}s)")
    if not 0 < args.node_down < third:
        errors.append(f"--node-down must be > 0 and shorter than a third of --duration "
                      f"({third:g}s)")
    if args.broadcast_interval <= 0 or args.sample_interval <= 0 or args.progress_interval <= 0:
        errors.append("intervals must be > 0")
    return errors


def default_max_seconds(args) -> float:
    return (args.duration + args.baseline_settle + args.settle + args.wait
            + 2 * args.recovery_timeout + args.churn_hold_max + 300)


# -- processes --------------------------------------------------------------------------------

try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
except OSError:
    _LIBC = None
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: get SIGTERM if the soak process dies (even by SIGKILL),
    so that nothing it started outlives it."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(n: int, rng: random.Random) -> "list[int]":
    """``n`` distinct free ports below 32768 and below the ephemeral range: an outgoing
    connection cannot take one between a stop and a restart."""
    high = min(32768, ephemeral_low())
    low = 20000 if high - 20000 >= 1000 else 10000
    ports = []
    for _ in range(2000):
        port = rng.randrange(low, high)
        if port not in ports and _bindable(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free ports in {low}-{high}")


def find_redis_server(given: str = "") -> str:
    if given:
        if not os.access(given, os.X_OK):
            raise RuntimeError(f"--redis-server {given!r} is not an executable file")
        return given
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else "")
    if not path:
        raise RuntimeError("redis-server not found: install it (Debian: apt-get install "
                           "redis-server) or pass --redis-server PATH")
    return path


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
        return state != "Z"
    except OSError:
        return False


def _wait_gone(pids, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(0.05)
    return True


class Managed:
    """A process the soak started: its output goes to ``log_path``; it is stopped by pid."""

    def __init__(self, name: str, argv, log_path: str, env=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.pids_seen = set()  # every pid of it and its children, for the final sweep
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self):
        with open(self.log_path, "ab") as log:
            log.write(f"\n---- soak: starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=ROOT,
                                         preexec_fn=_die_with_parent, start_new_session=True)
        self.starts += 1
        self.pids_seen.add(self.proc.pid)

    def children(self) -> "list[int]":
        if not self.alive():
            return []
        kids = sorted(procstat.children_of({self.pid}))
        self.pids_seen.update(kids)
        return kids

    def terminate(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s (its children too)."""
        if self.proc is None:
            return
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if not _wait_gone(kids, 5):
            for pid in kids:
                _kill(pid, signal.SIGKILL)

    def kill(self) -> "list[int]":
        """SIGKILL the process, then its children (gathered first: the master is dead
        before it could start another worker)."""
        if self.proc is None:
            return []
        kids = self.children()
        pids = [self.pid] + kids
        if self.proc.poll() is None:
            _kill(self.pid, signal.SIGKILL)
        for pid in kids:
            _kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        _wait_gone(kids, 10)
        return pids

    def sweep(self) -> "list[int]":
        """Kill what is left of every pid this process ever had (still ours: same command)."""
        killed = []
        for pid in sorted(self.pids_seen):
            name = procstat.proc_name(pid)
            if _alive(pid) and name and ("imserver" in name or "gunicorn" in name
                                         or "redis" in name):
                _kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class RedisServer(Managed):
    def __init__(self, binary: str, port: int, out_dir: str):
        self.port = port
        super().__init__("redis", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", out_dir],
                         os.path.join(out_dir, "redis.log"))

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 15.0) -> None:
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port} "
                                   f"(see {self.log_path})")
            gevent.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self.terminate(timeout)

    def rss_kb(self):
        return procstat.rss_kb(self.pid) if self.alive() else None


class NodeServer(Managed):
    """One imserver node (gunicorn master + one worker) of the soak's cluster."""

    def __init__(self, name: str, ports, redis_addr: str, out_dir: str, args):
        self.label = name
        self.http_port, self.ws_port, self.rpc_port = ports
        self.config = {
            "app": {"host": "127.0.0.1", "httpPort": self.http_port,
                    "webSocketPort": self.ws_port, "rpcPort": self.rpc_port,
                    "rpcHost": "127.0.0.1", "advertiseAddr": "127.0.0.1",
                    "reportInterval": args.report_interval, "drainWindow": 1, "workers": 1,
                    "logFile": "",  # the node's stderr is its log file
                    "logLevel": args.node_log_level, "accessLog": bool(args.access_log),
                    "appIDs": sorted({101, 102, 103, 104, args.app_id})},
            "redis": {"addr": redis_addr},
        }
        self.config_path = os.path.join(out_dir, f"node-{name.lower()}.yaml")
        metrics_dir = os.path.join(out_dir, f"node-{name.lower()}-metrics")
        os.makedirs(metrics_dir, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
        # Its own Prometheus folder: a SIGKILLed master leaves no temporary folder behind.
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        env["PYTHONUNBUFFERED"] = "1"
        super().__init__(f"node {name}", [sys.executable, "-m", "imserver", "--config",
                                          self.config_path],
                         os.path.join(out_dir, f"node-{name.lower()}.log"), env=env)
        self.http = HttpPool(self.http_url, size=64, timeout=args.http_timeout)
        self.probe = HttpPool(self.http_url, size=4, timeout=3.0)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/acc"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    def start(self, timeout: float = 30.0) -> None:
        import yaml
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(self.config, fh)
        self.spawn()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.label} exited with {self.proc.returncode} "
                                   f"(see {self.log_path})")
            if self.state() is not None:
                self.children()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.label} did not answer within {timeout:.0f}s "
                                   f"(see {self.log_path})")
            gevent.sleep(0.1)

    def state(self):
        try:
            status, body = self.probe.get("/system/state")
        except HTTP_ERRORS:
            return None
        if status != 200 or body.get("code") != 200:
            return None
        return body.get("data")

    def worker_rss_kb(self):
        """(RSS KB, CPU seconds, pids) of the node's workers (one here)."""
        kids = self.children()
        snap = procstat.snapshot(kids)
        if not snap:
            return None, None, kids
        return (procstat.total(snap, "rss_kb"), round(procstat.total(snap, "cpu_s"), 2),
                sorted(snap))

    def drop_keepalives(self) -> None:
        """Close our idle kept-alive HTTP connections: gunicorn's gevent worker waits for
        every open HTTP connection, idle or not, up to its graceful timeout at a stop."""
        for pool in (self.http, self.probe):
            while True:
                try:
                    conn = pool._idle.get_nowait()
                except Exception:
                    break
                conn.close()

    def stop(self) -> None:
        # drainWindow 1: gunicorn's graceful timeout is 11 s.
        self.drop_keepalives()
        self.terminate(15.0)


# -- the steady users' client ------------------------------------------------------------------

class SteadyDriver(AccDriver):
    """The acc driver, telling ``sink(user, cmd, msg_id, t)`` which user got each push."""

    def __init__(self, ws_url, sink, **kw):
        super().__init__(ws_url, on_push=lambda cmd, msg_id, t: None, **kw)
        self.sink = sink

    def on_message(self, conn, opcode, payload, now):
        try:
            frame = json.loads(payload)
            cmd = frame["cmd"]
        except (ValueError, KeyError, TypeError):
            self.replies["bad frame"] += 1
            return
        if cmd in PUSH_CMDS:
            self.sink(conn.user, cmd, frame.get("seq", ""), now)
        else:
            try:
                code = frame["response"]["code"]
            except (KeyError, TypeError):
                code = "?"
            self.replies[f"{cmd} {code}"] += 1


# -- answers ------------------------------------------------------------------------------------

def classify_answer(status, body, exc=None) -> "tuple[bool, str, bool]":
    """(accepted, refusal key or "", delivered-on-this-node-only) of one send's answer.
    Accepted: HTTP 200, code 200, sendResults true. The key names a refusal by its code
    ("1004", "1100", "200 user is not online", "200 duplicate", "http 503",
    "error ConnectionRefusedError")."""
    if exc is not None:
        return False, f"error {type(exc).__name__}", False
    body = body if isinstance(body, dict) else {}
    code = body.get("code")
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    if status == 200 and code == 200 and data.get("sendResults") is True:
        local_only = "this node only" in str(data.get("sendResultsErr") or "")
        return True, "", local_only
    if status != 200 and code is None:
        return False, f"http {status}", False
    if code == 200:
        if data.get("duplicate"):
            return False, "200 duplicate", False
        return False, f"200 {data.get('sendResultsErr') or 'sendResults false'}", False
    return False, str(code), False


def rss_limit_kb(baseline_kb: float, pct: float, mb: float) -> float:
    """The end RSS allowed: baseline plus the larger of ``pct`` % and ``mb`` MB."""
    return baseline_kb + max(baseline_kb * pct / 100.0, mb * 1024.0)


# -- the run ------------------------------------------------------------------------------------

class Interrupted(BaseException):
    """SIGTERM (or SIGINT) to the soak: stop and clean up."""


class Soak:
    def __init__(self, args, out_dir: str, meta: dict):
        self.a = args
        self.out = out_dir
        self.rng = random.Random(args.seed)
        self.run_id = "soak%04x" % random.getrandbits(16)
        self.quiet = args.quiet
        self.results = {"meta": meta}
        self.errors = []
        self.t0 = None  # wall time at which churn and traffic start
        self._setup_t = time.time()
        self.t_end = None
        self.redis = self.node_a = self.node_b = None
        self.windows = []  # [name, start, end or None], relative seconds
        self.events = []
        self.recovery = {}
        self.samples = []
        self.baseline = None
        self.end_sample = None
        self.a_worker_pids = None
        self.a_worker_changes = []
        self.stopping = Event()
        self.stage = "setup"
        self.background = Group()
        # steady users
        self.steady_users = [f"{self.run_id}-s{i}" for i in range(args.steady)]
        self.steady_set = frozenset(self.steady_users)
        self.steady_conns = {}
        self.steady_dropped = []
        self.steady_driver = None
        self.received = defaultdict(list)  # msgID -> [(user, time)]
        self.pushes = Counter()  # cmd -> pushes to steady users
        # sends
        self.unicasts = []
        self.broadcasts = []
        self.warmup = []
        # churn
        self.churn = Counter()
        self.churn_fail = Counter()  # "phase: reason" -> n
        self.churn_drop = Counter()
        self.churn_by_node = Counter()
        self.churn_logins_t = []
        self.churn_free = list(range(args.churners))
        self.churn_group = Group()

    # -- plumbing --------------------------------------------------------------------------

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"soak: {text}", file=sys.stderr, flush=True)

    def rel(self, t=None) -> float:
        t = time.time() if t is None else t
        return round(t - self.t0, 3) if self.t0 is not None else round(t - self._setup_t, 3)

    def event(self, name: str, **info) -> None:
        now = time.time()
        entry = {"event": name, "t": self.rel(now),
                 "at": time.strftime("%H:%M:%S", time.localtime(now)), **info}
        self.events.append(entry)
        self.log(f"event {name} at t={entry['t']:.1f}s " + " ".join(
            f"{k}={v}" for k, v in info.items()))

    def open_window(self, name: str) -> None:
        self.windows.append([name, self.rel(), None])

    def close_window(self, name: str) -> None:
        for w in self.windows:
            if w[0] == name and w[2] is None:
                w[2] = self.rel()

    def phase(self, rel_t: float, rel_end: float = None) -> str:
        """The event window at ``rel_t``; else one that the span ``rel_t``..``rel_end``
        overlaps, give or take EVENT_GRACE s (a send under way when Redis stopped);
        else "normal": no fault was injected then."""
        for name, start, end in reversed(self.windows):
            if start <= rel_t and (end is None or rel_t < end):
                return name
        if rel_end is not None:
            for name, start, end in reversed(self.windows):
                if start - EVENT_GRACE <= rel_end and (end is None or rel_t <= end + EVENT_GRACE):
                    return name
        return "normal"

    def guarded(self, fn, *args):
        """Run a background loop; an unexpected error is recorded, not lost."""
        try:
            fn(*args)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            self.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
            print(f"soak: error in {fn.__name__}: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)

    def spawn(self, fn, *args):
        g = gevent.spawn(self.guarded, fn, *args)
        self.background.add(g)
        return g

    def sleep_until(self, rel_t: float) -> bool:
        """Sleep until ``rel_t`` seconds after t0; False when the run is stopping."""
        delay = self.t0 + rel_t - time.time()
        if delay > 0:
            return not self.stopping.wait(delay)
        return not self.stopping.is_set()

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        a = self.a
        self._setup_t = time.time()
        binary = find_redis_server(a.redis_server)
        ports = pick_ports(7, self.rng)
        self.results["meta"]["ports"] = {
            "redis": ports[0], "a": {"http": ports[1], "ws": ports[2], "rpc": ports[3]},
            "b": {"http": ports[4], "ws": ports[5], "rpc": ports[6]}}
        self.results["meta"]["redis_server"] = binary
        self.redis = RedisServer(binary, ports[0], self.out)
        self.node_a = NodeServer("A", ports[1:4], self.redis.addr, self.out, a)
        self.node_b = NodeServer("B", ports[4:7], self.redis.addr, self.out, a)
        self.log(f"starting redis-server on :{ports[0]}, node A (http :{ports[1]}, ws "
                 f":{ports[2]}, rpc :{ports[3]}), node B (http :{ports[4]}, ws :{ports[5]}, "
                 f"rpc :{ports[6]}); logs in {self.out}")
        self.redis.start()
        jobs = [gevent.spawn(n.start) for n in (self.node_a, self.node_b)]
        gevent.joinall(jobs, raise_error=True)
        self.wait_cluster(30)
        self.results["meta"]["pids"] = {
            "redis": self.redis.pid, "a": [self.node_a.pid] + self.node_a.children(),
            "b": [self.node_b.pid] + self.node_b.children()}
        self.connect_steady()
        self.spawn(self.heartbeat_loop)
        self.spawn(self.sample_loop)
        self.warm_up()
        self.log(f"baseline: waiting {a.baseline_settle:g}s")
        gevent.sleep(a.baseline_settle)
        self.baseline = self.sample("baseline")
        self.a_worker_pids = self.baseline["a_worker_pids"]
        self.log(f"baseline: node A worker RSS {self.baseline['a_worker_rss_kb'] / 1024:.1f} MB "
                 f"with {len(self.steady_conns)} steady users")

    def wait_cluster(self, timeout: float) -> None:
        """Until each node's liveNodes has both nodes."""
        want = {self.node_a.addr, self.node_b.addr}
        deadline = time.monotonic() + timeout
        while True:
            states = [n.state() for n in (self.node_a, self.node_b)]
            if all(s and set(s.get("liveNodes") or ()) >= want for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the nodes do not see each other within {timeout:.0f}s: "
                                   f"{[s and s.get('liveNodes') for s in states]}")
            gevent.sleep(0.2)

    def on_steady_push(self, user, cmd, msg_id, t):
        self.pushes[cmd] += 1
        if cmd == "msg":
            self.received[msg_id].append((user, t))

    def connect_steady(self) -> None:
        a = self.a
        self.steady_driver = SteadyDriver(self.node_a.ws_url, self.on_steady_push,
                                          app_id=a.app_id, timeout=a.connect_timeout)
        failures = Counter()
        pool = Pool(50)

        def one(user):
            for attempt in range(3):
                try:
                    conn = self.steady_driver.connect(user)
                except WSError as exc:
                    failures[exc.reason] += 1
                    gevent.sleep(0.2 * (attempt + 1))
                    continue
                self.steady_conns[user] = conn
                self.spawn(self.steady_serve, user, conn)
                return

        t = time.time()
        for user in self.steady_users:
            pool.spawn(one, user)
        pool.join(timeout=max(60.0, a.connect_timeout * 4))
        pool.kill()
        missing = len(self.steady_users) - len(self.steady_conns)
        self.results["steady_connect"] = {"seconds": round(time.time() - t, 3),
                                          "connected": len(self.steady_conns),
                                          "failed_attempts": dict(failures)}
        if missing:
            raise RuntimeError(f"{missing} of {len(self.steady_users)} steady users could not "
                               f"log in on node A: {dict(failures)}")
        self.log(f"{len(self.steady_conns)} steady users logged in on node A in "
                 f"{time.time() - t:.1f}s")

    def steady_serve(self, user, conn) -> None:
        reason = self.steady_driver.serve(conn)
        self.steady_conns.pop(user, None)
        if conn.initiated:  # our close at the end
            return
        t = self.rel()
        self.steady_dropped.append({"user": user, "t": t, "reason": reason,
                                    "phase": self.phase(t, t)})
        print(f"soak: steady user {user} DROPPED at t={t:.1f}s: {reason}", file=sys.stderr,
              flush=True)

    def heartbeat_loop(self) -> None:
        interval = self.a.heartbeat_interval
        if interval <= 0:
            return
        while not self.stopping.is_set():
            conns = list(self.steady_conns.values())
            pause = interval / max(1, len(conns))
            for conn in conns:
                if not conn.closing and not conn.closed:
                    self.steady_driver.heartbeat(conn)
                if self.stopping.wait(pause):
                    return
            if not conns and self.stopping.wait(1.0):
                return

    def warm_up(self) -> None:
        """A few sends through both entries before the baseline, so that the baseline
        includes what their first use allocates (gRPC channels and call paths)."""
        n = self.a.warmup
        if n <= 0:
            return
        for k in range(n):
            entry = "A" if k % 2 == 0 else "B"
            rec = self.send("unicast", f"{self.run_id}-w{k}", entry,
                            self.rng.choice(self.steady_users))
            self.warmup.append(rec)
        for k, entry in enumerate("AB"):
            self.warmup.append(self.send("broadcast", f"{self.run_id}-wb{k}", entry, None))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.missing_of(self.warmup)[0]:
            gevent.sleep(0.1)
        ok = sum(1 for r in self.warmup if r["accepted"])
        self.log(f"warm-up: {ok}/{len(self.warmup)} sends accepted")

    # -- sends ------------------------------------------------------------------------------

    def send(self, kind: str, msg_id: str, entry: str, user) -> dict:
        node = self.node_a if entry == "A" else self.node_b
        t = time.time()
        rec = {"kind": kind, "msg_id": msg_id, "entry": entry, "user": user,
               "t": self.rel(t) if self.t0 is not None else None}
        status, body, exc = None, None, None
        try:
            if kind == "unicast":
                status, body = node.http.post("/user/sendMessage", appID=self.a.app_id,
                                              userID=user, msgID=msg_id, message=f"soak {msg_id}",
                                              **{"from": BROADCAST_SENDER})
            else:
                status, body = node.http.post("/user/sendMessageAll", appID=self.a.app_id,
                                              userID=BROADCAST_SENDER, msgID=msg_id,
                                              message=f"soak {msg_id}")
        except HTTP_ERRORS as exc_:
            exc = exc_
        accepted, key, local_only = classify_answer(status, body, exc)
        rec.update({"t_wall": t, "ms": round((time.time() - t) * 1000, 2), "accepted": accepted,
                    "refused": key, "local_only": local_only,
                    "code": (body or {}).get("code") if isinstance(body, dict) else None,
                    "err": ((body or {}).get("data") or {}).get("sendResultsErr")
                    if isinstance(body, dict) and isinstance(body.get("data"), dict) else None})
        if rec["t"] is not None:
            rec["t_end"] = round(rec["t"] + rec["ms"] / 1000, 3)
            rec["phase"] = self.phase(rec["t"], rec["t_end"])
        return rec

    def must_reach(self, rec) -> bool:
        """Must this send reach its steady user(s)? Accepted, and for a broadcast that
        was delivered on its entry node only, only when that node is A."""
        if not rec["accepted"]:
            return False
        return not (rec["kind"] == "broadcast" and rec["local_only"] and rec["entry"] != "A")

    def missing_of(self, recs) -> "tuple[int, int]":
        """(sends that must reach someone but have not yet, such sends)."""
        missing = expected = 0
        for rec in recs:
            if not self.must_reach(rec):
                continue
            expected += 1
            got = {u for u, _ in self.received.get(rec["msg_id"], ())}
            if rec["kind"] == "unicast":
                if rec["user"] not in got:
                    missing += 1
            elif not self.steady_set <= got:
                missing += 1
        return missing, expected

    def unicast_loop(self) -> None:
        a = self.a
        pool = Pool(a.http_concurrency)
        k = 0
        while True:
            if not self.sleep_until(k / a.rate) or time.time() >= self.t_end:
                break
            entry = "A" if k % 2 == 0 else "B"
            user = self.rng.choice(self.steady_users)
            msg_id = f"{self.run_id}-u{k}"
            pool.wait_available()
            pool.spawn(lambda *x: self.unicasts.append(self.send(*x)),
                       "unicast", msg_id, entry, user)
            k += 1
        pool.join(timeout=a.http_timeout * 2 + 5)

    def broadcast_loop(self) -> None:
        a = self.a
        k = 0
        group = Group()
        while True:
            if not self.sleep_until(1.0 + k * a.broadcast_interval) or time.time() >= self.t_end:
                break
            entry = "A" if k % 2 == 0 else "B"
            group.spawn(lambda *x: self.broadcasts.append(self.send(*x)),
                        "broadcast", f"{self.run_id}-b{k}", entry, None)
            k += 1
        group.join(timeout=a.http_timeout * 2 + 5)

    # -- churn ------------------------------------------------------------------------------

    def churn_loop(self) -> None:
        a = self.a
        if a.churn_rate <= 0 or a.churners <= 0:
            return
        drivers = {"A": AccDriver(self.node_a.ws_url, app_id=a.app_id, timeout=a.connect_timeout,
                                  on_push=self._churn_push),
                   "B": AccDriver(self.node_b.ws_url, app_id=a.app_id, timeout=a.connect_timeout,
                                  on_push=self._churn_push)}
        self.churn_drivers = drivers
        k = 0
        while True:
            if not self.sleep_until(k / a.churn_rate) or time.time() >= self.t_end:
                break
            entry = "A" if k % 2 == 0 else "B"
            k += 1
            if not self.churn_free:
                self.churn["skipped (every churner ID online)"] += 1
                continue
            cid = self.churn_free.pop(self.rng.randrange(len(self.churn_free)))
            hold = self.rng.uniform(a.churn_hold_min, a.churn_hold_max)
            self.churn_group.spawn(self.churn_cycle, cid, entry, drivers[entry], hold)

    def _churn_push(self, cmd, msg_id, t):
        self.churn[f"pushes {cmd}"] += 1

    def churn_cycle(self, cid: int, entry: str, drv, hold: float) -> None:
        user = f"{self.run_id}-c{cid}"
        t = self.rel()
        self.churn["attempted"] += 1
        try:
            try:
                conn = drv.connect(user)
            except WSError as exc:
                self.churn_fail[(self.phase(t, self.rel()), entry, exc.reason)] += 1
                return
            except Exception as exc:  # an OS limit, a bug: counted all the same
                self.churn_fail[(self.phase(t, self.rel()), entry,
                                 f"error {type(exc).__name__}")] += 1
                return
            self.churn["logged_in"] += 1
            self.churn_by_node[entry] += 1
            self.churn_logins_t.append(self.rel())
            reader = gevent.spawn(drv.serve, conn)
            try:
                reader.join(hold)
                if reader.dead:  # the server ended it during the hold
                    self.churn_drop[(self.phase(t, self.rel()), entry,
                                     _reason(reader, "dropped"))] += 1
                    return
                drv.close(conn)
                reader.join(5.0)
                if not reader.dead:
                    self.churn_drop[(self.phase(t, self.rel()), entry, "close timeout")] += 1
                    return
                reason = _reason(reader, "")
                if reason in CLEAN_CLOSE:
                    self.churn["left"] += 1
                else:
                    self.churn_drop[(self.phase(t, self.rel()), entry, "close " + reason)] += 1
            finally:
                conn.abort()
                reader.kill(block=False)
        finally:
            self.churn_free.append(cid)

    # -- events -----------------------------------------------------------------------------

    def director(self) -> None:
        a = self.a
        third = a.duration / 3
        if not self.sleep_until(third):
            return
        self.event("redis_stop", pid=self.redis.pid)
        self.open_window("redis_down")
        self.redis.stop()
        if self.stopping.wait(a.redis_down):
            return
        self.redis.start()
        self.close_window("redis_down")
        self.event("redis_start", pid=self.redis.pid)
        self.open_window("redis_recovery")
        self.recovery["redis"] = self.check_recovery(
            "redis", min(a.recovery_timeout, max(1.0, 2 * third - self.rel() - 0.5)))
        self.close_window("redis_recovery")

        if not self.sleep_until(2 * third):
            return
        self.event("node_b_kill", pids=self.node_b.kill())
        self.open_window("node_b_down")
        if self.stopping.wait(a.node_down):
            return
        self.node_b.start()
        self.close_window("node_b_down")
        self.event("node_b_start", pids=[self.node_b.pid] + self.node_b.children())
        self.open_window("node_b_recovery")
        self.recovery["node_b"] = self.check_recovery("node_b", a.recovery_timeout)
        self.close_window("node_b_recovery")

    def check_recovery(self, what: str, timeout: float) -> dict:
        """From node B: /user/list lists every steady user, and /user/online answers true
        for a sample of them; both nodes see each other and the store as healthy."""
        t0 = time.time()
        deadline = t0 + timeout
        sample = self.rng.sample(self.steady_users, min(20, len(self.steady_users)))
        want_nodes = {self.node_a.addr, self.node_b.addr}
        marks = {}
        last = {}
        while True:
            now = time.time()
            if "list" not in marks:
                try:
                    status, body = self.node_b.probe.get("/user/list", appID=self.a.app_id)
                    users = set((body.get("data") or {}).get("userList") or ())
                    last["list"] = (body.get("code"), len(self.steady_set & users))
                    if body.get("code") == 200 and self.steady_set <= users:
                        marks["list"] = now
                except HTTP_ERRORS as exc:
                    last["list"] = f"{type(exc).__name__}"
            if "online" not in marks:
                ok = 0
                for user in sample:
                    try:
                        _, body = self.node_b.probe.get("/user/online", appID=self.a.app_id,
                                                        userID=user)
                    except HTTP_ERRORS:
                        break
                    if body.get("code") == 200 and (body.get("data") or {}).get("online"):
                        ok += 1
                    else:
                        break
                last["online"] = f"{ok}/{len(sample)}"
                if ok == len(sample):
                    marks["online"] = now
            if "cluster" not in marks:
                states = [n.state() for n in (self.node_a, self.node_b)]
                last["cluster"] = [s and (s.get("storeHealthy"), s.get("liveNodes"))
                                   for s in states]
                if all(s and s.get("storeHealthy") and set(s.get("liveNodes") or ()) >= want_nodes
                       for s in states):
                    marks["cluster"] = now
            if len(marks) == 3 or now >= deadline or self.stopping.is_set():
                break
            gevent.sleep(0.25)
        result = {"recovered": len(marks) == 3, "checked_users_online": len(sample),
                  "seconds": {k: round(v - t0, 2) for k, v in marks.items()}}
        if len(marks) < 3:
            result["last_seen"] = last
        self.event(f"{what}_recovered" if result["recovered"] else f"{what}_recovery_failed",
                   seconds=result["seconds"].get("list") if result["recovered"] else last)
        return result

    # -- measurements ---------------------------------------------------------------------------

    def sample(self, label: str = "") -> dict:
        rss_a, cpu_a, pids_a = (self.node_a.worker_rss_kb() if self.node_a.alive()
                                else (None, None, []))
        rss_b, _, _ = self.node_b.worker_rss_kb() if self.node_b.alive() else (None, None, [])
        state = self.node_a.state() if self.node_a.alive() else None
        row = {"t": self.rel(), "label": label, "a_worker_rss_kb": rss_a, "a_worker_cpu_s": cpu_a,
               "a_worker_pids": pids_a,
               "a_master_rss_kb": procstat.rss_kb(self.node_a.pid) if self.node_a.alive() else None,
               "b_worker_rss_kb": rss_b, "redis_rss_kb": self.redis.rss_kb(),
               "a_connections": state.get("connections") if state else None,
               "a_users": state.get("users") if state else None}
        if self.a_worker_pids is not None and pids_a and pids_a != self.a_worker_pids:
            self.a_worker_changes.append({"t": row["t"], "from": self.a_worker_pids, "to": pids_a})
            self.log(f"node A's worker changed: {self.a_worker_pids} -> {pids_a}")
            self.a_worker_pids = pids_a
        self.samples.append(row)
        return row

    def sample_loop(self) -> None:
        while not self.stopping.wait(self.a.sample_interval):
            self.sample()

    def progress_loop(self) -> None:
        a = self.a
        while not self.stopping.wait(a.progress_interval):
            t = self.rel()
            acc = [r for r in self.unicasts if r["accepted"]]
            delivered = sum(1 for r in acc if any(
                u == r["user"] for u, _ in self.received.get(r["msg_id"], ())))
            refused = Counter(r["refused"] for r in self.unicasts if not r["accepted"])
            top = ", ".join(f"{k}: {v}" for k, v in refused.most_common(2))
            b_ok = sum(1 for r in self.broadcasts if r["accepted"])
            b_must = [r for r in self.broadcasts if self.must_reach(r)]
            b_missing = self.missing_of(b_must)[0]
            rss = self.samples[-1]["a_worker_rss_kb"] if self.samples else None
            fails = sum(self.churn_fail.values())
            stage = self.phase(t) if self.stage == "traffic" else self.stage
            self.log(f"t={t:6.0f}/{a.duration:g}s [{stage}] unicast {len(self.unicasts)} "
                     f"sent: {len(acc)} accepted, {delivered} delivered, "
                     f"{sum(refused.values())} refused{' (' + top + ')' if top else ''} | "
                     f"broadcast {b_ok}/{len(self.broadcasts)} accepted, "
                     f"{len(b_must) - b_missing}/{len(b_must)} reached all | churn "
                     f"{self.churn['logged_in']} logins, {fails} failed | steady "
                     f"{len(self.steady_conns)}/{len(self.steady_users)}, "
                     f"{len(self.steady_dropped)} dropped | A worker RSS "
                     f"{(rss or 0) / 1024:.1f} MB (baseline "
                     f"{self.baseline['a_worker_rss_kb'] / 1024:.1f})")

    # -- the whole run -----------------------------------------------------------------------

    def run(self) -> None:
        a = self.a
        self.setup()
        self.t0 = time.time()
        self.t_end = self.t0 + a.duration
        for s in self.samples:  # setup samples, relative to t0 from now on
            s["t"] = round(s["t"] - (self.t0 - self._setup_t), 3)
        self.event("start", duration=a.duration)
        self.stage = "traffic"
        loops = [gevent.spawn(self.guarded, fn) for fn in
                 (self.unicast_loop, self.broadcast_loop, self.churn_loop)]
        director = gevent.spawn(self.guarded, self.director)
        progress = self.spawn(self.progress_loop)
        gevent.sleep(max(0.0, self.t_end - time.time()))
        self.event("traffic_stop")
        self.stage = "last deliveries"
        gevent.joinall(loops, timeout=a.http_timeout * 2 + 10)
        self.churn_group.join(timeout=a.churn_hold_max + a.connect_timeout + 10)
        self.churn_group.kill(block=True, timeout=5)
        director.join(timeout=a.recovery_timeout + 30)
        if not director.dead:
            self.errors.append("the events were still running at the end")
            director.kill(block=True, timeout=5)
        deadline = time.monotonic() + a.wait
        while time.monotonic() < deadline and self.missing_of(self.unicasts + self.broadcasts)[0]:
            gevent.sleep(0.2)
        self.log(f"deliveries done; settling {a.settle:g}s before the end RSS")
        self.stage = "settle"
        gevent.sleep(a.settle)
        self.end_sample = self.sample("end")
        self.event("end", a_worker_rss_kb=self.end_sample["a_worker_rss_kb"])
        self.end_state = {"a": self.node_a.state(), "b": self.node_b.state()}
        self.steady_live_at_end = len(self.steady_conns)
        progress.kill(block=False)

    def close(self) -> None:
        """Stop everything this run started, by pid. Runs in ``finally``."""
        started = time.monotonic()
        self.stopping.set()
        self.churn_group.kill(block=True, timeout=5)
        conns = list(self.steady_conns.values())
        for conn in conns:  # the close handshake: their readers end as "ours", not drops
            try:
                self.steady_driver.close(conn)
            except Exception:
                pass
        deadline = time.monotonic() + 3
        while self.steady_conns and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for conn in conns:
            conn.abort()
        self.background.kill(block=True, timeout=5)
        stoppers = [gevent.spawn(p.stop) for p in (self.node_a, self.node_b) if p is not None]
        gevent.joinall(stoppers, timeout=25)
        if self.redis is not None:
            self.redis.stop()
        left = []
        for p in (self.node_a, self.node_b, self.redis):
            if p is not None:
                left += p.sweep()
        if left:
            self.errors.append(f"killed leftover processes {left}")
        self.log(f"stopped in {time.monotonic() - started:.1f}s")

    # -- results ----------------------------------------------------------------------------

    def summarize(self) -> dict:
        a = self.a
        r = self.results
        r["settings"] = {k: v for k, v in vars(a).items() if k not in ("func",)}
        r["run_id"] = self.run_id
        r["events"] = self.events
        r["windows"] = [{"phase": n, "start": s, "end": e} for n, s, e in self.windows]
        r["recovery"] = self.recovery

        # unicasts
        acc = [x for x in self.unicasts if x["accepted"]]
        missing, unexpected, dups, latencies = [], 0, 0, []
        refused, refused_by_phase, refused_delivered = Counter(), Counter(), Counter()
        by_entry = {e: Counter() for e in "AB"}
        for x in self.unicasts:
            got = self.received.get(x["msg_id"], ())
            mine = [t for u, t in got if u == x["user"]]
            unexpected += sum(1 for u, _ in got if u != x["user"])
            by_entry[x["entry"]]["accepted" if x["accepted"] else "refused"] += 1
            if x["accepted"]:
                if not mine:
                    missing.append(x["msg_id"])
                else:
                    latencies.append((min(mine) - x["t_wall"]) * 1000)
                    dups += len(mine) - 1
            else:
                refused[x["refused"]] += 1
                refused_by_phase[f"{x.get('phase')}: {x['refused']}"] += 1
                if mine:
                    refused_delivered[x["refused"]] += 1
        r["unicast"] = {
            "sent": len(self.unicasts), "target_rate_per_s": a.rate,
            "accepted": len(acc), "delivered": len(acc) - len(missing),
            "missing": len(missing), "missing_msg_ids": missing[:1000],
            "accepted_without_dedup": sum(1 for x in acc if x.get("err")),
            "refused": sum(refused.values()), "refused_by_answer": dict(refused.most_common()),
            "refused_outside_events": sum(n for k, n in refused_by_phase.items()
                                          if k.startswith("normal: ")),
            "refused_by_phase": dict(sorted(refused_by_phase.items())),
            "refused_but_delivered": dict(refused_delivered),
            "by_entry": {e: dict(c) for e, c in by_entry.items()},
            "duplicates": dups, "to_the_wrong_user": unexpected,
            "latency_ms": summary(latencies, digits=2),
            "http_ms": summary([x["ms"] for x in self.unicasts], digits=2)}

        # broadcasts
        rows, b_missing = [], []
        for x in self.broadcasts:
            got = {u for u, _ in self.received.get(x["msg_id"], ())}
            reached = len(got & self.steady_set)
            must = self.must_reach(x)
            row = {"msg_id": x["msg_id"], "t": x["t"], "entry": x["entry"],
                   "phase": x.get("phase"), "accepted": x["accepted"], "refused": x["refused"],
                   "local_only": x["local_only"], "must_reach_all": must,
                   "steady_reached": reached}
            rows.append(row)
            if must and reached < len(self.steady_set):
                b_missing.append({"msg_id": x["msg_id"], "t": x["t"], "entry": x["entry"],
                                  "phase": x.get("phase"),
                                  "steady_missing": len(self.steady_set) - reached})
        r["broadcast"] = {
            "sent": len(self.broadcasts), "interval_s": a.broadcast_interval,
            "accepted": sum(1 for x in self.broadcasts if x["accepted"]),
            "accepted_local_only": sum(1 for x in self.broadcasts if x["local_only"]),
            "must_reach_all": sum(1 for x in rows if x["must_reach_all"]),
            "reached_all": sum(1 for x in rows if x["must_reach_all"]
                               and x["steady_reached"] == len(self.steady_set)),
            "missing": b_missing,
            "refused_by_answer": dict(Counter(x["refused"] for x in self.broadcasts
                                              if not x["accepted"])),
            "refused_outside_events": sum(1 for x in self.broadcasts
                                          if not x["accepted"] and x.get("phase") == "normal"),
            "per_broadcast": rows}

        # steady users
        replies = self.steady_driver.replies if self.steady_driver else {}
        r["steady"] = {"users": len(self.steady_users), "node": "A",
                       "connected_at_end": getattr(self, "steady_live_at_end", None),
                       "dropped": len(self.steady_dropped), "dropped_list": self.steady_dropped,
                       "heartbeat_interval_s": a.heartbeat_interval,
                       "heartbeats_sent": self.steady_driver.heartbeats_sent
                       if self.steady_driver else 0,
                       "replies": dict(replies), "pushes": dict(self.pushes)}

        # churn
        dur = a.duration
        fails = Counter()
        for (phase, entry, reason), n in self.churn_fail.items():
            fails[f"{phase} {entry}: {reason}"] += n
        drops = Counter()
        for (phase, entry, reason), n in self.churn_drop.items():
            drops[f"{phase} {entry}: {reason}"] += n
        outside = sum(n for (phase, _, _), n in self.churn_fail.items() if phase == "normal")
        ended_outside = sum(n for (phase, _, _), n in self.churn_drop.items() if phase == "normal")
        r["churn"] = {
            "target_rate_per_s": a.churn_rate, "churner_ids": a.churners,
            "hold_s": [a.churn_hold_min, a.churn_hold_max],
            "attempted": self.churn["attempted"], "logged_in": self.churn["logged_in"],
            "left_cleanly": self.churn["left"],
            "achieved_rate_per_s": round(self.churn["logged_in"] / dur, 2),
            "attempted_rate_per_s": round(self.churn["attempted"] / dur, 2),
            "logins_by_node": dict(self.churn_by_node),
            "failed": sum(self.churn_fail.values()),
            "failed_outside_events": outside,
            "failures_by_phase_node_reason": dict(sorted(fails.items())),
            "failures_by_reason": dict(_sum_by(self.churn_fail, lambda k: k[2]).most_common()),
            "ended_otherwise": sum(self.churn_drop.values()),
            "ended_otherwise_outside_events": ended_outside,
            "ended_otherwise_by_phase_node_reason": dict(sorted(drops.items())),
            "skipped": self.churn["skipped (every churner ID online)"],
            "pushes_received": {k[7:]: v for k, v in self.churn.items() if k.startswith("pushes ")}}

        # memory
        base = self.baseline["a_worker_rss_kb"] if self.baseline else None
        end = self.end_sample["a_worker_rss_kb"] if self.end_sample else None
        mem = {"process": "node A's gunicorn worker (VmRSS)",
               "tolerance": f"end <= baseline + max({a.rss_tolerance_pct:g}%, "
                            f"{a.rss_tolerance_mb:g} MB)",
               "baseline_kb": base, "end_kb": end,
               "baseline_t": self.baseline["t"] if self.baseline else None,
               "end_t": self.end_sample["t"] if self.end_sample else None,
               "worker_restarts": self.a_worker_changes}
        if base and end:
            limit = rss_limit_kb(base, a.rss_tolerance_pct, a.rss_tolerance_mb)
            in_run = [s["a_worker_rss_kb"] for s in self.samples
                      if s["a_worker_rss_kb"] and s["t"] >= 0]
            cpu = (self.end_sample.get("a_worker_cpu_s") or 0) - (
                self.baseline.get("a_worker_cpu_s") or 0)
            mem.update({"limit_kb": round(limit), "delta_kb": end - base,
                        "a_worker_cpu_s_during_run": round(cpu, 1),
                        "delta_pct": round(100.0 * (end - base) / base, 2),
                        "max_kb": max(in_run) if in_run else None,
                        "within_tolerance": end <= limit})
        mem["samples"] = self.samples
        r["memory"] = mem
        r["end_state"] = getattr(self, "end_state", None)
        r["errors"] = self.errors
        r["verdict"] = self.verdict()
        return r

    def verdict(self) -> dict:
        r = self.results
        problems = []
        u = r.get("unicast", {})
        if not u.get("accepted"):
            problems.append("no unicast was accepted")
        elif u["delivered"] != u["accepted"]:
            problems.append(f"unicast: {u['delivered']} of {u['accepted']} accepted messages "
                            f"delivered; missing {', '.join(u['missing_msg_ids'][:10])}")
        b = r.get("broadcast", {})
        if b.get("missing"):
            problems.append(f"broadcast: {len(b['missing'])} accepted broadcast(s) missed steady "
                            "users: " + ", ".join(f"{m['msg_id']} (entry {m['entry']}, "
                                                  f"{m['phase']}, {m['steady_missing']} missing)"
                                                  for m in b["missing"][:5]))
        outside = {k: v for k, v in (u.get("refused_by_phase") or {}).items()
                   if k.startswith("normal: ")}
        if outside or b.get("refused_outside_events"):
            answers = ", ".join(f"{k[len('normal: '):]}: {v}" for k, v in outside.items())
            problems.append(f"sends refused while no fault was injected: unicast "
                            f"{sum(outside.values())} ({answers}), "
                            f"broadcast {b.get('refused_outside_events', 0)}")
        c = r.get("churn", {})
        if c.get("failed_outside_events") or c.get("ended_otherwise_outside_events"):
            problems.append(f"churn while no fault was injected: {c['failed_outside_events']} "
                            f"connect/login failures, {c['ended_otherwise_outside_events']} "
                            "connections ended by the server")
        s = r.get("steady", {})
        if s.get("dropped"):
            problems.append(f"{s['dropped']} steady user(s) dropped: " + ", ".join(
                f"{d['user']} at {d['t']}s ({d['reason']})" for d in s["dropped_list"][:5]))
        m = r.get("memory", {})
        if m.get("within_tolerance") is False:
            problems.append(f"node A worker RSS {m['end_kb'] / 1024:.1f} MB at the end, over the "
                            f"limit {m['limit_kb'] / 1024:.1f} MB (baseline "
                            f"{m['baseline_kb'] / 1024:.1f} MB; {m['tolerance']})")
        elif m.get("within_tolerance") is None:
            problems.append("no baseline or end RSS")
        for what in ("redis", "node_b"):
            rec = self.recovery.get(what)
            if rec is None:
                problems.append(f"the {what} event did not complete")
            elif not rec["recovered"]:
                problems.append(f"no recovery after the {what} event within "
                                f"{self.a.recovery_timeout:g}s: {rec.get('last_seen')}")
        if m.get("worker_restarts"):
            problems.append(f"node A's worker was replaced: {m['worker_restarts']}")
        if r.get("aborted"):
            problems.append(f"aborted: {r['aborted']}")
        return {"ok": not problems, "problems": problems}


def _reason(reader, default):
    if reader.successful():
        return reader.value or default or "ended"
    return f"error {type(reader.exception).__name__}"


def _sum_by(counter, key):
    out = Counter()
    for k, n in counter.items():
        out[key(k)] += n
    return out


# -- report ---------------------------------------------------------------------------------

def _mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f}"


def summary_rows(r) -> "list[tuple[str, str]]":
    u, b, s, c, m = (r.get(k, {}) for k in ("unicast", "broadcast", "steady", "churn", "memory"))
    rows = []
    if m:
        rows += [("node A worker RSS baseline → end (MB)",
                  f"{_mb(m.get('baseline_kb'))} → {_mb(m.get('end_kb'))} "
                  f"({m.get('delta_pct', '–')} %; max during run {_mb(m.get('max_kb'))}; "
                  f"limit {_mb(m.get('limit_kb'))})")]
    if u:
        rows += [("unicast delivered / accepted", f"{u['delivered']} / {u['accepted']}"
                  f" (sent {u['sent']}, duplicates {u['duplicates']}, wrong user "
                  f"{u['to_the_wrong_user']})"),
                 ("unicast refused by answer", (", ".join(
                     f"{k}: {v}" for k, v in u["refused_by_answer"].items()) or "none")
                  + f" ({u['refused_outside_events']} outside the event windows)"),
                 ("unicast latency p50 / p99 / max (ms)",
                  f"{u['latency_ms'].get('p50')} / {u['latency_ms'].get('p99')} / "
                  f"{u['latency_ms'].get('max')}")]
    if b:
        rows += [("broadcasts reaching all steady users / required",
                  f"{b['reached_all']} / {b['must_reach_all']} (sent {b['sent']}, accepted "
                  f"{b['accepted']}, of which local-only {b['accepted_local_only']})")]
    if s:
        rows += [("steady users dropped", f"{s['dropped']} of {s['users']}")]
    if c:
        rows += [("churn logins achieved / target (/s)",
                  f"{c['achieved_rate_per_s']} / {c['target_rate_per_s']} "
                  f"({c['logged_in']} logins, {c['left_cleanly']} clean leaves)"),
                 ("churn failures", f"{c['failed']} ({c['failed_outside_events']} outside the "
                                    f"event windows): " + (", ".join(
                                        f"{k}: {v}" for k, v in c["failures_by_reason"].items())
                                        or "none"))]
    for what, rec in (r.get("recovery") or {}).items():
        rows.append((f"recovery after {what}",
                     ("yes, " + ", ".join(f"{k} {v}s" for k, v in rec["seconds"].items()))
                     if rec["recovered"] else f"NO ({rec.get('last_seen')})"))
    v = r.get("verdict") or {}
    rows.append(("verdict", "PASS" if v.get("ok") else "FAIL: " + "; ".join(v.get("problems", []))))
    return rows


def markdown(r, plots) -> str:
    meta = r.get("meta", {})
    out = [f"# imserver.bench soak ({meta.get('started', '')})", "",
           f"- command: `{meta.get('command', '')}`",
           f"- run id `{r.get('run_id')}`, {meta.get('seconds', '?')} s in all"]
    if r.get("aborted"):
        out.append(f"- **aborted**: {r['aborted']}")
    out += ["", "| figure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in summary_rows(r)]
    out += ["", "## Events", "", "| t (s) | clock | event | details |", "|---|---|---|---|"]
    for e in r.get("events", []):
        details = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("event", "t", "at"))
        out.append(f"| {e['t']:.1f} | {e['at']} | {e['event']} | {details} |")
    u = r.get("unicast")
    if u:
        out += ["", "## Unicast refusals by phase", "", "| phase: answer | sends |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in u["refused_by_phase"].items()]
    c = r.get("churn")
    if c:
        out += ["", "## Churn failures and other ends by phase", "",
                "| phase node: reason | cycles |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in c["failures_by_phase_node_reason"].items()]
        out += [f"| {k} (after login) | {v} |"
                for k, v in c["ended_otherwise_by_phase_node_reason"].items()]
    out.append("")
    for name in plots:
        out += [f"![{name}]({name})", ""]
    return "\n".join(out)


def plot(out_dir, r) -> "list[str]":
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = r.get("memory") or {}
    samples = [s for s in mem.get("samples", []) if s.get("a_worker_rss_kb")]
    if len(samples) < 2:
        return []
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})
    ts = [s["t"] for s in samples]
    ax.plot(ts, [s["a_worker_rss_kb"] / 1024 for s in samples], marker=".",
            label="node A worker RSS")
    bs = [s for s in mem.get("samples", []) if s.get("b_worker_rss_kb")]
    if bs:
        ax.plot([s["t"] for s in bs], [s["b_worker_rss_kb"] / 1024 for s in bs], ".",
                color="tab:gray", alpha=0.6, label="node B worker RSS")
    if mem.get("baseline_kb"):
        ax.axhline(mem["baseline_kb"] / 1024, color="tab:green", ls="--", lw=1, label="baseline")
    if mem.get("limit_kb"):
        ax.axhline(mem["limit_kb"] / 1024, color="tab:red", ls=":", lw=1, label="end limit")
    colors = {"redis_down": "tab:red", "redis_recovery": "tab:orange",
              "node_b_down": "tab:purple", "node_b_recovery": "tab:pink"}
    for w in r.get("windows", []):
        end = w["end"] if w["end"] is not None else ts[-1]
        for axis in (ax, ax2):
            axis.axvspan(w["start"], end, color=colors.get(w["phase"], "tab:gray"), alpha=0.18,
                         label=w["phase"].replace("_", " ") if axis is ax else None)
    for e in r.get("events", []):
        if e["event"] in ("start", "traffic_stop", "end"):
            ax.axvline(e["t"], color="black", lw=0.6, ls="-.")
            ax.annotate(e["event"].replace("_", " "), (e["t"], ax.get_ylim()[1]), fontsize=7,
                        rotation=90, va="top", ha="right")
    ax.set_ylabel("RSS (MB)")
    ax.set_title("Soak: node A worker memory, with the Redis outage and node B's kill")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7, ncol=3)

    # Per-bucket traffic: accepted and refused unicasts, churn logins.
    bucket = float(max(1, round((r.get("settings") or {}).get("duration", 600) / 60)))
    sends = r.get("_sends") or []
    logins = r.get("_logins") or []
    end_t = max(ts[-1], 1.0)
    n = int(end_t // bucket) + 1
    acc, ref, log_ = [0] * n, [0] * n, [0] * n
    for x in sends:
        if x.get("t") is not None and 0 <= x["t"] < n * bucket:
            (acc if x["accepted"] else ref)[int(x["t"] // bucket)] += 1
    for t in logins:
        if 0 <= t < n * bucket:
            log_[int(t // bucket)] += 1
    xs = [i * bucket + bucket / 2 for i in range(n)]
    ax2.plot(xs, [v / bucket for v in acc], label="unicasts accepted /s", color="tab:blue")
    ax2.plot(xs, [v / bucket for v in ref], label="unicasts refused /s", color="tab:red")
    ax2.plot(xs, [v / bucket for v in log_], label="churn logins /s", color="tab:green")
    ax2.set_xlabel("seconds since the start of churn and traffic")
    ax2.set_ylabel(f"per second ({bucket:g} s buckets)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "rss.png"), dpi=100)
    plt.close(fig)
    return ["rss.png"]


def write(out_dir, soak: "Soak", plots: bool = True) -> "list[str]":
    r = soak.results
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sends.jsonl"), "w") as fh:
        for x in soak.warmup + soak.unicasts + soak.broadcasts:
            got = [[u, round(t - x["t_wall"], 4)] for u, t in soak.received.get(x["msg_id"], ())]
            row = dict(x, received=got if x["kind"] == "unicast" else len(got))
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(r, fh, indent=2, ensure_ascii=False, default=str)
    written = []
    if plots:
        try:
            r["_sends"] = soak.unicasts
            r["_logins"] = soak.churn_logins_t
            written = plot(out_dir, r)
        except Exception as exc:  # a plot must not lose the results
            print(f"soak: plot failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            r.pop("_sends", None)
            r.pop("_logins", None)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(markdown(r, written))
    return ["results.json", "results.md", "sends.jsonl"] + written


# -- entry point --------------------------------------------------------------------------------

def main(args, argv) -> int:
    """``python -m imserver.bench soak ...`` (called by the CLI with its parsed args)."""
    errors = check_args(args)
    if errors:
        print("imserver.bench soak: " + "; ".join(errors), file=sys.stderr)
        return EXIT_SETUP
    max_seconds = args.max_seconds or default_max_seconds(args)
    out_dir = os.path.abspath(args.out or os.path.join(
        "bench-results", "soak-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out_dir, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m imserver.bench " + " ".join(shlex.quote(x) for x in argv),
            "scenario": NAME, "out": out_dir, "max_seconds": max_seconds,
            "python": sys.version.split()[0], "cpus": os.cpu_count()}
    soak = Soak(args, out_dir, meta)

    main_greenlet = gevent.getcurrent()
    hub = gevent.get_hub()

    def on_signal():
        hub.loop.run_callback(main_greenlet.throw, Interrupted())

    watchers = [gevent.signal_handler(signal.SIGTERM, on_signal)]
    code = EXIT_OK
    t0 = time.time()
    try:
        try:
            with gevent.Timeout(max_seconds):
                soak.run()
        except gevent.Timeout:
            soak.results["aborted"] = f"--max-seconds {max_seconds:g} reached"
            print(f"imserver.bench soak: --max-seconds {max_seconds:g} reached, stopping",
                  file=sys.stderr)
            code = EXIT_MAX_SECONDS
        except (KeyboardInterrupt, Interrupted):
            soak.results["aborted"] = "interrupted"
            print("imserver.bench soak: interrupted, stopping", file=sys.stderr)
            code = EXIT_INTERRUPTED
        except Exception as exc:
            soak.results["aborted"] = f"{type(exc).__name__}: {exc}"
            print(f"imserver.bench soak: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = EXIT_SETUP if soak.t0 is None else EXIT_FAILED
        finally:
            soak.log("stopping the steady users, the nodes and Redis")
            # Not interruptible by a second signal halfway: the processes must go.
            with gevent.Timeout(60, False):
                soak.close()
    finally:
        for w in watchers:
            w.cancel()
    soak.results["meta"]["seconds"] = round(time.time() - t0, 1)
    soak.summarize()
    written = write(out_dir, soak, plots=not args.no_plots)
    print("| figure | value |\n|---|---|")
    for k, v in summary_rows(soak.results):
        print(f"| {k} | {v} |")
    print(f"\nresults: {os.path.join(out_dir, 'results.json')} ({', '.join(written[1:])})")
    verdict = soak.results["verdict"]
    if code == EXIT_OK and not verdict["ok"]:
        code = EXIT_FAILED
    if verdict["ok"] and code == EXIT_OK:
        print("imserver.bench soak: PASS", file=sys.stderr)
    else:
        print("imserver.bench soak: FAIL: " + "; ".join(verdict["problems"]), file=sys.stderr)
    return code
