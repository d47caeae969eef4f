"""connect: open -n connections and log each in as its own user, ``--concurrency`` at
once, in ``--mem-steps`` rounds; the rate, the failures by reason, the login latency,
and the server's memory after each round. Not one connection logged in is an error."""
import math
import time

import gevent

from ..stats import merge_quantiles


class NothingConnected(Exception):
    """Not one connection logged in: most likely nothing answers at the address."""


def _connect_round(bench, starts, count, deadline, bar, shown) -> "tuple[list, int, int]":
    """Open ``count`` more connections, spread over the workers, each worker going on
    from its index in ``starts``; the bar follows the workers' counts until every worker
    answered. (the answers, the connections logged in so far, the bar's count)."""
    a = bench.args
    workers = bench.workers.procs
    k = len(workers)
    counts = [count // k + (1 if i < count % k else 0) for i in range(k)]
    pending = [w.send("connect", count=counts[i], start=starts[i],
                      concurrency=max(1, a.concurrency // k),
                      deadline_s=max(0.0, deadline - time.monotonic()), **bench.common())
               for i, w in enumerate(workers)]
    for i, c in enumerate(counts):
        starts[i] += c
    interval = 0.1 if a.n <= 2000 else 0.25
    while True:
        finished = len(gevent.wait(pending, timeout=interval)) == len(pending)
        stats = bench.worker_stats()
        logged = sum(s["logged_in"] for s in stats)
        failed = sum(sum(s["failures"].values()) for s in stats)
        if logged + failed > shown:
            bar.update(logged + failed - shown)
            shown = logged + failed
        if failed:
            bar.set_postfix_str(f"failed {failed}")
        if finished or time.monotonic() > deadline + a.connect_timeout + 5:
            break
    return [p.get() if p.ready() else {"ok": False} for p in pending], logged, shown


def _connect_in_steps(bench, memory) -> list:
    """Open -n connections in --mem-steps rounds and read the server's RSS after each:
    the memory curve gets exactly one point a round, however fast the rounds go."""
    a = bench.args
    n = a.n
    steps = max(1, a.mem_steps)
    starts = [0] * len(bench.workers.procs)
    deadline = time.monotonic() + a.phase_timeout
    bar = bench.bar(n, "connect", "conn")
    answers, opened, shown = [], 0, 0
    for i in range(steps):
        mark = math.ceil(n * (i + 1) / steps)
        got, logged, shown = _connect_round(bench, starts, mark - opened, deadline, bar, shown)
        answers += got
        opened = mark
        rss = bench.server_rss()
        if rss is not None:
            memory.append([logged, rss])
    bar.close()
    return answers


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
    n = a.n
    bench.baseline = bench.server_snapshot()
    base_rss = bench.server_rss(bench.baseline)
    memory = [[0, base_rss]] if base_rss is not None else []
    bench.log(f"bench: connecting {n} clients ({a.driver}) to {', '.join(bench.ws_urls)} "
              f"from {', '.join(bench.source_ips) or 'any source'}, concurrency {a.concurrency}")
    t0 = time.time()
    answers = _connect_in_steps(bench, memory)
    stats = workers.call_all("stats", samples=True, timeout=30)
    result = _result(bench, answers, stats, memory, base_rss, t0)
    bench.results["scenarios"]["connect"] = result
    bench.samples["memory_curve"] = memory
    if not result["connected"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in result["failures"].items()) or "none"
        raise NothingConnected(
            f"no connection succeeded: 0 of {n} to {', '.join(bench.ws_urls)} (failures: "
            f"{reasons}); is a server listening there?")
    bench.connected = True
    if a.heartbeat_interval > 0:
        workers.call_all("heartbeats", interval=a.heartbeat_interval, max_seconds=a.max_seconds)
    bench.log(f"bench: {result['connected']}/{n} logged in in "
              f"{result['seconds_to_all_logged_in']:.2f}s ({result['rate_per_s']}/s), "
              f"{result['failed']} failed")
    return result
