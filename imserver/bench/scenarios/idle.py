"""idle: hold the connections ``--duration`` seconds with heartbeats; the server's KB
per connection (RSS after minus RSS before connecting, over N) and the drops."""
from .. import procstat


def _dropped(before, after) -> dict:
    """Connections the server ended during the hold, by reason."""
    dropped = {}
    for s0, s1 in zip(before, after):
        for reason, c in s1["dropped"].items():
            d = c - s0["dropped"].get(reason, 0)
            if d:
                dropped[reason] = dropped.get(reason, 0) + d
    return dropped


def _server_memory(bench, snap, live) -> dict:
    base = procstat.total(bench.baseline, "rss_kb")
    now = procstat.total(snap, "rss_kb")
    return {"server_rss_before_kb": base, "server_rss_after_kb": now,
            "kb_per_conn": round((now - base) / live, 2) if live else None,
            "per_process": {str(pid): {"cmd": procstat.proc_name(pid),
                                       "rss_before_kb": bench.baseline[pid]["rss_kb"],
                                       "rss_after_kb": v["rss_kb"]}
                            for pid, v in snap.items() if pid in bench.baseline}}


def run(bench) -> dict:
    a = bench.args
    bench.ensure_connected()
    before = bench.worker_stats()
    live0 = sum(s["live"] for s in before)
    hb0 = sum(s["heartbeats_sent"] for s in before)
    bench.log(f"bench: holding {live0} connections idle for {a.duration}s "
              f"(heartbeat every {a.heartbeat_interval}s)")
    bench.wait_seconds(a.duration, "idle")
    after = bench.worker_stats()
    snap = bench.server_snapshot()
    dropped = _dropped(before, after)
    live = sum(s["live"] for s in after)
    replies = {}
    for s in after:
        for key, c in s["replies"].items():
            if key.startswith("heartbeat"):
                replies[key] = replies.get(key, 0) + c
    result = {"duration_s": a.duration, "heartbeat_interval_s": a.heartbeat_interval,
              "connections_at_start": live0, "connections_at_end": live,
              "dropped": sum(dropped.values()), "dropped_by_reason": dropped,
              "heartbeats_sent": sum(s["heartbeats_sent"] for s in after) - hb0,
              "heartbeat_replies_total": replies,
              "client_rss_kb": [s["rss_kb"] for s in after]}
    if bench.baseline:
        result.update(_server_memory(bench, snap, live))
    result["client_kb_per_conn"] = round(
        sum(s["rss_kb"] for s in after) / live, 2) if live else None
    bench.results["scenarios"]["idle"] = result
    bench.log(f"bench: idle: {live} live, {result['dropped']} dropped, "
              f"server {result.get('kb_per_conn')} KB/conn")
    return result
