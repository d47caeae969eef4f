"""The ``offline`` run: messages stored for offline users, then logins at a fixed rate, each
device checked to get what it missed once, in order; memory per stored message."""
import json
import time
from collections import Counter, defaultdict

import gevent

from ..stats import summary
from .base import Run
from .servers import cpu_delta, loadavg, split


class OfflineRun(Run):
    def run(self) -> None:
        a = self.a
        self.setup()
        self.users = [(f"{self.run_id}-o{i}", i % a.nodes) for i in range(a.users)]
        self.store()
        self.login_all()
        users, other = self.receipts()
        self.results["clients"] = other
        self.verify(users)
        self.ack_and_recheck(users)

    def store(self) -> None:
        a = self.a
        k = len(self.workers)
        gevent.sleep(a.settle)
        mem0, snap0 = self.servers.redis_memory(), self.servers.worker_snapshot()
        plan = []
        t0 = time.time() + 0.5
        total = a.users * a.per_user
        for j in range(a.per_user):
            for i, (u, _) in enumerate(self.users):
                idx = j * a.users + i
                slot = t0 + idx / a.store_rate if a.store_rate > 0 else None
                plan.append([(i + j) % a.nodes, u, f"{self.run_id}-o{i}-{j}", slot])
        self.log(f"store: {total} messages for {a.users} offline users"
                 + (f" at {a.store_rate:g}/s" if a.store_rate > 0 else ""))
        parts = split(plan, k)
        t_start = time.time()
        budget = total / a.store_rate if a.store_rate > 0 else total / 100.0
        answers = self.workers.call_all(
            "post", timeout=budget + 120, per_worker=lambda i: {"plan": parts[i]},
            http_urls=self.servers.http_urls, concurrency=max(4, a.http_concurrency // k),
            http_timeout=a.http_timeout, text="offline")
        seconds = time.time() - t_start
        calls = {}
        for ans in answers:
            calls.update(ans["posts"])
        owner = {row[2]: row[1] for row in plan}
        self.stored = defaultdict(dict)  # user -> {msgID: offset}
        refused = Counter()
        online_answers = 0
        for m, c in calls.items():
            if c[2] == 200 and c[3] == 200 and c[5] is True and isinstance(c[6], int):
                self.stored[owner[m]][m] = c[6]
                if c[4]:
                    online_answers += 1
            else:
                refused[f"{c[2]} {c[3]} {c[7] or ''}".strip()] += 1
        n_stored = sum(len(v) for v in self.stored.values())
        gevent.sleep(a.settle)
        mem1, snap1 = self.servers.redis_memory(), self.servers.worker_snapshot()
        memory = {"messages_stored": n_stored}
        if mem0 and mem1:
            grew = mem1["used_memory"] - mem0["used_memory"]
            memory["redis"] = {"used_memory_before": mem0["used_memory"],
                               "used_memory_after": mem1["used_memory"],
                               "keys_before": mem0["keys"], "keys_after": mem1["keys"],
                               "bytes_per_message": round(grew / max(1, n_stored), 1)}
        memory["nodes"] = {}
        for label, b in snap0.items():
            after = snap1.get(label) or {}
            if b.get("rss_kb") and after.get("rss_kb"):
                grew = (after["rss_kb"] - b["rss_kb"]) * 1024
                memory["nodes"][label] = {"worker_rss_kb_before": b["rss_kb"],
                                          "worker_rss_kb_after": after["rss_kb"],
                                          "bytes_per_message": round(grew / max(1, n_stored), 1)}
        self.results["store"] = {
            "messages": total, "stored": n_stored, "refused": dict(refused),
            "answered_send_results_true": online_answers, "seconds": round(seconds, 2),
            "rate_per_s": round(total / max(1e-6, seconds), 1),
            "http_ms": summary([(c[1] - c[0]) * 1000 for c in calls.values()]),
            "server_cpu": cpu_delta(snap0, snap1, time.time() - t_start),
            "loadavg_end": loadavg()}
        self.results["memory"] = memory
        if refused:
            self.problems.append(f"stores refused: {dict(refused)}")
        if online_answers:
            self.problems.append(f"{online_answers} stores answered sendResults true for an "
                                 "offline user")
        self.log(f"store: {n_stored} of {total} stored in {seconds:.1f} s; memory {memory}")

    def login_all(self) -> None:
        a = self.a
        self.t_login0 = time.time() + 1.0
        slots = [self.t_login0 + i / a.login_rate for i in range(a.users)]
        snap0, stats0 = self.servers.worker_snapshot(), self.servers.commandstats()
        self.log(f"login: {a.users} users with deviceID {a.device!r} at {a.login_rate:g}/s")
        expected_total = sum(len(v) for v in self.stored.values())
        want_complete = sum(1 for v in self.stored.values() if v)
        done = self.login(self.users, slots, concurrency=max(a.concurrency, 2000),
                          what="logins")
        p = self.wait_for("inbox deliveries", lambda p: p["received"] >= expected_total,
                          a.wait, expect=a.per_user)
        t1 = time.time()
        stats1 = self.servers.commandstats()
        if stats0 is not None and stats1 is not None:
            from ..recovery.redisstats import diff
            done["redis_commands"] = {
                name: {"calls": d["calls"], "per_login": round(d["calls"] / a.users, 2),
                       "usec_per_call": round(d["usec"] / d["calls"], 2)}
                for name, d in sorted(diff(stats0, stats1).items())}
        done.update({"target_rate_per_s": a.login_rate,
                     "achieved_rate_per_s": round(a.users / max(1e-6, slots[-1] - slots[0]
                                                                + 1 / a.login_rate), 1),
                     "server_cpu": cpu_delta(snap0, self.servers.worker_snapshot(),
                                             t1 - self.t_login0),
                     "loadavg_end": loadavg(), "users_complete_at_end": p["complete"],
                     "users_expected_complete": want_complete})
        self.results["login"] = done

    def verify(self, users: dict) -> None:
        lost = dup = unexpected = disorder = wrong_offset = bad_reply = 0
        not_logged_in = unreached = 0
        per_user_last, login_ms, last_times = [], [], []
        per_user_counts = Counter()
        problem_users = []
        for user, _node in self.users:
            u = users.get(user) or {}
            want = self.stored.get(user, {})
            got = Counter()
            offsets = []
            u_wrong = 0
            for msg_id, offset, t, target in u.get("got") or []:
                got[msg_id] += 1
                offsets.append(offset)
                if msg_id not in want:
                    unexpected += 1
                elif want[msg_id] != offset:
                    u_wrong += 1
            u_lost = sum(1 for m in want if not got.get(m))
            if u.get("t_login") is None:  # its login failed: it could read nothing
                not_logged_in += 1
                unreached += u_lost
            u_dup = sum(c - 1 for c in got.values() if c > 1)
            u_dis = sum(1 for x, y in zip(offsets, offsets[1:])
                        if not (isinstance(x, int) and isinstance(y, int) and y > x))
            inbox = u.get("inbox") or {}
            top = max(want.values(), default=0)
            u_bad = inbox.get("unacked") != len(want) or inbox.get("offset") != top
            lost += u_lost
            dup += u_dup
            disorder += u_dis
            wrong_offset += u_wrong
            bad_reply += u_bad
            per_user_counts[sum(got.values())] += 1
            if u.get("got") and u.get("t_start"):
                last = max(g[2] for g in u["got"])
                last_times.append(last)
                if not u_lost:
                    per_user_last.append((last - u["t_start"]) * 1000)
            if u.get("t_login") and u.get("t_start"):
                login_ms.append((u["t_login"] - u["t_start"]) * 1000)
            if (u_lost or u_dup or u_dis or u_wrong or u_bad) and len(problem_users) < 20:
                problem_users.append({"user": user, "lost": u_lost, "duplicated": u_dup,
                                      "out_of_order": u_dis, "wrong_offset": u_wrong,
                                      "login_inbox": inbox, "stored": len(want),
                                      "failure": u.get("failure")})
        expected = sum(len(v) for v in self.stored.values())
        received = sum(per_user_counts[c] * c for c in per_user_counts)
        self.results["messages"] = {
            "expected": expected, "received": received, "lost": lost,
            "lost_by_logged_in_users": lost - unreached, "users_not_logged_in": not_logged_in,
            "duplicated": dup,
            "unexpected": unexpected, "out_of_order": disorder, "wrong_offset": wrong_offset,
            "login_replies_not_matching_the_inbox": bad_reply,
            "messages_per_user": {str(c): n for c, n in sorted(per_user_counts.items())}}
        self.results["times_ms"] = {
            "first_login_to_last_message": round((max(last_times) - self.t_login0) * 1000, 1)
            if last_times else None,
            "connect_to_last_message_per_user": summary(per_user_last, digits=1),
            "connect_to_login_reply": summary(login_ms, digits=1)}
        self.results["problem_users"] = problem_users
        if lost or dup or unexpected or disorder or wrong_offset:
            self.problems.append(f"{lost} lost, {dup} duplicated, {unexpected} unexpected, "
                                 f"{disorder} out of order, {wrong_offset} with another offset")
        if bad_reply:
            self.problems.append(f"{bad_reply} login replies whose inbox did not match")
        if self.results["login"]["failures"]:
            self.problems.append(f"logins failed: {self.results['login']['failures']}")

    def ack_and_recheck(self, users: dict) -> None:
        a = self.a
        acks = Counter()
        k = len(self.workers)
        rate = a.ack_rate if a.ack_rate is not None else a.login_rate
        for ans in self.workers.call_all("ack", timeout=a.users / max(rate, 1) + 60, wait=15,
                                         rate=rate / k if rate > 0 else 0):
            acks.update(ans["acks"])
        check = {"acks": dict(acks)}
        if set(acks) - {"200"}:
            self.problems.append(f"acks not answered 200: {dict(acks)}")
        # users that logged in (one whose login failed has its messages unacked still)
        names = [u for u, _ in self.users if (users.get(u) or {}).get("t_login")]
        sample = self.rng.sample(names, min(a.recheck, len(names))) if a.recheck > 0 else []
        if sample:
            owner = {u: i % len(self.workers) for i, (u, _) in enumerate(self.users)}
            parts = [[] for _ in self.workers.procs]
            for u in sample:
                parts[owner[u]].append(u)
            got = {}
            for ans in self.workers.call_all("relogin", timeout=90, wait=1.0,
                                             per_worker=lambda i: {"users": parts[i]},
                                             source_ips=self.source_ips):
                got.update(ans["users"])
            bad = {u: r for u, r in got.items()
                   if r["failure"] or (r["inbox"] or {}).get("unacked") != 0 or r["got"]}
            check.update({"relogins": len(got), "relogins_not_clean": len(bad),
                          "examples": dict(list(bad.items())[:5])})
            if bad:
                self.problems.append(f"{len(bad)} of {len(got)} devices logging in again after "
                                     "their ack were told of unacked messages or sent some")
        self.results["ack_recheck"] = check
        self.log(f"acks {dict(acks)}; recheck {check.get('relogins', 0)} relogins, "
                 f"{check.get('relogins_not_clean', 0)} not clean")

    def table_rows(self) -> list:
        r = self.results
        rows = []
        s, mem, lg, m, t = (r.get("store"), r.get("memory") or {}, r.get("login"),
                            r.get("messages"), r.get("times_ms"))
        if s:
            rows += [("stored / sent (offline users)", f"{s['stored']:,} / {s['messages']:,} "
                                                       f"in {s['seconds']} s "
                                                       f"({s['rate_per_s']}/s)"),
                     ("store HTTP ms p50 / p99 / max", f"{s['http_ms'].get('p50')} / "
                                                       f"{s['http_ms'].get('p99')} / "
                                                       f"{s['http_ms'].get('max')}")]
        if mem.get("redis"):
            rd = mem["redis"]
            rows.append(("Redis used_memory before → after (bytes per message)",
                         f"{rd['used_memory_before']:,} → {rd['used_memory_after']:,} "
                         f"({rd['bytes_per_message']})"))
        for label, nd in (mem.get("nodes") or {}).items():
            rows.append((f"node {label} worker RSS before → after, KB (bytes per message)",
                         f"{nd['worker_rss_kb_before']:,} → {nd['worker_rss_kb_after']:,} "
                         f"({nd['bytes_per_message']})"))
        if lg:
            rows.append(("logins: target / achieved rate (/s), failures",
                         f"{lg['target_rate_per_s']:g} / {lg['achieved_rate_per_s']}, "
                         f"{lg['failures'] or 0}"))
        if m:
            rows += [("messages expected / read", f"{m['expected']:,} / {m['received']:,}"),
                     ("users whose login failed; messages lost by logged-in users",
                      f"{m['users_not_logged_in']}; {m['lost_by_logged_in_users']}"),
                     ("lost / duplicated / out of order / wrong offset / unexpected",
                      f"{m['lost']} / {m['duplicated']} / {m['out_of_order']} / "
                      f"{m['wrong_offset']} / {m['unexpected']}"),
                     ("messages per user (count: users)", json.dumps(m["messages_per_user"])),
                     ("login replies not matching the inbox",
                      str(m["login_replies_not_matching_the_inbox"]))]
        if t:
            pu = t["connect_to_last_message_per_user"]
            rows += [("first login → last user complete (ms)",
                      str(t["first_login_to_last_message"])),
                     ("per user, connect → last message p50 / p99 / max (ms)",
                      f"{pu.get('p50')} / {pu.get('p99')} / {pu.get('max')}")]
        if lg:
            rows += [("node CPU during the logins (share of a core)", ", ".join(
                f"{k} {v['core_share']}" for k, v in lg["server_cpu"].items())),
                ("load average after the logins", " ".join(map(str, lg["loadavg_end"])))]
        ar = r.get("ack_recheck")
        if ar:
            rows.append(("acks; relogins after the ack not clean",
                         f"{json.dumps(ar['acks'])}; {ar.get('relogins_not_clean', 0)} of "
                         f"{ar.get('relogins', 0)}"))
        return rows
