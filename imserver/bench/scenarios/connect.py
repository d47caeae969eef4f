"""connect: open -n connections and log each in as its own user, ``--concurrency`` at
once; the rate, the failures by reason, the login latency, and the server's memory
sampled ``--mem-steps`` times on the way."""
import math
import time

import gevent

from ..stats import merge_quantiles


def _follow(bench, pending, n, memory, t0):
    """Update the bar from the workers' counts until every worker answered, and read
    the server's RSS each time another 1/--mem-steps of the connections is in."""
    a = bench.args
    steps = max(1, a.mem_steps)
    thresholds = [math.ceil(n * (i + 1) / steps) for i in range(steps)]
    bar = bench.bar(n, "connect", "conn")
    done_n = 0
    while True:
        finished = all(p.ready() for p in pending)
        stats = bench.worker_stats()
        logged = sum(s["logged_in"] for s in stats)
        failed = sum(sum(s["failures"].values()) for s in stats)
        if logged + failed > done_n:
            bar.update(logged + failed - done_n)
            done_n = logged + failed
        if failed:
            bar.set_postfix_str(f"failed {failed}")
        if thresholds and (logged >= thresholds[0] or finished):
            rss = bench.server_rss()
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


def _login_latency_ms(stats) -> dict:
    q = merge_quantiles([(s["logged_in"], s["login_samples"]) for s in stats], (50, 90, 99))
    login_ms = {k: round(v * 1000, 2) for k, v in q.items()}
    if q:
        login_ms["max"] = round(1000 * max(s["login_s"]["max"] for s in stats
                                           if s["login_s"]), 2)
    return login_ms


def _result(bench, answers, stats, memory, base_rss, t0) -> dict:
    a = bench.args
    failures = {}
    for s in stats:
        for reason, c in s["failures"].items():
            failures[reason] = failures.get(reason, 0) + c
    connected = sum(s["logged_in"] for s in stats)
    first = min((s["first_start"] for s in stats if s["first_start"]), default=t0)
    last = max((s["last_login"] for s in stats if s["last_login"]), default=first)
    seconds = max(1e-6, last - first)
    after_rss = bench.server_rss()
    state = bench.system_state()
    result = {
        "requested": a.n, "connected": connected, "failed": sum(failures.values()),
        "failures": failures, "seconds_to_all_logged_in": round(seconds, 3),
        "rate_per_s": round(connected / seconds, 1), "login_latency_ms": _login_latency_ms(stats),
        "concurrency": a.concurrency,
        "incomplete_workers": sum(1 for x in answers if not x.get("ok")),
        "server_rss_before_kb": base_rss, "server_rss_after_kb": after_rss,
        "memory_curve": memory,
        "client_rss_kb": [s["rss_kb"] for s in stats],
        "server_state_connections": (state or {}).get("connections"),
        "enter_exit_frames_received": sum(s["push_cmds"].get("enter", 0) +
                                          s["push_cmds"].get("exit", 0) for s in stats),
    }
    if base_rss is not None and connected:
        result["server_kb_per_conn_after_connect"] = round(
            (result["server_rss_after_kb"] - base_rss) / connected, 2)
    return result


def run(bench) -> dict:
    a = bench.args
    workers = bench.start_workers()
    k = len(workers)
    n = a.n
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    bench.baseline = bench.server_snapshot()
    base_rss = bench.server_rss(bench.baseline)
    memory = [[0, base_rss]] if base_rss is not None else []
    bench.log(f"bench: connecting {n} clients ({a.driver}) to {', '.join(bench.ws_urls)} "
              f"from {', '.join(bench.source_ips) or 'any source'}, concurrency {a.concurrency}")
    per_conc = max(1, a.concurrency // k)
    t0 = time.time()
    pending = [w.send("connect", count=counts[i], start=0, concurrency=per_conc,
                      deadline_s=a.phase_timeout, **bench.common())
               for i, w in enumerate(workers.procs)]
    _follow(bench, pending, n, memory, t0)
    answers = [p.get() if p.ready() else {"ok": False} for p in pending]
    stats = workers.call_all("stats", samples=True, timeout=30)
    result = _result(bench, answers, stats, memory, base_rss, t0)
    bench.results["scenarios"]["connect"] = result
    bench.samples["memory_curve"] = memory
    bench.connected = True
    if a.heartbeat_interval > 0:
        workers.call_all("heartbeats", interval=a.heartbeat_interval, max_seconds=a.max_seconds)
    bench.log(f"bench: {result['connected']}/{n} logged in in "
              f"{result['seconds_to_all_logged_in']:.2f}s ({result['rate_per_s']}/s), "
              f"{result['failed']} failed")
    return result
