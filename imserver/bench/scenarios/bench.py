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
# A bar that counts seconds shows no rate: "1.00s/s" says nothing.
TIMED_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:g}/{total:g} s [{elapsed}<{remaining}]"


class _NoBar:
    n = 0
    total = 0

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, *_a, **_k):
        pass

    def refresh(self):
        pass

    def close(self):
        pass


def progress(total, desc, unit, quiet=False, timed=False):
    """A tqdm bar on stderr (a no-op object when quiet). Its rate is the average since
    the bar began: counts read from the workers arrive in jumps, and an instant rate
    of a jump is absurd. A ``timed`` bar counts seconds and shows no rate."""
    if quiet:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, leave=True, smoothing=0,
                **({"bar_format": TIMED_FORMAT} if timed else {}))


class Receipts:
    """The messages whose msgID starts with ``prefix`` that the clients received, on a
    bar that begins with the first send: it moves while the sends go out (``sent`` is
    shown beside it), and its rate is receipts per second over the whole phase."""

    def __init__(self, bench, prefix: str, total: int, desc: str, sends: int):
        self.bench = bench
        self.prefix = prefix
        self.sends = sends
        self.sent = 0
        self.got = 0
        self.bar = bench.bar(total, desc, "msg")
        self._following = True
        self._poller = gevent.spawn(self._follow)

    def count(self) -> int:
        answers = self.bench.workers.call_all("msg_count", prefix=self.prefix, timeout=30)
        count = sum(x["count"] for x in answers)
        self.bar.set_postfix_str(f"sent {self.sent}/{self.sends}", refresh=False)
        if count > self.got:
            self.bar.update(count - self.got)
            self.got = count
        self.bar.refresh()
        return count

    def _follow(self):
        # The first count comes half a second in: a rate over the first milliseconds
        # would be the fan-out of one message, not the phase's pace.
        while True:
            gevent.sleep(0.5)
            if not self._following:
                return
            self.count()

    def wait(self, expected: int, timeout: float) -> int:
        """After the last send: until ``expected`` receipts or ``timeout`` seconds; the
        count reached."""
        self._following = False
        self._poller.join()  # not killed: it may be halfway through writing to a worker
        self.bar.total = expected
        deadline = time.monotonic() + timeout
        while self.count() < expected and time.monotonic() < deadline:
            gevent.sleep(0.1)
        self.bar.close()
        return self.got


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

    def bar(self, total, desc, unit, timed=False):
        return progress(total, desc, unit, self.quiet, timed)

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

    def receipts(self, prefix, total, desc, sends) -> Receipts:
        return Receipts(self, prefix, total, desc, sends)

    def wait_seconds(self, seconds, desc, done=None, limit=None, poll=1.0):
        """A bar of ``seconds`` ticking each second while waiting: until ``done()`` is
        true (without one, until ``seconds`` passed) or ``limit`` seconds passed."""
        limit = seconds if limit is None else limit
        bar = self.bar(seconds, desc, "s", timed=True)
        t0 = time.monotonic()
        ticks = 0
        while True:
            elapsed = time.monotonic() - t0
            shown = seconds if elapsed >= seconds else int(elapsed)
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
