"""Node A's worker memory over the run: samples every ``--sample-interval``, the baseline
before churn, the end after the settle, and the limit the end must stay under."""


def rss_limit_kb(baseline_kb: float, pct: float, mb: float) -> float:
    """The end RSS allowed: baseline plus the larger of ``pct`` % and ``mb`` MB."""
    return baseline_kb + max(baseline_kb * pct / 100.0, mb * 1024.0)


class Memory:
    def __init__(self, ctx, cluster):
        self.ctx = ctx
        self.cluster = cluster
        self.samples = []
        self.baseline = None
        self.end = None
        self.a_worker_pids = None
        self.a_worker_changes = []  # node A's worker replaced: a restart, not growth

    def sample(self, label: str = "") -> dict:
        node_a, node_b = self.cluster.node_a, self.cluster.node_b
        rss_a, cpu_a, pids_a = (node_a.worker_rss_kb() if node_a.alive()
                                else (None, None, []))
        rss_b, _, _ = node_b.worker_rss_kb() if node_b.alive() else (None, None, [])
        state = node_a.state() if node_a.alive() else None
        row = {"t": self.ctx.rel(), "label": label, "a_worker_rss_kb": rss_a,
               "a_worker_cpu_s": cpu_a, "a_worker_pids": pids_a,
               "a_master_rss_kb": node_a.rss_kb(), "b_worker_rss_kb": rss_b,
               "redis_rss_kb": self.cluster.redis.rss_kb(),
               "a_connections": state.get("connections") if state else None,
               "a_users": state.get("users") if state else None}
        if self.a_worker_pids is not None and pids_a and pids_a != self.a_worker_pids:
            self.a_worker_changes.append({"t": row["t"], "from": self.a_worker_pids,
                                          "to": pids_a})
            self.ctx.log(f"node A's worker changed: {self.a_worker_pids} -> {pids_a}")
            self.a_worker_pids = pids_a
        self.samples.append(row)
        return row

    def take_baseline(self) -> dict:
        self.baseline = self.sample("baseline")
        self.a_worker_pids = self.baseline["a_worker_pids"]
        return self.baseline

    def take_end(self) -> dict:
        self.end = self.sample("end")
        return self.end

    def loop(self) -> None:
        while not self.ctx.stopping.wait(self.ctx.a.sample_interval):
            self.sample()

    def shift(self, seconds: float) -> None:
        """Make the setup's sample times relative to the start of the traffic."""
        for s in self.samples:
            s["t"] = round(s["t"] - seconds, 3)

    def summary(self) -> dict:
        a = self.ctx.a
        base = self.baseline["a_worker_rss_kb"] if self.baseline else None
        end = self.end["a_worker_rss_kb"] if self.end else None
        mem = {"process": "node A's gunicorn worker (VmRSS)",
               "tolerance": f"end <= baseline + max({a.rss_tolerance_pct:g}%, "
                            f"{a.rss_tolerance_mb:g} MB)",
               "baseline_kb": base, "end_kb": end,
               "baseline_t": self.baseline["t"] if self.baseline else None,
               "end_t": self.end["t"] if self.end else None,
               "worker_restarts": self.a_worker_changes}
        if base and end:
            limit = rss_limit_kb(base, a.rss_tolerance_pct, a.rss_tolerance_mb)
            in_run = [s["a_worker_rss_kb"] for s in self.samples
                      if s["a_worker_rss_kb"] and s["t"] >= 0]
            cpu = (self.end.get("a_worker_cpu_s") or 0) - (self.baseline.get("a_worker_cpu_s") or 0)
            mem.update({"limit_kb": round(limit), "delta_kb": end - base,
                        "a_worker_cpu_s_during_run": round(cpu, 1),
                        "delta_pct": round(100.0 * (end - base) / base, 2),
                        "max_kb": max(in_run) if in_run else None,
                        "within_tolerance": end <= limit})
        mem["samples"] = self.samples
        return mem
