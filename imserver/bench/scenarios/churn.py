"""churn: connect, log in, hold ``--churn-hold`` s and leave, ``--churn-rate`` times a
second for ``--churn-duration`` s, spread over the workers; the rate achieved, the
failures, and the server's RSS at the start and the end."""
import gevent

from .. import procstat
from .connect import NothingConnected


def _sum_counts(answers) -> dict:
    counts = {}
    for ans in answers:
        for key, v in ans.items():
            if isinstance(v, (int, float)) and key not in ("id", "elapsed") and \
                    not isinstance(v, bool):
                counts[key] = counts.get(key, 0) + v
    return counts


def run(bench) -> dict:
    a = bench.args
    workers = bench.start_workers()
    k = len(workers)
    snap0 = bench.server_snapshot()
    bench.log(f"bench: churn: {a.churn_rate} connect/login/leave per second for "
              f"{a.churn_duration}s (hold {a.churn_hold}s)")
    pending = [w.send("churn", rate=a.churn_rate / k, duration=a.churn_duration,
                      hold=a.churn_hold, **bench.common()) for w in workers.procs]
    bench.wait_seconds(a.churn_duration, "churn", done=lambda: all(p.ready() for p in pending),
                       limit=a.churn_duration + a.churn_hold + a.connect_timeout + 20, poll=0.25)
    answers = [p.get() if p.ready() else {} for p in pending]
    gevent.sleep(a.settle)
    snap1 = bench.server_snapshot()
    counts = _sum_counts(answers)
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
    bench.results["scenarios"]["churn"] = result
    if result["attempted"] and not result["logged_in"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none"
        raise NothingConnected(
            f"no churn cycle logged in: 0 of {result['attempted']} to "
            f"{', '.join(bench.ws_urls)} (failures: {reasons}); is a server listening there?")
    bench.log(f"bench: churn: {result['logged_in']} logins, {result['left']} clean leaves, "
              f"{result['failed']} failed, {result['achieved_rate_per_s']}/s")
    return result
