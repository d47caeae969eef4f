"""A client worker process: ``python -m imserver.bench.client --id K [--max-seconds S]``.

Holds up to ~15,000 connections (one greenlet each) and is driven by the coordinator
through JSON lines: a command ``{"id": n, "cmd": "connect", ...}`` on stdin, its answer
``{"id": n, "ok": true, ...}`` on stdout (``"ok": false, "error": ...`` on failure).
Commands run concurrently, each in its own greenlet, so ``stats`` can be asked while
``connect`` runs.

Commands: ``hello``, ``connect``, ``stats``, ``heartbeats``, ``users``, ``msg_count``,
``collect``, ``churn``, ``close_all``, ``exit``.

The process stops by itself: at the end of stdin (the coordinator is gone) and after
``--max-seconds``. Receive times are ``time.time()``: the coordinator runs on the same
machine, so the clocks agree.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402
from gevent.lock import BoundedSemaphore, Semaphore  # noqa: E402

from .drivers import make_driver  # noqa: E402
from .jsonlines import encode, messages  # noqa: E402
from .procstat import rss_kb  # noqa: E402
from .wsclient import WSError  # noqa: E402


def percentiles(values, points=(50, 90, 99)) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
        out[f"p{p}"] = ordered[k]
    out["max"] = ordered[-1]
    return out


def sample_sorted(values, n: int) -> list:
    """At most ``n`` values at evenly spaced ranks of the sorted list (first and last kept)."""
    ordered = sorted(values)
    if len(ordered) <= n:
        return ordered
    step = (len(ordered) - 1) / (n - 1)
    return [ordered[int(round(i * step))] for i in range(n)]


class Worker:
    def __init__(self, wid: int):
        self.wid = wid
        self.conns = {}  # index -> live, logged-in connection
        self.driver = None  # the first driver (all share the close/heartbeat frames)
        self.drivers = {}
        self.failures = Counter()  # connect/login failure reason -> n
        self.dropped = Counter()  # server-side end of a logged-in connection -> n
        self.attempted = 0
        self.logged_in = 0
        self.closed_by_us = 0
        self.connecting = 0
        self.login_seconds = []  # connect + handshake + login, per successful connection
        self.first_start = None
        self.last_login = None
        self.pushes = defaultdict(list)  # msg_id -> [recv_time, ...] for cmd "msg"
        self.push_cmds = Counter()
        self._hb = None
        self._hb_stop = Event()
        self.churn = Counter()

    # -- pushes ---------------------------------------------------------------------------

    def on_push(self, cmd, msg_id, t):
        self.push_cmds[cmd] += 1
        if cmd == "msg":
            self.pushes[msg_id].append(t)

    # -- commands ---------------------------------------------------------------------------

    def cmd_hello(self, **_):
        return {"pid": os.getpid(), "rss_kb": rss_kb(os.getpid()) or 0,
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}

    def _driver(self, driver, ws_url, app_id, timeout):
        """The driver of one WebSocket URL (one per URL, kept for the process's life)."""
        key = (driver, ws_url, app_id)
        drv = self.drivers.get(key)
        if drv is None:
            drv = self.drivers[key] = make_driver(driver, ws_url, app_id=app_id,
                                                  on_push=self.on_push, timeout=timeout)
        if self.driver is None:
            self.driver = drv
        return drv

    def replies(self):
        total = Counter()
        for drv in self.drivers.values():
            total.update(drv.replies)
        return total

    def heartbeats_sent(self):
        return sum(drv.heartbeats_sent for drv in self.drivers.values())

    def cmd_connect(self, count, start, ws_urls, driver="acc", app_id=101, source_ips=(),
                    concurrency=100, timeout=10.0, deadline_s=300.0, prefix=None, **_):
        """Open ``count`` connections, indexes ``start``.., each logging in as
        ``b<wid>-<index>``; at most ``concurrency`` in progress at once. Answers when all
        attempts ended (or ``deadline_s`` passed: the rest are not attempted)."""
        drivers = [self._driver(driver, url, app_id, timeout) for url in ws_urls]
        prefix = prefix or f"b{self.wid}-"
        sem = BoundedSemaphore(max(1, concurrency))
        done = Event()
        pending = [0]
        deadline = time.monotonic() + deadline_s
        if self.first_start is None:
            self.first_start = time.time()
        started = 0

        def finished():
            pending[0] -= 1
            if pending[0] == 0:
                done.set()

        def run(index, drv, source_ip):
            t0 = time.monotonic()
            try:
                conn = drv.connect(f"{prefix}{index}", source_ip)
            except WSError as exc:
                self.failures[exc.reason] += 1
                return
            except Exception as exc:  # a bug or an OS limit: count it, keep going
                self.failures[f"error {type(exc).__name__}"] += 1
                return
            finally:
                self.connecting -= 1
                sem.release()
                finished()
            self.login_seconds.append(time.monotonic() - t0)
            self.logged_in += 1
            self.last_login = time.time()
            conn.index = index
            self.conns[index] = conn
            reason = drv.serve(conn)
            self.conns.pop(index, None)
            if conn.initiated:  # we started the close: not a drop
                self.closed_by_us += 1
                return
            self.dropped[reason] += 1

        pending[0] = 1  # held until every attempt is spawned
        for i in range(count):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sem.acquire(timeout=remaining):
                self.failures["not attempted (phase deadline)"] += count - i
                break
            index = start + i
            drv = drivers[index % len(drivers)]
            source_ip = source_ips[index % len(source_ips)] if source_ips else ""
            self.attempted += 1
            self.connecting += 1
            pending[0] += 1
            started += 1
            gevent.spawn(run, index, drv, source_ip)
        finished()
        done.wait(max(0.0, deadline - time.monotonic()) + timeout + 1)
        return self.cmd_stats()

    def cmd_stats(self, samples=False, **_):
        extra = {"login_samples": sample_sorted(self.login_seconds, 200)} if samples else {}
        return {**extra, "wid": self.wid, "attempted": self.attempted, "logged_in": self.logged_in,
                "live": len(self.conns), "connecting": self.connecting,
                "failures": dict(self.failures), "dropped": dict(self.dropped),
                "closed_by_us": self.closed_by_us,
                "login_s": percentiles(self.login_seconds),
                "first_start": self.first_start, "last_login": self.last_login,
                "push_cmds": dict(self.push_cmds),
                "replies": dict(self.replies()), "heartbeats_sent": self.heartbeats_sent(),
                "churn": dict(self.churn), "rss_kb": rss_kb(os.getpid()) or 0}

    def cmd_heartbeats(self, interval=30.0, max_seconds=3600.0, **_):
        """Send a heartbeat on every connection once per ``interval`` seconds, spread over
        the interval; ``interval`` 0 stops. Runs at most ``max_seconds``."""
        if self._hb is not None:
            self._hb_stop.set()
            self._hb.join(timeout=5)
            self._hb = None
        if not interval or interval <= 0:
            return {"running": False}
        self._hb_stop = stop = Event()
        self._hb = gevent.spawn(self._heartbeat_loop, float(interval), stop,
                                time.monotonic() + max_seconds)
        return {"running": True, "interval": interval}

    def _heartbeat_loop(self, interval, stop, end):
        batch = 100
        while not stop.is_set() and time.monotonic() < end:
            conns = list(self.conns.values())
            if not conns:
                if stop.wait(min(interval, 1.0)):
                    return
                continue
            pause = interval * batch / len(conns)
            t_round = time.monotonic()
            for i in range(0, len(conns), batch):
                for conn in conns[i:i + batch]:
                    if not conn.closing and not conn.closed:
                        self.driver.heartbeat(conn)
                if stop.wait(pause) or time.monotonic() >= end:
                    return
            rest = interval - (time.monotonic() - t_round)
            if rest > 0 and stop.wait(rest):
                return

    def cmd_users(self, **_):
        return {"users": [[i, c.user] for i, c in self.conns.items()
                          if not c.closing and not c.closed]}

    def cmd_msg_count(self, prefix="", **_):
        total = 0
        for msg_id, times in self.pushes.items():
            if msg_id.startswith(prefix):
                total += len(times)
        return {"count": total}

    def cmd_collect(self, prefix="", samples=200, all_times=False, forget=True, **_):
        """Receive times of the messages whose msgID starts with ``prefix``: per msgID
        ``[count, first, last, sampled sorted times]`` (every time when ``all_times``)."""
        out = {}
        for msg_id in [m for m in self.pushes if m.startswith(prefix)]:
            times = self.pushes.pop(msg_id) if forget else self.pushes[msg_id]
            ordered = sorted(times) if all_times else sample_sorted(times, samples)
            out[msg_id] = [len(times), min(times), max(times), ordered]
        return {"messages": out}

    def cmd_churn(self, rate, duration, ws_urls, driver="acc", app_id=101, source_ips=(),
                  hold=0.0, timeout=10.0, max_inflight=500, **_):
        """Connect, log in, stay ``hold`` seconds and leave (close handshake), starting
        ``rate`` cycles a second for ``duration`` seconds. Answers with the counts."""
        drivers = [make_driver(driver, url, app_id=app_id, on_push=self.on_push,
                               timeout=timeout) for url in ws_urls]
        self.churn.clear()
        inflight = [0]
        done = Event()
        latencies = []
        stopped = [False]

        def run(index, drv, source_ip):
            try:
                self._churn_cycle(f"c{self.wid}-{index}", drv, source_ip, hold, timeout,
                                  latencies)
            finally:
                inflight[0] -= 1
                if inflight[0] == 0 and stopped[0]:
                    done.set()

        t_start = time.monotonic()
        index = 0
        interval = 1.0 / rate if rate > 0 else duration + 1
        next_t = t_start
        while True:
            now = time.monotonic()
            if now - t_start >= duration:
                break
            if now < next_t:
                gevent.sleep(next_t - now)
                continue
            next_t += interval
            if inflight[0] >= max_inflight:
                self.churn["skipped (too many in flight)"] += 1
                continue
            drv = drivers[index % len(drivers)]
            source_ip = source_ips[index % len(source_ips)] if source_ips else ""
            inflight[0] += 1
            self.churn["attempted"] += 1
            gevent.spawn(run, index, drv, source_ip)
            index += 1
        elapsed = time.monotonic() - t_start
        stopped[0] = True
        if inflight[0] == 0:
            done.set()
        done.wait(timeout + 6)
        return dict(self.churn, elapsed=elapsed, still_in_flight=inflight[0],
                    login_s=percentiles(latencies))

    def _churn_cycle(self, user, drv, source_ip, hold, timeout, latencies) -> None:
        """One churn cycle, counted in ``self.churn`` by how it ended."""
        counts = self.churn
        t0 = time.monotonic()
        try:
            conn = drv.connect(user, source_ip)
        except WSError as exc:
            counts["fail " + exc.reason] += 1
            return
        except Exception as exc:
            counts[f"fail error {type(exc).__name__}"] += 1
            return
        latencies.append(time.monotonic() - t0)
        counts["logged_in"] += 1
        try:
            if hold > 0:
                gevent.sleep(hold)  # pushes meanwhile wait in the socket buffer
            drv.close(conn)
            # Read (bounded) until the server's close frame answers ours.
            conn.sock.settimeout(min(timeout, 5.0))
            while True:
                conn.recv_message()
        except WSError as exc:
            if exc.reason in ("closed 1000", "closed 1005"):
                counts["left"] += 1
            elif exc.reason == "timeout":
                counts["close timeout"] += 1
            else:
                counts["close " + exc.reason] += 1
        except Exception as exc:
            counts[f"close error {type(exc).__name__}"] += 1
        finally:
            conn.abort()

    def cmd_close_all(self, timeout=5.0, **_):
        """Close every connection (close handshake); sockets still open after ``timeout``
        are cut."""
        if self._hb is not None:
            self._hb_stop.set()
            self._hb = None
        conns = list(self.conns.values())
        driver = self.driver
        for i, conn in enumerate(conns):
            driver.close(conn)
            if i % 500 == 499:
                gevent.sleep(0)
        deadline = time.monotonic() + timeout
        while self.conns and time.monotonic() < deadline:
            gevent.sleep(0.05)
        cut = 0
        for conn in list(self.conns.values()):
            conn.abort()
            cut += 1
        gevent.sleep(0.05)
        return {"closed": len(conns), "cut_after_timeout": cut, "stats": self.cmd_stats()}


def main(argv=None, worker_class=None, prog="python -m imserver.bench.client") -> int:
    """Run a worker process: ``worker_class`` (default ``Worker``) answers the commands."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="imserver.bench client worker (JSON lines on stdin/stdout)")
    parser.add_argument("--id", type=int, default=0, help="worker number (user IDs b<id>-<i>)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="exit after this many seconds whatever happens")
    args = parser.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass

    def bail():
        sys.stderr.write(f"bench client {args.id}: --max-seconds {args.max_seconds} reached, exiting\n")
        sys.stderr.flush()
        os._exit(3)

    gevent.spawn_later(args.max_seconds, bail)

    worker = (worker_class or Worker)(args.id)
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    stdout = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)
    write_lock = Semaphore()

    def answer(obj):
        with write_lock:
            stdout.write(encode(obj))
            stdout.flush()

    def handle(msg):
        rid = msg.get("id")
        cmd = msg.get("cmd", "")
        try:
            if cmd == "exit":
                answer({"id": rid, "ok": True})
                os._exit(0)
            fn = getattr(worker, f"cmd_{cmd}", None)
            if fn is None:
                raise ValueError(f"unknown command {cmd!r}")
            args_ = {k: v for k, v in msg.items() if k not in ("id", "cmd")}
            result = fn(**args_)
            answer({"id": rid, "ok": True, **(result or {})})
        except Exception as exc:
            answer({"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    for msg in messages(stdin.readline):
        if msg is None:
            answer({"id": None, "ok": False, "error": "bad JSON line"})
            continue
        gevent.spawn(handle, msg)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
