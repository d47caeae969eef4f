"""The ``private`` run: private messages at a fixed rate to online users, over HTTP and over
the WebSocket, each checked to arrive once, in order, at its receiver."""
import time
from collections import Counter

from ..stats import summary
from .base import Run
from .servers import cpu_delta, loadavg, split


class PrivateRun(Run):
    def run(self) -> None:
        a = self.a
        self.setup()
        nodes = a.nodes
        self.receivers = [(f"{self.run_id}-u{i}", i % nodes) for i in range(a.users)]
        self.senders = [(f"{self.run_id}-s{j}", j % nodes) for j in range(a.senders)] \
            if "ws" in a.phase_list else []
        self.sender_worker = {}
        k = len(self.workers)
        # senders first, so that each worker's senders are known: sender j on worker j mod k
        everyone = self.senders + self.receivers
        for i, (u, _) in enumerate(everyone):
            self.sender_worker[u] = i % k
        self.results["login"] = self.login(everyone)
        if self.results["login"]["failures"]:
            raise RuntimeError(f"logins failed: {self.results['login']['failures']}")
        self.expected = {}  # msgID -> (receiver, phase, send time)
        self.phases = {}
        for phase in a.phase_list:
            self.run_phase(phase)
        users, other = self.receipts()
        self.results["clients"] = other
        self.verify(users)

    def plan_times(self):
        t0 = time.time() + 1.0
        return t0, [t0 + k / self.a.rate for k in range(self.a.messages)]

    def run_phase(self, phase: str) -> None:
        a = self.a
        k = len(self.workers)
        names = [u for u, _ in self.receivers]
        t0, slots = self.plan_times()
        snap0, t_snap0 = self.servers.worker_snapshot(), time.time()
        self.log(f"phase {phase}: {a.messages} messages at {a.rate:g}/s to {len(names)} users")
        info = {"messages": a.messages, "target_rate_per_s": a.rate}
        if phase == "http":
            plan = [[j % a.nodes, self.rng.choice(names), f"{self.run_id}-h{j}", slots[j]]
                    for j in range(a.messages)]
            parts = split(plan, k)
            answers = self.workers.call_all(
                "post", timeout=a.messages / a.rate + a.http_timeout * 3 + 60,
                per_worker=lambda i: {"plan": parts[i]}, http_urls=self.servers.http_urls,
                concurrency=max(4, a.http_concurrency // k), http_timeout=a.http_timeout)
            calls = {}
            for ans in answers:
                calls.update(ans["posts"])
            target = {row[2]: row[1] for row in plan}
            accepted = {m: c for m, c in calls.items() if c[2] == 200 and c[3] == 200}
            refused = Counter(f"{c[2]} {c[3]} {c[7] or ''}".strip()
                              for m, c in calls.items() if m not in accepted)
            info.update({"sent": len(calls), "accepted": len(accepted),
                         "refused": dict(refused),
                         "send_results_true": sum(1 for c in accepted.values() if c[4]),
                         "stored_true": sum(1 for c in accepted.values() if c[5]),
                         "http_ms": summary([(c[1] - c[0]) * 1000 for c in calls.values()])})
            starts = sorted(c[0] for c in calls.values())
            for m, c in accepted.items():
                self.expected[m] = (target[m], phase, c[0], c[4] is True)
        else:
            plan = []
            for j in range(a.messages):
                sender = self.senders[j % len(self.senders)][0]
                plan.append([sender, self.rng.choice(names), f"{self.run_id}-w{j}", slots[j]])
            parts = [[] for _ in range(k)]
            for row in plan:
                parts[self.sender_worker[row[0]]].append(row)
            answers = self.workers.call_all(
                "send", timeout=a.messages / a.rate + 60, per_worker=lambda i: {"plan": parts[i]},
                wait=a.wait)
            sends, skipped = {}, Counter()
            for ans in answers:
                sends.update(ans["sends"])
                skipped.update(ans["skipped"])
            target = {row[2]: row[1] for row in plan}
            accepted = {m: s for m, s in sends.items() if s[2] == 200}
            refused = Counter(f"code {s[2]}" for m, s in sends.items() if m not in accepted)
            refused.update(skipped)
            info.update({"sent": len(sends), "accepted": len(accepted),
                         "refused": dict(refused),
                         "delivered_true": sum(1 for s in accepted.values() if s[3] is True),
                         "reply_ms": summary([(s[1] - s[0]) * 1000 for s in accepted.values()
                                              if s[1]])})
            starts = sorted(s[0] for s in sends.values())
            for m, s in accepted.items():
                self.expected[m] = (target[m], phase, s[0], s[3] is True)
        if len(starts) > 1:
            info["achieved_rate_per_s"] = round((len(starts) - 1) / (starts[-1] - starts[0]), 1)
        want = len(self.expected)
        p = self.wait_for(f"phase {phase}", lambda p: p["received"] >= want, a.wait)
        t_snap1 = time.time()
        info["wait_seconds"] = round(t_snap1 - (starts[-1] if starts else t0), 2)
        info["server_cpu"] = cpu_delta(snap0, self.servers.worker_snapshot(), t_snap1 - t_snap0)
        info["loadavg_end"] = loadavg()
        self.phases[phase] = info
        self.log(f"phase {phase}: {info['accepted']} of {info['sent']} accepted, "
                 f"{p['received']} read in all so far; load {info['loadavg_end']}")

    def verify(self, users: dict) -> None:
        per_phase = {ph: {"received": 0, "duplicated": 0, "misrouted": 0, "lat": [],
                          "got": Counter()} for ph in self.phases}
        unexpected = disorder = 0
        for user, u in users.items():
            offsets = []
            for msg_id, offset, t, target in u["got"]:
                exp = self.expected.get(msg_id)
                if isinstance(offset, int):
                    offsets.append(offset)
                if exp is None:
                    unexpected += 1
                    continue
                ph = per_phase[exp[1]]
                ph["received"] += 1
                ph["got"][msg_id] += 1
                if ph["got"][msg_id] > 1:
                    ph["duplicated"] += 1
                    continue
                if exp[0] != user or target != user:
                    ph["misrouted"] += 1
                ph["lat"].append((t - exp[2]) * 1000)
            disorder += sum(1 for x, y in zip(offsets, offsets[1:]) if y <= x)
        total_lost = total_dup = total_mis = 0
        for phase, info in self.phases.items():
            ph = per_phase[phase]
            expected = [m for m, e in self.expected.items() if e[1] == phase]
            lost = sum(1 for m in expected if not ph["got"].get(m))
            # a message answered "not delivered now" waits in the inbox for the next login
            told = sum(1 for m in expected if not ph["got"].get(m) and self.expected[m][3])
            info.update({"received": ph["received"], "received_once": len(ph["got"]),
                         "lost": lost, "lost_although_answered_delivered": told,
                         "duplicated": ph["duplicated"], "misrouted": ph["misrouted"],
                         "latency_ms": summary(ph["lat"], digits=2)})
            total_lost += lost
            total_dup += ph["duplicated"]
            total_mis += ph["misrouted"]
            if info["refused"]:
                self.problems.append(f"{phase}: refused {info['refused']}")
        self.results["phases"] = self.phases
        self.results["messages"] = {"lost": total_lost, "duplicated": total_dup,
                                    "misrouted": total_mis, "unexpected": unexpected,
                                    "out_of_order": disorder}
        if total_lost or total_dup or total_mis or unexpected or disorder:
            self.problems.append(f"{total_lost} lost, {total_dup} duplicated, {total_mis} "
                                 f"misrouted, {unexpected} unexpected, {disorder} out of order")
        dropped = self.results["clients"].get("dropped") or {}
        if dropped:
            self.problems.append(f"connections dropped: {dropped}")

    def table_rows(self) -> list:
        rows = []
        login = self.results.get("login")
        if login:
            rows.append(("users logged in (receivers + senders)",
                         f"{login['users']:,} in {login['seconds']} s"))
        for phase, p in (self.results.get("phases") or {}).items():
            lat = p.get("latency_ms") or {}
            label = "HTTP /user/sendMessage" if phase == "http" else "WebSocket send"
            flag = p.get("send_results_true", p.get("delivered_true"))
            rows += [(f"{label}: sent / accepted / delivered now",
                      f"{p['sent']:,} / {p['accepted']:,} / {flag:,}"),
                     (f"{label}: target / achieved rate (/s)",
                      f"{p['target_rate_per_s']:g} / {p.get('achieved_rate_per_s')}"),
                     (f"{label}: read by the receiver / lost (of which answered delivered) / "
                      "duplicated / misrouted",
                      f"{p.get('received_once', 0):,} / {p.get('lost')} "
                      f"({p.get('lost_although_answered_delivered')}) / "
                      f"{p.get('duplicated')} / {p.get('misrouted')}"),
                     (f"{label}: latency p50 / p99 / max (ms)",
                      f"{lat.get('p50')} / {lat.get('p99')} / {lat.get('max')}"),
                     (f"{label}: node CPU (share of a core)", ", ".join(
                         f"{k} {v['core_share']}" for k, v in p["server_cpu"].items())),
                     (f"{label}: load average after", " ".join(map(str, p["loadavg_end"])))]
        m = self.results.get("messages")
        if m:
            rows.append(("out of offset order / unexpected",
                         f"{m['out_of_order']} / {m['unexpected']}"))
        return rows


# -- offline ---------------------------------------------------------------------------------
