"""The soak's figures from what its parts recorded, and the verdict on them."""
from collections import Counter

from ..stats import summary


def unicast(traffic, steady, a) -> dict:
    acc = [x for x in traffic.unicasts if x["accepted"]]
    missing, unexpected, dups, latencies = [], 0, 0, []
    refused, refused_by_phase, refused_delivered = Counter(), Counter(), Counter()
    by_entry = {e: Counter() for e in "AB"}
    for x in traffic.unicasts:
        got = steady.received.get(x["msg_id"], ())
        mine = [t for u, t in got if u == x["user"]]
        unexpected += sum(1 for u, _ in got if u != x["user"])
        by_entry[x["entry"]]["accepted" if x["accepted"] else "refused"] += 1
        if x["accepted"]:
            if not mine:
                missing.append(x["msg_id"])
            else:
                latencies.append((min(mine) - x["t_wall"]) * 1000)
                dups += len(mine) - 1
        else:
            refused[x["refused"]] += 1
            refused_by_phase[f"{x.get('phase')}: {x['refused']}"] += 1
            if mine:
                refused_delivered[x["refused"]] += 1
    return {
        "sent": len(traffic.unicasts), "target_rate_per_s": a.rate,
        "accepted": len(acc), "delivered": len(acc) - len(missing),
        "missing": len(missing), "missing_msg_ids": missing[:1000],
        "accepted_without_dedup": sum(1 for x in acc if x.get("err")),
        "refused": sum(refused.values()), "refused_by_answer": dict(refused.most_common()),
        "refused_outside_events": sum(n for k, n in refused_by_phase.items()
                                      if k.startswith("normal: ")),
        "refused_by_phase": dict(sorted(refused_by_phase.items())),
        "refused_but_delivered": dict(refused_delivered),
        "by_entry": {e: dict(c) for e, c in by_entry.items()},
        "duplicates": dups, "to_the_wrong_user": unexpected,
        "latency_ms": summary(latencies, digits=2),
        "http_ms": summary([x["ms"] for x in traffic.unicasts], digits=2)}


def broadcast(traffic, steady, a) -> dict:
    rows, missing = [], []
    everyone = len(steady.set)
    for x in traffic.broadcasts:
        reached = len(steady.reached(x["msg_id"]) & steady.set)
        must = traffic.must_reach(x)
        rows.append({"msg_id": x["msg_id"], "t": x["t"], "entry": x["entry"],
                     "phase": x.get("phase"), "accepted": x["accepted"], "refused": x["refused"],
                     "local_only": x["local_only"], "must_reach_all": must,
                     "steady_reached": reached})
        if must and reached < everyone:
            missing.append({"msg_id": x["msg_id"], "t": x["t"], "entry": x["entry"],
                            "phase": x.get("phase"), "steady_missing": everyone - reached})
    sent = traffic.broadcasts
    return {
        "sent": len(sent), "interval_s": a.broadcast_interval,
        "accepted": sum(1 for x in sent if x["accepted"]),
        "accepted_local_only": sum(1 for x in sent if x["local_only"]),
        "must_reach_all": sum(1 for x in rows if x["must_reach_all"]),
        "reached_all": sum(1 for x in rows if x["must_reach_all"]
                           and x["steady_reached"] == everyone),
        "missing": missing,
        "refused_by_answer": dict(Counter(x["refused"] for x in sent if not x["accepted"])),
        "refused_outside_events": sum(1 for x in sent
                                      if not x["accepted"] and x.get("phase") == "normal"),
        "per_broadcast": rows}


def steady_users(steady, a) -> dict:
    driver = steady.driver
    return {"users": len(steady.users), "node": "A", "connected_at_end": steady.live_at_end,
            "dropped": len(steady.dropped), "dropped_list": steady.dropped,
            "heartbeat_interval_s": a.heartbeat_interval,
            "heartbeats_sent": driver.heartbeats_sent if driver else 0,
            "replies": dict(driver.replies if driver else {}), "pushes": dict(steady.pushes)}


def _by_key(counter) -> dict:
    """{(phase, node, reason): n} as {"phase node: reason": n}, sorted."""
    out = Counter()
    for (phase, entry, reason), n in counter.items():
        out[f"{phase} {entry}: {reason}"] += n
    return dict(sorted(out.items()))


def _outside_events(counter) -> int:
    return sum(n for (phase, _, _), n in counter.items() if phase == "normal")


def churn(ch, a) -> dict:
    counts, dur = ch.counts, a.duration
    reasons = Counter()
    for (_, _, reason), n in ch.failed.items():
        reasons[reason] += n
    return {
        "target_rate_per_s": a.churn_rate, "churner_ids": a.churners,
        "hold_s": [a.churn_hold_min, a.churn_hold_max],
        "attempted": counts["attempted"], "logged_in": counts["logged_in"],
        "left_cleanly": counts["left"],
        "achieved_rate_per_s": round(counts["logged_in"] / dur, 2),
        "attempted_rate_per_s": round(counts["attempted"] / dur, 2),
        "logins_by_node": dict(ch.by_node),
        "failed": sum(ch.failed.values()),
        "failed_outside_events": _outside_events(ch.failed),
        "failures_by_phase_node_reason": _by_key(ch.failed),
        "failures_by_reason": dict(reasons.most_common()),
        "ended_otherwise": sum(ch.ended.values()),
        "ended_otherwise_outside_events": _outside_events(ch.ended),
        "ended_otherwise_by_phase_node_reason": _by_key(ch.ended),
        "skipped": counts["skipped (every churner ID online)"],
        "pushes_received": {k[7:]: v for k, v in counts.items() if k.startswith("pushes ")}}


# -- verdict ----------------------------------------------------------------------------------

def _delivery_problems(r) -> "list[str]":
    problems = []
    u = r.get("unicast", {})
    if not u.get("accepted"):
        problems.append("no unicast was accepted")
    elif u["delivered"] != u["accepted"]:
        problems.append(f"unicast: {u['delivered']} of {u['accepted']} accepted messages "
                        f"delivered; missing {', '.join(u['missing_msg_ids'][:10])}")
    b = r.get("broadcast", {})
    if b.get("missing"):
        problems.append(f"broadcast: {len(b['missing'])} accepted broadcast(s) missed steady "
                        "users: " + ", ".join(f"{m['msg_id']} (entry {m['entry']}, "
                                              f"{m['phase']}, {m['steady_missing']} missing)"
                                              for m in b["missing"][:5]))
    outside = {k: v for k, v in (u.get("refused_by_phase") or {}).items()
               if k.startswith("normal: ")}
    if outside or b.get("refused_outside_events"):
        answers = ", ".join(f"{k[len('normal: '):]}: {v}" for k, v in outside.items())
        problems.append(f"sends refused while no fault was injected: unicast "
                        f"{sum(outside.values())} ({answers}), "
                        f"broadcast {b.get('refused_outside_events', 0)}")
    return problems


def _user_problems(r) -> "list[str]":
    problems = []
    c = r.get("churn", {})
    if c.get("failed_outside_events") or c.get("ended_otherwise_outside_events"):
        problems.append(f"churn while no fault was injected: {c['failed_outside_events']} "
                        f"connect/login failures, {c['ended_otherwise_outside_events']} "
                        "connections ended by the server")
    s = r.get("steady", {})
    if s.get("dropped"):
        problems.append(f"{s['dropped']} steady user(s) dropped: " + ", ".join(
            f"{d['user']} at {d['t']}s ({d['reason']})" for d in s["dropped_list"][:5]))
    return problems


def _run_problems(r, recovery, recovery_timeout) -> "list[str]":
    problems = []
    m = r.get("memory", {})
    if m.get("within_tolerance") is False:
        problems.append(f"node A worker RSS {m['end_kb'] / 1024:.1f} MB at the end, over the "
                        f"limit {m['limit_kb'] / 1024:.1f} MB (baseline "
                        f"{m['baseline_kb'] / 1024:.1f} MB; {m['tolerance']})")
    elif m.get("within_tolerance") is None:
        problems.append("no baseline or end RSS")
    for what in ("redis", "node_b"):
        rec = recovery.get(what)
        if rec is None:
            problems.append(f"the {what} event did not complete")
        elif not rec["recovered"]:
            problems.append(f"no recovery after the {what} event within "
                            f"{recovery_timeout:g}s: {rec.get('last_seen')}")
    if m.get("worker_restarts"):
        problems.append(f"node A's worker was replaced: {m['worker_restarts']}")
    if r.get("aborted"):
        problems.append(f"aborted: {r['aborted']}")
    return problems


def verdict(r, recovery, recovery_timeout) -> dict:
    """Pass when every accepted message reached its steady user(s), nothing was refused
    or failed outside the event windows, no steady user was dropped, both recoveries
    were seen and node A's worker stayed within its memory limit."""
    problems = (_delivery_problems(r) + _user_problems(r)
                + _run_problems(r, recovery, recovery_timeout))
    return {"ok": not problems, "problems": problems}
