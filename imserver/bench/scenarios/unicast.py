"""unicast: ``--unicast-messages`` sends to random online users at ``--rate``/s, round
robin over the HTTP targets; latency from the HTTP call to the client's frame."""
import time

import gevent
from gevent.pool import Pool

from ..stats import summary


def _send_all(bench, users, prefix, receipts) -> "tuple[dict, dict, float, float]":
    """Every send at its slot: ({msgID: (start, end, error)}, {error: n}, start, end)."""
    a = bench.args
    targets = bench.http_targets
    pool = Pool(a.http_concurrency)
    sends, errors = {}, {}

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
        sends[msg_id] = (t0, time.time(), err)
        if err:
            errors[err] = errors.get(err, 0) + 1
        receipts.sent += 1

    t_start = time.time()
    for k in range(a.unicast_messages):
        slot = t_start + k / a.rate if a.rate > 0 else 0
        now = time.time()
        if slot > now:
            gevent.sleep(slot - now)
        user = bench.rng.choice(users)
        pool.wait_available(timeout=a.http_timeout + 1)
        pool.spawn(send, k, user, targets[k % len(targets)])
    pool.join(timeout=a.http_timeout * 2 + 5)
    return sends, errors, t_start, time.time()


def run(bench) -> dict:
    a = bench.args
    bench.ensure_connected()
    users = []
    for ans in bench.workers.call_all("users", timeout=60):
        users.extend(u for _, u in ans["users"])
    m = a.unicast_messages
    prefix = f"{bench.run_id}-u"
    if not users:
        result = {"error": "no user online", "messages": m}
        bench.results["scenarios"]["unicast"] = result
        return result
    targets = bench.http_targets
    bench.log(f"bench: {m} unicast messages at {a.rate}/s to {len(users)} online users "
              f"via {', '.join(t.base for t in targets)}")
    receipts = bench.receipts(prefix, m, "unicast", m)
    sends, errors, t_start, t_sent = _send_all(bench, users, prefix, receipts)
    ok = sum(1 for v in sends.values() if v[2] is None)
    got = receipts.wait(ok, a.wait)
    collected = bench.workers.call_all("collect", prefix=prefix, all_times=True, timeout=60)
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
    bench.results["scenarios"]["unicast"] = result
    bench.samples["unicast_latency_ms"] = latencies
    lat = result["latency_ms"]
    bench.log(f"bench: unicast: {received}/{ok} received, latency p50 {lat.get('p50')} ms, "
              f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms")
    return result
