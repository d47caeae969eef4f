"""What the private and offline runs share: the servers, the client workers, logins, and
waiting for what the workers report."""
import math
import random
import time
from collections import Counter, defaultdict

import gevent

from ..coordinator import Workers
from ..soak.cluster import RunContext
from .servers import WORKER_MODULE, Servers, loadavg, split


class Run:
    """What both scenarios share: the servers, the client workers, the results."""

    def __init__(self, args, out_dir: str, meta: dict):
        self.a = args
        self.out = out_dir
        self.ctx = RunContext(args, args.scenario)
        self.rng = self.ctx.rng
        self.run_id = "%s%04x" % (args.scenario[:2], random.getrandbits(16))
        self.servers = Servers(self.ctx, out_dir)
        self.workers = None
        self.results = {"meta": meta, "errors": []}
        self.problems = []
        if args.source_ips.strip().lower() == "none":
            self.source_ips = []
        elif args.source_ips:
            self.source_ips = [s.strip() for s in args.source_ips.split(",") if s.strip()]
        else:
            total = args.users + (getattr(args, "senders", 0) or 0)
            self.source_ips = [f"127.0.0.{2 + i}" for i in range(max(1, math.ceil(total / 20000)))]

    def log(self, text):
        self.ctx.log(text)

    def setup(self) -> None:
        a = self.a
        meta = self.results["meta"]
        meta["loadavg_start"] = loadavg()
        self.servers.start(meta)
        self.workers = Workers(a.procs, meta["max_seconds"] + 30, module=WORKER_MODULE)
        meta["client_pids"] = self.workers.pids
        self.workers.call_all("setup", ws_urls=self.servers.ws_urls, app_id=a.app_id,
                              device=a.device, timeout=a.connect_timeout,
                              discard_every=a.discard_every)
        self.log(f"{a.procs} client worker process(es) {self.workers.pids}; nodes "
                 f"{', '.join(self.servers.http_urls)}")

    def login(self, users, slots=None, concurrency=None, what="logins") -> dict:
        """Log ``users`` ([(name, node)]) in: worker i mod procs; ``slots`` wall-clock starts."""
        a = self.a
        k = len(self.workers)
        rows = [[u, node, slots[i] if slots else None] for i, (u, node) in enumerate(users)]
        parts = split(rows, k)
        conc = max(1, (concurrency or a.concurrency) // k)
        span = (slots[-1] - time.time()) if slots else len(users) / 50.0
        t0 = time.time()
        answers = self.workers.call_all(
            "login", timeout=span + 120, per_worker=lambda i: {"users": parts[i]},
            source_ips=self.source_ips, concurrency=conc, deadline_s=span + 60)
        failures = Counter()
        for ans in answers:
            failures.update(ans["failures"])
        done = {"users": len(users), "seconds": round(time.time() - t0, 2),
                "failures": dict(failures),
                "late_s_max": round(max(ans["late_s"]["max"] for ans in answers), 3)}
        self.log(f"{what}: {len(users)} in {done['seconds']} s, failures {dict(failures)}")
        return done

    def progress(self, expect=0) -> dict:
        answers = self.workers.call_all("progress", expect=expect, timeout=30)
        return {"received": sum(x["received"] for x in answers),
                "complete": sum(x["complete"] for x in answers),
                "last_receive": max((x["last_receive"] for x in answers
                                     if x["last_receive"]), default=None)}

    def wait_for(self, what: str, done, timeout: float, expect=0) -> dict:
        """Poll the workers until ``done(progress)``; the last progress."""
        deadline = time.monotonic() + timeout
        last_log = time.monotonic()
        while True:
            p = self.progress(expect)
            if done(p) or time.monotonic() >= deadline:
                return p
            if time.monotonic() - last_log > 3:
                last_log = time.monotonic()
                self.log(f"waiting for {what}: {p['received']} read, {p['complete']} complete")
            gevent.sleep(0.2)

    def receipts(self) -> "tuple[dict, dict]":
        users, other = {}, defaultdict(Counter)
        for ans in self.workers.call_all("receipts", timeout=120):
            users.update(ans["users"])
            for key in ("frames", "replies", "dropped", "failures"):
                other[key].update(ans[key])
        return users, {k: dict(v) for k, v in other.items()}

    def close(self) -> None:
        if self.workers is not None:
            try:
                self.workers.call_all("close_all", timeout=15)
            except Exception as exc:
                self.results["errors"].append(f"close: {exc}")
            self.workers.stop()
        left = self.servers.stop()
        if left:
            self.results["errors"].append(f"killed leftover processes {left}")


# -- private ---------------------------------------------------------------------------------
