"""Results on disk: ``results.json`` (everything), ``samples.json`` (raw latencies and the
memory curve), ``results.md`` (a Markdown summary) and PNG plots (matplotlib, Agg):
``latency.png`` (unicast latency CDF, broadcast receive CDF and last-receive times) and
``memory.png`` (server RSS and KB per connection against the number of connections)."""
import json
import os


def _fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def rows(results) -> "list[tuple[str, str, str]]":
    """(scenario, metric, value) for the summary table."""
    out = []
    sc = results.get("scenarios", {})
    c = sc.get("connect")
    if c:
        out += [("connect", "connected / requested", f"{_fmt(c['connected'])} / {_fmt(c['requested'])}"),
                ("connect", "failed", _fmt(c["failed"]) + (
                    " (" + ", ".join(f"{k}: {v}" for k, v in c["failures"].items()) + ")"
                    if c["failures"] else "")),
                ("connect", "time to all logged in (s)", _fmt(c["seconds_to_all_logged_in"], 2)),
                ("connect", "connect+login rate (/s)", _fmt(c["rate_per_s"])),
                ("connect", "login latency p50 / p99 (ms)",
                 f"{_fmt(c['login_latency_ms'].get('p50'))} / {_fmt(c['login_latency_ms'].get('p99'))}")]
        if c.get("server_kb_per_conn_after_connect") is not None:
            out.append(("connect", "server KB/conn right after connect",
                        _fmt(c["server_kb_per_conn_after_connect"])))
    i = sc.get("idle")
    if i:
        out += [("idle", "held (s), heartbeat every (s)",
                 f"{_fmt(i['duration_s'])}, {_fmt(i['heartbeat_interval_s'])}"),
                ("idle", "connections at start / end",
                 f"{_fmt(i['connections_at_start'])} / {_fmt(i['connections_at_end'])}"),
                ("idle", "dropped", _fmt(i["dropped"])),
                ("idle", "server RSS before / after (MB)",
                 f"{_fmt((i.get('server_rss_before_kb') or 0) / 1024)} / "
                 f"{_fmt((i.get('server_rss_after_kb') or 0) / 1024)}"
                 if i.get("server_rss_before_kb") is not None else "–"),
                ("idle", "server KB per connection", _fmt(i.get("kb_per_conn"))),
                ("idle", "client KB per connection", _fmt(i.get("client_kb_per_conn")))]
    b = sc.get("broadcast")
    if b:
        out += [("broadcast", "receivers × messages", f"{_fmt(b['receivers'])} × {_fmt(b['messages'])}"),
                ("broadcast", "delivered / expected",
                 f"{_fmt(b['delivered'])} / {_fmt(b['expected_deliveries'])}"),
                ("broadcast", "fan-out rate, median (deliveries/s)", _fmt(b["fanout_per_s_median"])),
                ("broadcast", "throughput over the run (deliveries/s)", _fmt(b["deliveries_per_s"])),
                ("broadcast", "server CPU per delivery, net of idle (µs)",
                 _fmt(b["cpu_us_per_delivery"], 2)),
                ("broadcast", "server CPU per delivery, gross (µs)",
                 _fmt(b.get("cpu_us_per_delivery_gross"), 2)),
                *([("broadcast", "send floor, median (µs per send, user + system)",
                    f"{_fmt(b['send_floor']['total_us_median'], 2)} "
                    f"({_fmt(b['send_floor']['bytes'])} bytes × {_fmt(b['send_floor']['sockets'])} sockets)"),
                   ("broadcast", "CPU per delivery / send floor, net / gross",
                    f"{_fmt(b.get('ratio_to_floor'), 3)} / {_fmt(b.get('ratio_to_floor_gross'), 3)}")]
                  if b.get("send_floor") else []),
                ("broadcast", "HTTP call → last client, p50 / max (ms)",
                 f"{_fmt(b['last_receive_ms'].get('p50'))} / {_fmt(b['last_receive_ms'].get('max'))}"),
                ("broadcast", "receive latency p50 / p99 (ms)",
                 f"{_fmt(b['receive_latency_ms'].get('p50'))} / {_fmt(b['receive_latency_ms'].get('p99'))}")]
    u = sc.get("unicast")
    if u and "latency_ms" in u:
        lat = u["latency_ms"]
        out += [("unicast", "sent ok / received / lost",
                 f"{_fmt(u['sent_ok'])} / {_fmt(u['received'])} / {_fmt(u['lost'])}"),
                ("unicast", "rate target / achieved (/s)",
                 f"{_fmt(u['target_rate_per_s'])} / {_fmt(u['achieved_rate_per_s'])}"),
                ("unicast", "latency p50 / p99 / max (ms)",
                 f"{_fmt(lat.get('p50'), 2)} / {_fmt(lat.get('p99'), 2)} / {_fmt(lat.get('max'), 2)}"),
                ("unicast", "HTTP call p50 / p99 (ms)",
                 f"{_fmt(u['http_ms'].get('p50'), 2)} / {_fmt(u['http_ms'].get('p99'), 2)}")]
    ch = sc.get("churn")
    if ch:
        out += [("churn", "rate target / achieved (/s)",
                 f"{_fmt(ch['target_rate_per_s'])} / {_fmt(ch['achieved_rate_per_s'])}"),
                ("churn", "logins / clean leaves / failed",
                 f"{_fmt(ch['logged_in'])} / {_fmt(ch['left'])} / {_fmt(ch['failed'])}")]
        if ch.get("server_rss_start_kb") is not None:
            out.append(("churn", "server RSS start / end (MB)",
                        f"{_fmt(ch['server_rss_start_kb'] / 1024)} / {_fmt(ch['server_rss_end_kb'] / 1024)}"))
    return out


# -- pieces every report uses ----------------------------------------------------------------

def md_table(header, rows) -> str:
    """A Markdown table: ``header`` a tuple of column names, ``rows`` tuples of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def heading(title, results, lines=()) -> "list[str]":
    """The top of a results.md: the title with the start time, the command, ``lines``,
    and whether the run was aborted."""
    meta = results.get("meta", {})
    out = [f"# {title} ({meta.get('started', '')})", "",
           f"- command: `{meta.get('command', '')}`", *lines]
    if results.get("aborted"):
        out.append(f"- **aborted**: {results['aborted']}")
    return out


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out_dir, name) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    pyplot().close(fig)
    return name


def write_files(out_dir, texts) -> None:
    """Write each ``name: text`` into ``out_dir`` (made if missing)."""
    os.makedirs(out_dir, exist_ok=True)
    for name, text in texts.items():
        with open(os.path.join(out_dir, name), "w") as fh:
            fh.write(text)


def to_json(obj, **kw) -> str:
    return json.dumps(obj, ensure_ascii=False, **kw)


# -- the load tool's scenarios ------------------------------------------------------------------

def table(results) -> str:
    return md_table(("scenario", "metric", "value"), rows(results))


def markdown(results, plots) -> str:
    meta = results.get("meta", {})
    servers = ", ".join(str(p) for p in meta.get("server_pids") or []) or "not measured"
    out = heading("imserver.bench results", results, [
        f"- driver `{meta.get('driver')}`, WebSocket {', '.join(meta.get('ws_urls', []))}, "
        f"HTTP {meta.get('http')}",
        f"- {meta.get('client_procs', '?')} client process(es), source addresses "
        f"{', '.join(meta.get('source_ips') or []) or 'any'}",
        f"- server processes: {servers}"])
    out += ["", table(results), ""]
    b = results.get("scenarios", {}).get("broadcast")
    if b and b.get("per_message"):
        out += ["## Broadcasts", "",
                "| msgID | HTTP (ms) | received | first (ms) | p50 (ms) | last (ms) |",
                "|---|---|---|---|---|---|"]
        for r in b["per_message"]:
            out.append(f"| {r['msg_id']} | {_fmt(r['http_ms'])} | {_fmt(r['received'])} | "
                       f"{_fmt(r.get('first_receive_ms'))} | {_fmt(r.get('p50_ms'))} | "
                       f"{_fmt(r.get('last_receive_ms'))} |")
        out.append("")
    for name in plots:
        out += [f"![{name}]({name})", ""]
    return "\n".join(out)


def plot(out_dir, samples) -> "list[str]":
    """latency.png and memory.png, each when the samples hold what it shows."""
    plt = pyplot()
    written = []
    fig = _latency_figure(plt, samples)
    if fig is not None:
        written.append(save_figure(fig, out_dir, "latency.png"))
    fig = _memory_figure(plt, samples.get("memory_curve") or [])
    if fig is not None:
        written.append(save_figure(fig, out_dir, "memory.png"))
    return written


def _latency_figure(plt, samples):
    import matplotlib.ticker

    uni = sorted(samples.get("unicast_latency_ms") or [])
    brecv = sorted(samples.get("broadcast_receive_ms") or [])
    blast = samples.get("broadcast_last_ms") or []
    if not (uni or brecv or blast):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for values, label in ((uni, "unicast: HTTP call → frame"),
                          (brecv, "broadcast: HTTP call → each receiver")):
        if values:
            n = len(values)
            ax.plot(values, [(i + 1) / n for i in range(n)], label=label)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of messages")
    ax.set_title("Latency CDF")
    ax.grid(True, alpha=0.3)
    if uni or brecv:
        ax.legend(loc="lower right", fontsize=8)
        if min((uni or brecv)[0], (brecv or uni)[0]) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax = axes[1]
    if blast:
        ax.bar(range(1, len(blast) + 1), blast, color="tab:orange")
        ax.set_xlabel("broadcast #")
        ax.set_ylabel("HTTP call → last receiver (ms)")
        ax.set_title("Broadcast: time to the last client")
    elif uni:
        ax.hist(uni, bins=min(50, max(5, len(uni) // 5)))
        ax.set_xlabel("unicast latency (ms)")
        ax.set_ylabel("messages")
        ax.set_title("Unicast latency histogram")
    ax.grid(True, alpha=0.3)
    return fig


def _memory_figure(plt, mem):
    if len(mem) < 2:
        return None
    base = mem[0][1]
    ns = [p[0] for p in mem]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(ns, [p[1] / 1024 for p in mem], marker="o")
    axes[0].set_xlabel("connections logged in")
    axes[0].set_ylabel("server RSS (MB)")
    axes[0].set_title("Server memory while connecting")
    axes[0].grid(True, alpha=0.3)
    pts = [(n, (rss - base) / n) for n, rss in mem if n > 0]
    if pts:
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="tab:green")
    axes[1].set_xlabel("connections logged in")
    axes[1].set_ylabel("KB per connection (RSS − baseline) / N")
    axes[1].set_title("Server memory per connection")
    axes[1].grid(True, alpha=0.3)
    return fig


def write(out_dir, results, samples, plots=True) -> "list[str]":
    write_files(out_dir, {"results.json": to_json(results, indent=2),
                          "samples.json": json.dumps(samples)})
    written = plot(out_dir, samples) if plots else []
    write_files(out_dir, {"results.md": markdown(results, written)})
    return ["results.json", "samples.json", "results.md"] + written
