"""The scenarios. A ``Bench`` holds the client workers, the connections' state, the
server processes and the results; each scenario is one method and adds one entry to
``results["scenarios"]``. In a suite they share one set of connections: connect once,
then idle, broadcast and unicast on those connections, churn alongside them.
"""
import math
import random
import sys
import time

import gevent
from gevent.pool import Pool

from . import procstat
from .coordinator import HttpPool, Workers
from .stats import expand_samples, merge_quantiles, summary

ORDER = ("connect", "idle", "broadcast", "unicast", "churn")
BROADCAST_SENDER = "bench-sender"


def progress(total, desc, unit, quiet=False):
    """A tqdm bar on stderr (a no-op object when quiet)."""
    if quiet:
        class _Null:
            n = 0

            def update(self, n=1):
                self.n += n

            def set_postfix_str(self, *_a, **_k):
                pass

            def close(self):
                pass
        return _Null()
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

    # -- plumbing ---------------------------------------------------------------------------

    def log(self, text):
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

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
        a = self.args
        return {"ws_urls": self.ws_urls, "driver": a.driver, "app_id": a.app_id,
                "source_ips": self.source_ips, "timeout": a.connect_timeout}

    def stop(self):
        if self.workers is not None:
            self.workers.stop()
            self.workers = None

    # -- connect ------------------------------------------------------------------------------

    def ensure_connected(self):
        if not self.connected:
            self.scenario_connect()
        return self.results["scenarios"]["connect"]

    def scenario_connect(self):
        a = self.args
        workers = self.start_workers()
        k = len(workers)
        n = a.n
        counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
        self.baseline = self.server_snapshot()
        base_rss = self.server_rss(self.baseline)
        memory = [[0, base_rss]] if base_rss is not None else []
        steps = max(1, a.mem_steps)
        thresholds = [math.ceil(n * (i + 1) / steps) for i in range(steps)]
        self.log(f"bench: connecting {n} clients ({a.driver}) to {', '.join(self.ws_urls)} "
                 f"from {', '.join(self.source_ips) or 'any source'}, concurrency {a.concurrency}")
        per_conc = max(1, a.concurrency // k)
        t0 = time.time()
        pending = [w.send("connect", count=counts[i], start=0, concurrency=per_conc,
                          deadline_s=a.phase_timeout, **self.common())
                   for i, w in enumerate(workers.procs)]
        bar = progress(n, "connect", "conn", self.quiet)
        done_n = 0
        while True:
            finished = all(p.ready() for p in pending)
            stats = self.worker_stats()
            logged = sum(s["logged_in"] for s in stats)
            failed = sum(sum(s["failures"].values()) for s in stats)
            if logged + failed > done_n:
                bar.update(logged + failed - done_n)
                done_n = logged + failed
            if failed:
                bar.set_postfix_str(f"failed {failed}")
            if thresholds and (logged >= thresholds[0] or finished):
                rss = self.server_rss()
                if rss is not None:
                    memory.append([logged, rss])
                while thresholds and (logged >= thresholds[0] or finished):
                    thresholds.pop(0)
            if finished:
                break
            if time.time() - t0 > a.phase_timeout + a.connect_timeout + 5:
                break
            gevent.sleep(0.1 if n <= 2000 else 0.25)
        bar.close()
        answers = [p.get() if p.ready() else {"ok": False} for p in pending]
        stats = self.workers.call_all("stats", samples=True, timeout=30)
        failures = {}
        for s in stats:
            for reason, c in s["failures"].items():
                failures[reason] = failures.get(reason, 0) + c
        connected = sum(s["logged_in"] for s in stats)
        first = min((s["first_start"] for s in stats if s["first_start"]), default=t0)
        last = max((s["last_login"] for s in stats if s["last_login"]), default=first)
        seconds = max(1e-6, last - first)
        q = merge_quantiles([(s["logged_in"], s["login_samples"]) for s in stats], (50, 90, 99))
        login_ms = {k: round(v * 1000, 2) for k, v in q.items()}
        if q:
            login_ms["max"] = round(1000 * max(s["login_s"]["max"] for s in stats
                                               if s["login_s"]), 2)
        after = self.server_snapshot()
        state = self.system_state()
        result = {
            "requested": n, "connected": connected, "failed": sum(failures.values()),
            "failures": failures, "seconds_to_all_logged_in": round(seconds, 3),
            "rate_per_s": round(connected / seconds, 1), "login_latency_ms": login_ms,
            "concurrency": a.concurrency, "incomplete_workers": sum(1 for x in answers if not x.get("ok")),
            "server_rss_before_kb": base_rss, "server_rss_after_kb": self.server_rss(after),
            "memory_curve": memory,
            "client_rss_kb": [s["rss_kb"] for s in stats],
            "server_state_connections": (state or {}).get("connections"),
            "enter_exit_frames_received": sum(s["push_cmds"].get("enter", 0) +
                                              s["push_cmds"].get("exit", 0) for s in stats),
        }
        if base_rss is not None and connected:
            result["server_kb_per_conn_after_connect"] = round(
                (result["server_rss_after_kb"] - base_rss) / connected, 2)
        self.results["scenarios"]["connect"] = result
        self.samples["memory_curve"] = memory
        self.connected = True
        if a.heartbeat_interval > 0:
            workers.call_all("heartbeats", interval=a.heartbeat_interval,
                             max_seconds=a.max_seconds)
        self.log(f"bench: {connected}/{n} logged in in {seconds:.2f}s "
                 f"({result['rate_per_s']}/s), {result['failed']} failed")
        return result

    # -- idle ---------------------------------------------------------------------------------

    def scenario_idle(self):
        a = self.args
        self.ensure_connected()
        before = self.worker_stats()
        live0 = sum(s["live"] for s in before)
        hb0 = sum(s["heartbeats_sent"] for s in before)
        self.log(f"bench: holding {live0} connections idle for {a.duration}s "
                 f"(heartbeat every {a.heartbeat_interval}s)")
        bar = progress(int(a.duration), "idle", "s", self.quiet)
        t0 = time.monotonic()
        ticks = 0
        while True:
            elapsed = time.monotonic() - t0
            if int(elapsed) > ticks:
                bar.update(int(elapsed) - ticks)
                ticks = int(elapsed)
            if elapsed >= a.duration:
                break
            gevent.sleep(min(1.0, a.duration - elapsed))
        bar.close()
        after_stats = self.worker_stats()
        snap = self.server_snapshot()
        dropped = {}
        for s0, s1 in zip(before, after_stats):
            for reason, c in s1["dropped"].items():
                d = c - s0["dropped"].get(reason, 0)
                if d:
                    dropped[reason] = dropped.get(reason, 0) + d
        live = sum(s["live"] for s in after_stats)
        replies = {}
        for s in after_stats:
            for key, c in s["replies"].items():
                if key.startswith("heartbeat"):
                    replies[key] = replies.get(key, 0) + c
        result = {"duration_s": a.duration, "heartbeat_interval_s": a.heartbeat_interval,
                  "connections_at_start": live0, "connections_at_end": live,
                  "dropped": sum(dropped.values()), "dropped_by_reason": dropped,
                  "heartbeats_sent": sum(s["heartbeats_sent"] for s in after_stats) - hb0,
                  "heartbeat_replies_total": replies,
                  "client_rss_kb": [s["rss_kb"] for s in after_stats]}
        if self.baseline:
            base = procstat.total(self.baseline, "rss_kb")
            now = procstat.total(snap, "rss_kb")
            result.update({
                "server_rss_before_kb": base, "server_rss_after_kb": now,
                "kb_per_conn": round((now - base) / live, 2) if live else None,
                "per_process": {str(pid): {"cmd": procstat.proc_name(pid),
                                           "rss_before_kb": self.baseline[pid]["rss_kb"],
                                           "rss_after_kb": v["rss_kb"]}
                                for pid, v in snap.items() if pid in self.baseline}})
        result["client_kb_per_conn"] = round(
            sum(s["rss_kb"] for s in after_stats) / live, 2) if live else None
        self.results["scenarios"]["idle"] = result
        self.log(f"bench: idle: {live} live, {result['dropped']} dropped, "
                 f"server {result.get('kb_per_conn')} KB/conn")
        return result

    # -- broadcast ----------------------------------------------------------------------------

    def _wait_count(self, prefix, expected, timeout, desc):
        """Poll the workers' receive counts until ``expected`` or ``timeout``: the count
        and the time it was reached (or last seen growing)."""
        deadline = time.monotonic() + timeout
        bar = progress(expected, desc, "msg", self.quiet)
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

    def scenario_broadcast(self):
        a = self.args
        self.ensure_connected()
        stats = self.worker_stats()
        receivers = sum(s["live"] for s in stats)
        m = a.messages
        prefix = f"{self.run_id}-b"
        expected = receivers * m
        self.log(f"bench: broadcasting {m} messages to {receivers} receivers, "
                 f"every {a.interval}s")
        # The server's CPU while idle (heartbeats, sweeps), measured first and taken off the
        # broadcast window, so that the per-delivery figure is the fan-out's own cost.
        idle0, idle_t0 = self.server_snapshot(), time.time()
        gevent.sleep(a.idle_probe)
        cpu0, cpu_t0 = self.server_snapshot(), time.time()
        idle_rate = (procstat.delta(idle0, cpu0, "cpu_s") / max(1e-6, cpu_t0 - idle_t0)
                     if idle0 else None)
        sends = []
        t_first = time.time()
        for k in range(m):
            slot = t_first + k * a.interval
            now = time.time()
            if slot > now:
                gevent.sleep(slot - now)
            msg_id = f"{prefix}{k}"
            t0 = time.time()
            try:
                status, body = self.http.post("/user/sendMessageAll", appID=a.app_id,
                                              userID=BROADCAST_SENDER, msgID=msg_id,
                                              message=a.message or f"broadcast {k}")
                err = None if status == 200 and body.get("code") == 200 else f"{status} {body}"
            except OSError as exc:
                err = f"{type(exc).__name__}: {exc}"
            t1 = time.time()
            sends.append({"msg_id": msg_id, "t0": t0, "http_ms": round((t1 - t0) * 1000, 2),
                          "error": err})
        got = self._wait_count(prefix, expected, a.wait, "broadcast")
        cpu1, cpu_t1 = self.server_snapshot(), time.time()
        collected = self.workers.call_all("collect", prefix=prefix, samples=200, timeout=60)
        per_msg = []
        lasts = []
        all_parts = []
        for send in sends:
            parts = []
            count = 0
            last = None
            first = None
            for ans in collected:
                entry = ans["messages"].get(send["msg_id"])
                if not entry:
                    continue
                c, lo, hi, samples = entry
                count += c
                last = hi if last is None else max(last, hi)
                first = lo if first is None else min(first, lo)
                t0 = send["t0"]
                parts.append((c, [(x - t0) * 1000 for x in samples]))
            q = merge_quantiles(parts, (50, 99))
            row = {"msg_id": send["msg_id"], "http_ms": send["http_ms"], "received": count,
                   "error": send["error"]}
            if last is not None:
                row["first_receive_ms"] = round((first - send["t0"]) * 1000, 2)
                row["last_receive_ms"] = round((last - send["t0"]) * 1000, 2)
                row["p50_ms"] = round(q["p50"], 2)
                row["p99_ms"] = round(q["p99"], 2)
                row["fanout_per_s"] = round(count / max(1e-6, last - send["t0"]), 1)
                lasts.append(row["last_receive_ms"])
                all_parts.extend(parts)
            per_msg.append(row)
        delivered = sum(r["received"] for r in per_msg)
        t_last = max((s["t0"] + r.get("last_receive_ms", 0) / 1000 for s, r in zip(sends, per_msg)),
                     default=t_first)
        gross_s = procstat.delta(cpu0, cpu1, "cpu_s") if cpu0 else None
        cpu_s = (max(0.0, gross_s - idle_rate * (cpu_t1 - cpu_t0))
                 if gross_s is not None and idle_rate is not None else gross_s)
        overall = merge_quantiles(all_parts, (50, 90, 99))
        result = {
            "receivers": receivers, "messages": m, "interval_s": a.interval,
            "expected_deliveries": expected, "delivered": delivered,
            "all_received": delivered == expected,
            "send_errors": sum(1 for s in sends if s["error"]),
            "deliveries_per_s": round(delivered / max(1e-6, t_last - t_first), 1),
            "fanout_per_s_median": _median([r["fanout_per_s"] for r in per_msg if "fanout_per_s" in r]),
            "last_receive_ms": summary(lasts, digits=2),
            "receive_latency_ms": {k: round(v, 2) for k, v in overall.items()},
            "http_ms": summary([s["http_ms"] for s in sends], digits=2),
            "server_cpu_s": round(cpu_s, 3) if cpu_s is not None else None,
            "server_idle_cpu_per_s": round(idle_rate, 4) if idle_rate is not None else None,
            "cpu_us_per_delivery": round(cpu_s * 1e6 / delivered, 3)
            if cpu_s is not None and delivered else None,
            "cpu_us_per_delivery_gross": round(gross_s * 1e6 / delivered, 3)
            if gross_s is not None and delivered else None,
            "per_message": per_msg,
        }
        self.results["scenarios"]["broadcast"] = result
        self.samples["broadcast_last_ms"] = lasts
        self.samples["broadcast_receive_ms"] = expand_samples(all_parts)
        self.log(f"bench: broadcast: {delivered}/{expected} delivered, last receive p50 "
                 f"{result['last_receive_ms'].get('p50')} ms, "
                 f"{result['cpu_us_per_delivery']} µs CPU/delivery")
        return result

    # -- unicast ------------------------------------------------------------------------------

    def scenario_unicast(self):
        a = self.args
        self.ensure_connected()
        users = []
        for ans in self.workers.call_all("users", timeout=60):
            users.extend(u for _, u in ans["users"])
        m = a.unicast_messages
        prefix = f"{self.run_id}-u"
        if not users:
            result = {"error": "no user online", "messages": m}
            self.results["scenarios"]["unicast"] = result
            return result
        targets = self.http_targets
        self.log(f"bench: {m} unicast messages at {a.rate}/s to {len(users)} online users "
                 f"via {', '.join(t.base for t in targets)}")
        pool = Pool(a.http_concurrency)
        sends = {}
        errors = {}
        bar = progress(m, "unicast send", "msg", self.quiet)

        def send(k, user, target):
            msg_id = f"{prefix}{k}"
            t0 = time.time()
            try:
                status, body = target.post("/user/sendMessage", appID=a.app_id, userID=user,
                                           msgID=msg_id, message=a.message or f"unicast {k}",
                                           **{"from": "bench"})
                data = body.get("data") or {}
                if status == 200 and body.get("code") == 200 and data.get("sendResults"):
                    err = None
                else:
                    err = f"http {status} code {body.get('code')} " + str(
                        data.get("sendResultsErr") or body.get("detail") or "")
            except OSError as exc:
                err = f"{type(exc).__name__}"
            t1 = time.time()
            sends[msg_id] = (t0, t1, err)
            if err:
                errors[err] = errors.get(err, 0) + 1
            bar.update(1)

        t_start = time.time()
        for k in range(m):
            slot = t_start + k / a.rate if a.rate > 0 else 0
            now = time.time()
            if slot > now:
                gevent.sleep(slot - now)
            user = self.rng.choice(users)
            target = targets[k % len(targets)]
            pool.wait_available(timeout=a.http_timeout + 1)
            pool.spawn(send, k, user, target)
        pool.join(timeout=a.http_timeout * 2 + 5)
        t_sent = time.time()
        bar.close()
        ok = sum(1 for v in sends.values() if v[2] is None)
        got = self._wait_count(prefix, ok, a.wait, "unicast receive")
        collected = self.workers.call_all("collect", prefix=prefix, all_times=True, timeout=60)
        latencies = []
        received = 0
        for ans in collected:
            for msg_id, (count, first, _last, _times) in ans["messages"].items():
                received += count
                if msg_id in sends:
                    latencies.append((first - sends[msg_id][0]) * 1000)
        http_ms = [(v[1] - v[0]) * 1000 for v in sends.values()]
        result = {"messages": m, "target_rate_per_s": a.rate,
                  "achieved_rate_per_s": round(len(sends) / max(1e-6, t_sent - t_start), 1),
                  "online_users": len(users), "sent_ok": ok, "send_errors": errors,
                  "received": received, "lost": max(0, ok - got),
                  "latency_ms": summary(latencies, digits=3),
                  "http_ms": summary(http_ms, digits=3),
                  "http_targets": [t.base for t in targets]}
        self.results["scenarios"]["unicast"] = result
        self.samples["unicast_latency_ms"] = latencies
        lat = result["latency_ms"]
        self.log(f"bench: unicast: {received}/{ok} received, latency p50 {lat.get('p50')} ms, "
                 f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms")
        return result

    # -- churn --------------------------------------------------------------------------------

    def scenario_churn(self):
        a = self.args
        workers = self.start_workers()
        k = len(workers)
        snap0 = self.server_snapshot()
        self.log(f"bench: churn: {a.churn_rate} connect/login/leave per second for "
                 f"{a.churn_duration}s (hold {a.churn_hold}s)")
        pending = [w.send("churn", rate=a.churn_rate / k, duration=a.churn_duration,
                          hold=a.churn_hold, **self.common()) for w in workers.procs]
        bar = progress(int(a.churn_duration), "churn", "s", self.quiet)
        t0 = time.monotonic()
        ticks = 0
        limit = a.churn_duration + a.churn_hold + a.connect_timeout + 20
        while not all(p.ready() for p in pending) and time.monotonic() - t0 < limit:
            gevent.sleep(0.25)
            elapsed = min(int(time.monotonic() - t0), int(a.churn_duration))
            if elapsed > ticks:
                bar.update(elapsed - ticks)
                ticks = elapsed
        bar.close()
        answers = [p.get() if p.ready() else {} for p in pending]
        gevent.sleep(a.settle)
        snap1 = self.server_snapshot()
        counts = {}
        for ans in answers:
            for key, v in ans.items():
                if isinstance(v, (int, float)) and key not in ("id", "elapsed") and \
                        not isinstance(v, bool):
                    counts[key] = counts.get(key, 0) + v
        elapsed = max((ans.get("elapsed", 0) for ans in answers), default=a.churn_duration)
        failures = {key[5:]: v for key, v in counts.items() if key.startswith("fail ")}
        result = {"target_rate_per_s": a.churn_rate, "duration_s": a.churn_duration,
                  "hold_s": a.churn_hold, "attempted": counts.get("attempted", 0),
                  "logged_in": counts.get("logged_in", 0), "left": counts.get("left", 0),
                  "failed": sum(failures.values()), "failures": failures,
                  "close_timeouts": counts.get("close timeout", 0),
                  "skipped": counts.get("skipped (too many in flight)", 0),
                  "still_in_flight": counts.get("still_in_flight", 0),
                  "achieved_rate_per_s": round(counts.get("logged_in", 0) / max(1e-6, elapsed), 1),
                  "incomplete_workers": sum(1 for x in answers if not x.get("ok"))}
        if snap0:
            result.update({"server_rss_start_kb": procstat.total(snap0, "rss_kb"),
                           "server_rss_end_kb": procstat.total(snap1, "rss_kb"),
                           "server_cpu_s": round(procstat.delta(snap0, snap1, "cpu_s"), 3)})
        self.results["scenarios"]["churn"] = result
        self.log(f"bench: churn: {result['logged_in']} logins, {result['left']} clean leaves, "
                 f"{result['failed']} failed, {result['achieved_rate_per_s']}/s")
        return result

    # -- end ----------------------------------------------------------------------------------

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
                getattr(self, f"scenario_{name}")()


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[len(values) // 2]
