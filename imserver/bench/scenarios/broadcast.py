"""broadcast: ``--messages`` room broadcasts every ``--interval`` s; deliveries counted by
the clients, the fan-out rate, the time from the HTTP call to the last client, and the
server's CPU per delivery net of its idle CPU (measured first)."""
import json
import statistics
import sys
import time

import gevent
from gevent import subprocess

from .. import procstat
from ..harness import ROOT
from ..stats import expand_samples, merge_quantiles, summary

BROADCAST_SENDER = "bench-sender"


def _idle_cpu_rate(bench, seconds):
    """(the server's CPU seconds per second while idle, the snapshot ending the probe):
    heartbeats and sweeps, to be taken off the broadcast window."""
    idle0, idle_t0 = bench.server_snapshot(), time.time()
    bench.wait_seconds(seconds, "broadcast: server idle CPU")
    cpu0, cpu_t0 = bench.server_snapshot(), time.time()
    rate = procstat.delta(idle0, cpu0, "cpu_s") / max(1e-6, cpu_t0 - idle_t0) if idle0 else None
    return rate, cpu0, cpu_t0


def _send_all(bench, prefix, t_first, receipts) -> list:
    a = bench.args
    sends = []
    for k in range(a.messages):
        slot = t_first + k * a.interval
        now = time.time()
        if slot > now:
            gevent.sleep(slot - now)
        msg_id = f"{prefix}{k}"
        t0 = time.time()
        try:
            status, body = bench.http.post("/user/sendMessageAll", appID=a.app_id,
                                           userID=BROADCAST_SENDER, msgID=msg_id,
                                           message=a.message or f"broadcast {k}")
            err = None if status == 200 and body.get("code") == 200 else f"{status} {body}"
        except OSError as exc:
            err = f"{type(exc).__name__}: {exc}"
        t1 = time.time()
        sends.append({"msg_id": msg_id, "t0": t0, "http_ms": round((t1 - t0) * 1000, 2),
                      "error": err})
        receipts.sent += 1
    return sends


def _per_message(send, collected):
    """(the row of one broadcast, its receive-time parts for the merged quantiles)."""
    parts, count, first, last = [], 0, None, None
    t0 = send["t0"]
    for ans in collected:
        entry = ans["messages"].get(send["msg_id"])
        if not entry:
            continue
        c, lo, hi, samples = entry
        count += c
        last = hi if last is None else max(last, hi)
        first = lo if first is None else min(first, lo)
        parts.append((c, [(x - t0) * 1000 for x in samples]))
    row = {"msg_id": send["msg_id"], "http_ms": send["http_ms"], "received": count,
           "error": send["error"]}
    if last is None:
        return row, []
    q = merge_quantiles(parts, (50, 99))
    row.update({"first_receive_ms": round((first - t0) * 1000, 2),
                "last_receive_ms": round((last - t0) * 1000, 2),
                "p50_ms": round(q["p50"], 2), "p99_ms": round(q["p99"], 2),
                "fanout_per_s": round(count / max(1e-6, last - t0), 1)})
    return row, parts


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[len(values) // 2]


def _cpu(gross_s, idle_rate, seconds, delivered) -> dict:
    cpu_s = (max(0.0, gross_s - idle_rate * seconds)
             if gross_s is not None and idle_rate is not None else gross_s)
    return {"server_cpu_s": round(cpu_s, 3) if cpu_s is not None else None,
            "server_idle_cpu_per_s": round(idle_rate, 4) if idle_rate is not None else None,
            "cpu_us_per_delivery": round(cpu_s * 1e6 / delivered, 3)
            if cpu_s is not None and delivered else None,
            "cpu_us_per_delivery_gross": round(gross_s * 1e6 / delivered, 3)
            if gross_s is not None and delivered else None}


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
FLOOR_BYTES = 150  # when the frame cannot be rebuilt (history off, another server)
FLOOR_MAX_SOCKETS = 18000  # one process of the floor holds them: within 20,000 open files


def frame_bytes(bench, msg_id: str) -> "tuple[int, str]":
    """(bytes on the wire of the broadcast's frame, how it was found): the push frame
    rebuilt from the app room's newest stored message (as the node encodes it: compact JSON
    plus the 2- or 4-byte WebSocket header); FLOOR_BYTES when history has none."""
    try:
        status, body = bench.http.get("/room/history", appID=bench.args.app_id, room="",
                                      limit=1)
        pubs = (body.get("data") or {}).get("publications") or [] if status == 200 else []
    except (OSError, ValueError, AttributeError):
        pubs = []
    if not pubs:
        return FLOOR_BYTES, "default (no stored message to rebuild the frame from)"
    data = pubs[-1]
    frame = _dumps({"seq": data.get("msgID") or msg_id, "cmd": "msg", "response": {
        "code": 200, "codeMsg": "Ok", "data": data}}).encode()
    return len(frame) + (2 if len(frame) < 126 else 4), "rebuilt from /room/history"


def send_floor(bench, receivers: int, msg_id: str) -> dict:
    """Run imserver.bench.send_floor ``--send-floor`` times (in its own process: it forks)
    with as many sockets as receivers and the frame's size; the runs and their median."""
    a = bench.args
    size, how = frame_bytes(bench, msg_id)
    n = max(1, min(receivers, FLOOR_MAX_SOCKETS))
    runs = []
    for i in range(a.send_floor):
        bench.log(f"bench: send floor run {i + 1}/{a.send_floor}: {n} sockets x "
                  f"{a.send_floor_rounds} frames of {size} bytes")
        try:
            out = subprocess.run([sys.executable, "-m", "imserver.bench.send_floor", str(n),
                                  str(a.send_floor_rounds), str(size), "--json"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
            runs.append({"error": f"{type(exc).__name__}: {exc}"})
    totals = [r["total_us"] for r in runs if "total_us" in r]
    return {"runs": runs, "bytes": size, "bytes_from": how, "sockets": n,
            "total_us_median": round(statistics.median(totals), 3) if totals else None}


def floor_ratios(result: dict, floor: dict) -> dict:
    f = floor.get("total_us_median")
    if not f:
        return {}
    net, gross = result.get("cpu_us_per_delivery"), result.get("cpu_us_per_delivery_gross")
    return {"ratio_to_floor": round(net / f, 3) if net is not None else None,
            "ratio_to_floor_gross": round(gross / f, 3) if gross is not None else None}


def run(bench) -> dict:
    a = bench.args
    bench.ensure_connected()
    receivers = sum(s["live"] for s in bench.worker_stats())
    prefix = f"{bench.run_id}-b"
    expected = receivers * a.messages
    bench.log(f"bench: broadcasting {a.messages} messages to {receivers} receivers, "
              f"every {a.interval}s")
    idle_rate, cpu0, cpu_t0 = _idle_cpu_rate(bench, a.idle_probe)
    receipts = bench.receipts(prefix, expected, "broadcast", a.messages)
    t_first = time.time()
    sends = _send_all(bench, prefix, t_first, receipts)
    receipts.wait(expected, a.wait)
    cpu1, cpu_t1 = bench.server_snapshot(), time.time()
    collected = bench.workers.call_all("collect", prefix=prefix, samples=200, timeout=60)
    rows = [_per_message(send, collected) for send in sends]
    per_msg = [row for row, _ in rows]
    all_parts = [p for _, parts in rows for p in parts]
    lasts = [r["last_receive_ms"] for r in per_msg if "last_receive_ms" in r]
    delivered = sum(r["received"] for r in per_msg)
    t_last = max((s["t0"] + r.get("last_receive_ms", 0) / 1000 for s, r in zip(sends, per_msg)),
                 default=t_first)
    gross_s = procstat.delta(cpu0, cpu1, "cpu_s") if cpu0 else None
    overall = merge_quantiles(all_parts, (50, 90, 99))
    result = {
        "receivers": receivers, "messages": a.messages, "interval_s": a.interval,
        "expected_deliveries": expected, "delivered": delivered,
        "all_received": delivered == expected,
        "send_errors": sum(1 for s in sends if s["error"]),
        "deliveries_per_s": round(delivered / max(1e-6, t_last - t_first), 1),
        "fanout_per_s_median": _median([r.get("fanout_per_s") for r in per_msg]),
        "last_receive_ms": summary(lasts, digits=2),
        "receive_latency_ms": {k: round(v, 2) for k, v in overall.items()},
        "http_ms": summary([s["http_ms"] for s in sends], digits=2),
        **_cpu(gross_s, idle_rate, cpu_t1 - cpu_t0, delivered),
        "per_message": per_msg,
    }
    if a.send_floor > 0:
        floor = send_floor(bench, receivers, sends[-1]["msg_id"] if sends else "")
        result["send_floor"] = floor
        result.update(floor_ratios(result, floor))
    bench.results["scenarios"]["broadcast"] = result
    bench.samples["broadcast_last_ms"] = lasts
    bench.samples["broadcast_receive_ms"] = expand_samples(all_parts)
    bench.log(f"bench: broadcast: {delivered}/{expected} delivered, last receive p50 "
              f"{result['last_receive_ms'].get('p50')} ms, "
              f"{result['cpu_us_per_delivery']} µs CPU/delivery net of idle"
              + (f", {result['ratio_to_floor']} x the send floor "
                 f"({result['send_floor']['total_us_median']} µs)"
                 if result.get("ratio_to_floor") is not None else ""))
    return result
