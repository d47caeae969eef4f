"""The soak's results on disk: results.json, results.md (summary, events, refusals and
churn failures by phase), rss.png (node A's worker memory with the events, and the
traffic per second) and sends.jsonl (every send and what reached whom)."""
import json
import sys

from .. import report

SUMMARY_HEADER = ("figure", "value")
WINDOW_COLORS = {"redis_down": "tab:red", "redis_recovery": "tab:orange",
                 "node_b_down": "tab:purple", "node_b_recovery": "tab:pink"}


def _mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f}"


def _memory_rows(m):
    return [("node A worker RSS baseline → end (MB)",
             f"{_mb(m.get('baseline_kb'))} → {_mb(m.get('end_kb'))} "
             f"({m.get('delta_pct', '–')} %; max during run {_mb(m.get('max_kb'))}; "
             f"limit {_mb(m.get('limit_kb'))})")]


def _unicast_rows(u):
    refused = ", ".join(f"{k}: {v}" for k, v in u["refused_by_answer"].items()) or "none"
    lat = u["latency_ms"]
    return [("unicast delivered / accepted", f"{u['delivered']} / {u['accepted']}"
             f" (sent {u['sent']}, duplicates {u['duplicates']}, wrong user "
             f"{u['to_the_wrong_user']})"),
            ("unicast refused by answer",
             refused + f" ({u['refused_outside_events']} outside the event windows)"),
            ("unicast latency p50 / p99 / max (ms)",
             f"{lat.get('p50')} / {lat.get('p99')} / {lat.get('max')}")]


def _churn_rows(c):
    reasons = ", ".join(f"{k}: {v}" for k, v in c["failures_by_reason"].items()) or "none"
    return [("churn logins achieved / target (/s)",
             f"{c['achieved_rate_per_s']} / {c['target_rate_per_s']} "
             f"({c['logged_in']} logins, {c['left_cleanly']} clean leaves)"),
            ("churn failures",
             f"{c['failed']} ({c['failed_outside_events']} outside the event windows): "
             + reasons)]


def summary_rows(r) -> "list[tuple[str, str]]":
    u, b, s, c, m = (r.get(k, {}) for k in ("unicast", "broadcast", "steady", "churn", "memory"))
    rows = _memory_rows(m) if m else []
    if u:
        rows += _unicast_rows(u)
    if b:
        rows += [("broadcasts reaching all steady users / required",
                  f"{b['reached_all']} / {b['must_reach_all']} (sent {b['sent']}, accepted "
                  f"{b['accepted']}, of which local-only {b['accepted_local_only']})")]
    if s:
        rows += [("steady users dropped", f"{s['dropped']} of {s['users']}")]
    if c:
        rows += _churn_rows(c)
    for what, rec in (r.get("recovery") or {}).items():
        rows.append((f"recovery after {what}",
                     ("yes, " + ", ".join(f"{k} {v}s" for k, v in rec["seconds"].items()))
                     if rec["recovered"] else f"NO ({rec.get('last_seen')})"))
    v = r.get("verdict") or {}
    rows.append(("verdict", "PASS" if v.get("ok") else "FAIL: " + "; ".join(v.get("problems", []))))
    return rows


def summary_table(r) -> str:
    return report.md_table(SUMMARY_HEADER, summary_rows(r))


def markdown(r, plots) -> str:
    meta = r.get("meta", {})
    out = report.heading("imserver.bench soak", r, [
        f"- run id `{r.get('run_id')}`, {meta.get('seconds', '?')} s in all"])
    out += ["", summary_table(r), "", "## Events", ""]
    out.append(report.md_table(("t (s)", "clock", "event", "details"), [
        (f"{e['t']:.1f}", e["at"], e["event"],
         ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("event", "t", "at")))
        for e in r.get("events", [])]))
    u = r.get("unicast")
    if u:
        out += ["", "## Unicast refusals by phase", "",
                report.md_table(("phase: answer", "sends"), u["refused_by_phase"].items())]
    c = r.get("churn")
    if c:
        ends = [(f"{k} (after login)", v)
                for k, v in c["ended_otherwise_by_phase_node_reason"].items()]
        out += ["", "## Churn failures and other ends by phase", "",
                report.md_table(("phase node: reason", "cycles"),
                                list(c["failures_by_phase_node_reason"].items()) + ends)]
    out.append("")
    for name in plots:
        out += [f"![{name}]({name})", ""]
    return "\n".join(out)


def _memory_axis(ax, r, samples, end_t):
    mem = r.get("memory") or {}
    ax.plot([s["t"] for s in samples], [s["a_worker_rss_kb"] / 1024 for s in samples],
            marker=".", label="node A worker RSS")
    bs = [s for s in mem.get("samples", []) if s.get("b_worker_rss_kb")]
    if bs:
        ax.plot([s["t"] for s in bs], [s["b_worker_rss_kb"] / 1024 for s in bs], ".",
                color="tab:gray", alpha=0.6, label="node B worker RSS")
    if mem.get("baseline_kb"):
        ax.axhline(mem["baseline_kb"] / 1024, color="tab:green", ls="--", lw=1, label="baseline")
    if mem.get("limit_kb"):
        ax.axhline(mem["limit_kb"] / 1024, color="tab:red", ls=":", lw=1, label="end limit")
    for e in r.get("events", []):
        if e["event"] in ("start", "traffic_stop", "end"):
            ax.axvline(e["t"], color="black", lw=0.6, ls="-.")
            ax.annotate(e["event"].replace("_", " "), (e["t"], ax.get_ylim()[1]), fontsize=7,
                        rotation=90, va="top", ha="right")
    ax.set_ylabel("RSS (MB)")
    ax.set_title("Soak: node A worker memory, with the Redis outage and node B's kill")
    ax.grid(True, alpha=0.3)


def _traffic_axis(ax, r, sends, logins, end_t):
    """Per-bucket traffic: accepted and refused unicasts, churn logins."""
    bucket = float(max(1, round((r.get("settings") or {}).get("duration", 600) / 60)))
    n = int(max(end_t, 1.0) // bucket) + 1
    acc, ref, log_ = [0] * n, [0] * n, [0] * n
    for x in sends:
        if x.get("t") is not None and 0 <= x["t"] < n * bucket:
            (acc if x["accepted"] else ref)[int(x["t"] // bucket)] += 1
    for t in logins:
        if 0 <= t < n * bucket:
            log_[int(t // bucket)] += 1
    xs = [i * bucket + bucket / 2 for i in range(n)]
    ax.plot(xs, [v / bucket for v in acc], label="unicasts accepted /s", color="tab:blue")
    ax.plot(xs, [v / bucket for v in ref], label="unicasts refused /s", color="tab:red")
    ax.plot(xs, [v / bucket for v in log_], label="churn logins /s", color="tab:green")
    ax.set_xlabel("seconds since the start of churn and traffic")
    ax.set_ylabel(f"per second ({bucket:g} s buckets)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=7, ncol=3)


def plot(out_dir, r, sends, logins) -> "list[str]":
    samples = [s for s in (r.get("memory") or {}).get("samples", []) if s.get("a_worker_rss_kb")]
    if len(samples) < 2:
        return []
    fig, (ax, ax2) = report.pyplot().subplots(2, 1, figsize=(11, 7), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 2]})
    end_t = samples[-1]["t"]
    _memory_axis(ax, r, samples, end_t)
    for w in r.get("windows", []):
        end = w["end"] if w["end"] is not None else end_t
        for axis in (ax, ax2):
            axis.axvspan(w["start"], end, color=WINDOW_COLORS.get(w["phase"], "tab:gray"),
                         alpha=0.18, label=w["phase"].replace("_", " ") if axis is ax else None)
    ax.legend(loc="lower right", fontsize=7, ncol=3)
    _traffic_axis(ax2, r, sends, logins, end_t)
    return [report.save_figure(fig, out_dir, "rss.png")]


def sends_jsonl(soak) -> str:
    """One line per send: the record and who got it (unicast: [user, seconds after the
    send]; broadcast: how many)."""
    received = soak.steady.received
    lines = []
    for x in soak.traffic.warmup + soak.traffic.unicasts + soak.traffic.broadcasts:
        got = [[u, round(t - x["t_wall"], 4)] for u, t in received.get(x["msg_id"], ())]
        row = dict(x, received=got if x["kind"] == "unicast" else len(got))
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(lines)


def write(out_dir, soak, plots: bool = True) -> "list[str]":
    r = soak.results
    report.write_files(out_dir, {"sends.jsonl": sends_jsonl(soak),
                                 "results.json": report.to_json(r, indent=2, default=str)})
    written = []
    if plots:
        try:
            written = plot(out_dir, r, soak.traffic.unicasts, soak.churn.logins_t)
        except Exception as exc:  # a plot must not lose the results
            print(f"soak: plot failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    report.write_files(out_dir, {"results.md": markdown(r, written)})
    return ["results.json", "results.md", "sends.jsonl"] + written

