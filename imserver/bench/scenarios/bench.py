"""The state the scenarios share: client workers, server processes, HTTP clients and
results, and the progress bars they show on stderr."""
import math
import random
import sys
import time

import gevent

from .. import procstat
from ..coordinator import HttpPool, Workers
from . import broadcast, churn, connect, idle, unicast

ORDER = ("connect", "idle", "broadcast", "unicast", "churn")
SCENARIOS = {"connect": connect.run, "idle": idle.run, "broadcast": broadcast.run,
             "unicast": unicast.run, "churn": churn.run}


class _NoBar:
    n = 0

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, *_a, **_k):
        pass

    def close(self):
        pass


def progress(total, desc, unit, quiet=False):
    """A tqdm bar on stderr (a no-op object when quiet)."""
    if quiet:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, leave=True)


class Bench:
    def __init__(self, args, ws_urls, http_url, http_targets, source_ips, server_pids,
                 out_meta):
        self.args = args
        self.ws_urls = ws_urls
        self.http = HttpPool(http_url, timeout=args.http_timeout)
        self.http_targets = [HttpPool(u, timeout=args.http_timeout) for u in http_targets] \
            or [self.http]
        self.source_ips = source_ips
        self.server_pids = server_pids
        self.run_id = "bench-%s-%04x" % (time.strftime("%H%M%S"), random.getrandbits(16))
        self.results = {"meta": out_meta, "scenarios": {}}
        self.samples = {}
        self.workers = None
        self.connected = False
        self.baseline = None  # server snapshot before the connections
        self.rng = random.Random(args.seed)
        self.quiet = args.quiet

    def log(self, text):
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def bar(self, total, desc, unit):
        return progress(total, desc, unit, self.quiet)

    def start_workers(self):
        if self.workers is None:
            k = self.args.procs or max(1, math.ceil(self.args.n / self.args.per_proc))
            self.log(f"bench: starting {k} client worker process(es)")
            self.workers = Workers(k, self.args.max_seconds + 60)
            self.results["meta"]["client_procs"] = k
            self.results["meta"]["client_pids"] = self.workers.pids
        return self.workers

    def server_snapshot(self):
        return procstat.snapshot(self.server_pids) if self.server_pids else {}

    def server_rss(self, snap=None):
        snap = snap if snap is not None else self.server_snapshot()
        return procstat.total(snap, "rss_kb") if snap else None

    def worker_stats(self):
        return self.workers.call_all("stats", timeout=30)

    def system_state(self):
        try:
            status, body = self.http.get("/system/state")
            return body.get("data") if status == 200 else None
        except (OSError, ValueError):
            return None

    def common(self):
        """The connection settings every worker command takes."""
        a = self.args
        return {"ws_urls": self.ws_urls, "driver": a.driver, "app_id": a.app_id,
                "source_ips": self.source_ips, "timeout": a.connect_timeout}

    def stop(self):
        if self.workers is not None:
            self.workers.stop()
            self.workers = None

    def ensure_connected(self):
        if not self.connected:
            connect.run(self)
        return self.results["scenarios"]["connect"]

    def wait_count(self, prefix, expected, timeout, desc):
        """Poll the workers' receive counts until ``expected`` or ``timeout``: the count
        reached."""
        deadline = time.monotonic() + timeout
        bar = self.bar(expected, desc, "msg")
        got = 0
        while True:
            answers = self.workers.call_all("msg_count", prefix=prefix, timeout=30)
            count = sum(x["count"] for x in answers)
            if count > got:
                bar.update(count - got)
                got = count
            if count >= expected or time.monotonic() >= deadline:
                break
            gevent.sleep(0.1)
        bar.close()
        return got

    def wait_seconds(self, seconds, desc, done=None, limit=None, poll=1.0):
        """A bar of ``seconds`` ticking each second while waiting: until ``done()`` is
        true (without one, until ``seconds`` passed) or ``limit`` seconds passed."""
        limit = seconds if limit is None else limit
        bar = self.bar(int(seconds), desc, "s")
        t0 = time.monotonic()
        ticks = 0
        while True:
            elapsed = time.monotonic() - t0
            shown = min(int(elapsed), int(seconds))
            if shown > ticks:
                bar.update(shown - ticks)
                ticks = shown
            if (done() if done else elapsed >= seconds) or elapsed >= limit:
                break
            gevent.sleep(min(poll, max(0.0, limit - elapsed)))
        bar.close()

    def close_all(self):
        if self.workers is None or not self.connected:
            return None
        answers = self.workers.call_all("close_all", timeout=30, per_worker=None)
        result = {"closed": sum(x["closed"] for x in answers),
                  "cut_after_timeout": sum(x["cut_after_timeout"] for x in answers)}
        self.results["close"] = result
        self.connected = False
        return result

    def run(self, names):
        for name in ORDER:
            if name in names:
                SCENARIOS[name](self)
