"""The soak's processes: its own redis-server and the two nodes A and B, on loopback
ports below the kernel's ephemeral range, so that a restarted process gets its port back."""
import http.client
import os
import random
import signal
import sys
import time

import gevent

from .. import procstat
from ..coordinator import HttpPool
from ..harness import NodeServer, RedisServer, low_ports, node_config, redis_server_path

HTTP_ERRORS = (OSError, ValueError, http.client.HTTPException)
BANNER = "soak"


class RunContext:
    """What a Cluster needs of a run outside the soak (recovery, private, offline): its
    settings, randomness and a log whose lines start with the run's name."""

    def __init__(self, args, name: str):
        self.a = args
        self.name = name
        self.rng = random.Random(args.seed)
        self.quiet = args.quiet
        self.t0 = time.time()

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.name}: [{time.time() - self.t0:7.2f}s] {text}", file=sys.stderr,
                  flush=True)


def redis_binary(given: str = "") -> str:
    if given:
        if not os.access(given, os.X_OK):
            raise RuntimeError(f"--redis-server {given!r} is not an executable file")
        return given
    path = redis_server_path()
    if not path:
        raise RuntimeError("redis-server not found: install it (Debian: apt-get install "
                           "redis-server) or pass --redis-server PATH")
    return path


class SoakNode(NodeServer):
    """One node (gunicorn master + one worker) of the soak's cluster, with kept-alive
    HTTP connections for the sends (``http``) and the checks (``probe``)."""

    stop_timeout = 15.0  # drainWindow 1: gunicorn's graceful timeout is 11 s

    def __init__(self, label: str, ports, redis_addr: str, out_dir: str, args,
                 overrides=None, banner: str = BANNER):
        self.label = label
        stem = f"node-{label.lower()}"
        config = node_config(*ports, {
            "app": {"advertiseAddr": "127.0.0.1", "reportInterval": args.report_interval,
                    "drainWindow": 1, "workers": 1,
                    "logFile": "",  # the node's stderr is its log file
                    "logLevel": args.node_log_level, "accessLog": bool(args.access_log),
                    "appIDs": sorted({101, 102, 103, 104, args.app_id})},
            "redis": {"addr": redis_addr}}, overrides)
        metrics_dir = os.path.join(out_dir, f"{stem}-metrics")
        os.makedirs(metrics_dir, exist_ok=True)
        # Its own Prometheus folder: a SIGKILLed master leaves no temporary folder behind.
        env = {"PROMETHEUS_MULTIPROC_DIR": metrics_dir, "PYTHONUNBUFFERED": "1"}
        super().__init__(label, config, os.path.join(out_dir, f"{stem}.yaml"),
                         os.path.join(out_dir, f"{stem}.log"), env=env, detached=True,
                         banner=banner)
        self.http = HttpPool(self.http_url, size=64, timeout=args.http_timeout)
        self.probe = HttpPool(self.http_url, size=4, timeout=3.0)

    def start(self, timeout: float = None) -> "SoakNode":
        super().start(timeout)
        self.children()  # its worker's pid joins the pids to sweep at the end
        return self

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

    def stop(self, sig=signal.SIGTERM, timeout: float = None):
        self.drop_keepalives()
        return super().stop(sig, timeout)


class Cluster:
    """Redis and nodes A and B: started together, checked to see each other, stopped
    by pid."""

    def __init__(self, ctx, out_dir: str, node_overrides=None, banner: str = BANNER):
        self.ctx = ctx
        self.out = out_dir
        self.node_overrides = node_overrides  # {section: {key: value}} over both nodes' config
        self.banner = banner
        self.redis = self.node_a = self.node_b = None

    @property
    def processes(self):
        return [p for p in (self.node_a, self.node_b, self.redis) if p is not None]

    def start(self, meta: dict) -> None:
        a = self.ctx.a
        binary = redis_binary(a.redis_server)
        ports = low_ports(7, rng=self.ctx.rng)
        meta["ports"] = {
            "redis": ports[0], "a": {"http": ports[1], "ws": ports[2], "rpc": ports[3]},
            "b": {"http": ports[4], "ws": ports[5], "rpc": ports[6]}}
        meta["redis_server"] = binary
        self.redis = RedisServer(binary, ports[0], self.out, os.path.join(self.out, "redis.log"),
                                 detached=True, banner=self.banner)
        self.node_a = SoakNode("A", ports[1:4], self.redis.addr, self.out, a,
                               self.node_overrides, self.banner)
        self.node_b = SoakNode("B", ports[4:7], self.redis.addr, self.out, a,
                               self.node_overrides, self.banner)
        self.ctx.log(f"starting redis-server on :{ports[0]}, node A (http :{ports[1]}, ws "
                     f":{ports[2]}, rpc :{ports[3]}), node B (http :{ports[4]}, ws :{ports[5]}, "
                     f"rpc :{ports[6]}); logs in {self.out}")
        self.redis.start()
        jobs = [gevent.spawn(n.start) for n in (self.node_a, self.node_b)]
        gevent.joinall(jobs, raise_error=True)
        self.wait_joined(30)
        meta["pids"] = {
            "redis": self.redis.pid, "a": [self.node_a.pid] + self.node_a.children(),
            "b": [self.node_b.pid] + self.node_b.children()}

    def wait_joined(self, timeout: float) -> None:
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

    def stop(self) -> "list[int]":
        """Stop the nodes (at once), then Redis; kill anything of theirs left behind.
        The pids that had to be killed so."""
        nodes = [p for p in (self.node_a, self.node_b) if p is not None]
        gevent.joinall([gevent.spawn(p.stop) for p in nodes], timeout=25)
        if self.redis is not None:
            self.redis.stop()
        left = []
        for p in self.processes:
            left += p.sweep()
        return left
