"""The ``private`` and ``offline`` runs: start the servers, drive the client workers, verify
every message, stop what was started; ``main`` bounds a run by ``--max-seconds``."""
import json
import math
import os
import random
import shlex
import signal
import sys
import time
from collections import Counter, defaultdict

import gevent
import redis

from ..coordinator import Workers
from ..harness import low_ports
from ..soak.cluster import Cluster, SoakNode, redis_binary
from ..soak.context import Interrupted
from ..stats import summary
from .options import PRIVATE, check_args, default_max_seconds

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_MAX_SECONDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
WORKER_MODULE = "imserver.bench.inbox.worker"


class Ctx:
    """What the soak's Cluster needs of a run: settings, randomness, a log."""

    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.quiet = args.quiet
        self.t0 = time.time()

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.a.scenario}: [{time.time() - self.t0:7.2f}s] {text}",
                  file=sys.stderr, flush=True)


class Servers:
    """One embedded node, or a redis-server and nodes A and B."""

    def __init__(self, ctx: Ctx, out_dir: str):
        self.ctx = ctx
        self.out = out_dir
        a = ctx.a
        app = {"maxConnections": 19000}
        if a.presence_max_room is not None:
            app["presenceMaxRoom"] = a.presence_max_room
        self.overrides = {"app": app}
        if a.redis_pool_size:
            self.overrides["redis"] = {"poolSize": a.redis_pool_size}
        self.cluster = None
        self.nodes = []
        self.redis = None

    def start(self, meta: dict) -> None:
        a = self.ctx.a
        if a.nodes == 2:
            self.cluster = Cluster(self.ctx, self.out, self.overrides, banner=a.scenario)
            self.cluster.start(meta)
            self.nodes = [self.cluster.node_a, self.cluster.node_b]
            self.redis = self.cluster.redis
            return
        ports = low_ports(3, rng=self.ctx.rng)
        meta["ports"] = {"a": {"http": ports[0], "ws": ports[1], "rpc": ports[2]}}
        node = SoakNode("A", ports, "", self.out, a, self.overrides, a.scenario)
        self.ctx.log(f"starting an embedded node (http :{ports[0]}, ws :{ports[1]}); log in "
                     f"{self.out}")
        node.start()
        self.nodes = [node]
        meta["pids"] = {"a": [node.pid] + node.children()}

    @property
    def ws_urls(self):
        return [n.ws_url for n in self.nodes]

    @property
    def http_urls(self):
        return [n.http_url for n in self.nodes]

    def worker_snapshot(self) -> dict:
        """Per node: worker RSS (KB) and CPU seconds."""
        out = {}
        for n in self.nodes:
            rss, cpu, pids = n.worker_rss_kb()
            out[n.label] = {"rss_kb": rss, "cpu_s": cpu, "pids": pids}
        return out

    def redis_memory(self) -> "dict | None":
        if self.redis is None:
            return None
        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)
        try:
            info = client.info("memory")
            return {"used_memory": int(info["used_memory"]), "keys": int(client.dbsize())}
        finally:
            client.close()

    def commandstats(self) -> "dict | None":
        """Redis INFO commandstats (command -> calls, µs), None without Redis."""
        if self.redis is None:
            return None
        from ..recovery.redisstats import commandstats
        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)
        try:
            return commandstats(client)
        finally:
            client.close()

    def stop(self) -> list:
        if self.cluster is not None:
            return self.cluster.stop()
        left = []
        for n in self.nodes:
            n.stop()
            left += n.sweep()
        return left


def cpu_delta(before: dict, after: dict, seconds: float) -> dict:
    """Per node: CPU seconds used between two snapshots and the share of one core."""
    out = {}
    for label, b in before.items():
        a = after.get(label) or {}
        if b.get("cpu_s") is None or a.get("cpu_s") is None:
            continue
        used = a["cpu_s"] - b["cpu_s"]
        out[label] = {"cpu_s": round(used, 2),
                      "core_share": round(used / seconds, 3) if seconds > 0 else None}
    return out


def loadavg() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def split(items, k: int) -> list:
    """``items`` dealt into ``k`` lists by index mod k."""
    parts = [[] for _ in range(k)]
    for i, item in enumerate(items):
        parts[i % k].append(item)
    return parts


class Run:
    """What both scenarios share: the servers, the client workers, the results."""

    def __init__(self, args, out_dir: str, meta: dict):
        self.a = args
        self.out = out_dir
        self.ctx = Ctx(args)
        self.rng = self.ctx.rng
        self.run_id = "%s%04x" % (args.scenario[:2], random.getrandbits(16))
        self.servers = Servers(self.ctx, out_dir)
        self.workers = None
        self.results = {"meta": meta, "errors": []}
        self.problems = []
        if args.source_ips.strip().lower() == "none":
            self.source_ips = []
        elif args.source_ips:
            self.source_ips = [s.strip() for s in args.source_ips.split(",") if s.strip()]
        else:
            total = args.users + (getattr(args, "senders", 0) or 0)
            self.source_ips = [f"127.0.0.{2 + i}" for i in range(max(1, math.ceil(total / 20000)))]

    def log(self, text):
        self.ctx.log(text)

    def setup(self) -> None:
        a = self.a
        meta = self.results["meta"]
        meta["loadavg_start"] = loadavg()
        self.servers.start(meta)
        self.workers = Workers(a.procs, meta["max_seconds"] + 30, module=WORKER_MODULE)
        meta["client_pids"] = self.workers.pids
        self.workers.call_all("setup", ws_urls=self.servers.ws_urls, app_id=a.app_id,
                              device=a.device, timeout=a.connect_timeout,
                              discard_every=a.discard_every)
        self.log(f"{a.procs} client worker process(es) {self.workers.pids}; nodes "
                 f"{', '.join(self.servers.http_urls)}")

    def login(self, users, slots=None, concurrency=None, what="logins") -> dict:
        """Log ``users`` ([(name, node)]) in: worker i mod procs; ``slots`` wall-clock starts."""
        a = self.a
        k = len(self.workers)
        rows = [[u, node, slots[i] if slots else None] for i, (u, node) in enumerate(users)]
        parts = split(rows, k)
        conc = max(1, (concurrency or a.concurrency) // k)
        span = (slots[-1] - time.time()) if slots else len(users) / 50.0
        t0 = time.time()
        answers = self.workers.call_all(
            "login", timeout=span + 120, per_worker=lambda i: {"users": parts[i]},
            source_ips=self.source_ips, concurrency=conc, deadline_s=span + 60)
        failures = Counter()
        for ans in answers:
            failures.update(ans["failures"])
        done = {"users": len(users), "seconds": round(time.time() - t0, 2),
                "failures": dict(failures),
                "late_s_max": round(max(ans["late_s"]["max"] for ans in answers), 3)}
        self.log(f"{what}: {len(users)} in {done['seconds']} s, failures {dict(failures)}")
        return done

    def progress(self, expect=0) -> dict:
        answers = self.workers.call_all("progress", expect=expect, timeout=30)
        return {"received": sum(x["received"] for x in answers),
                "complete": sum(x["complete"] for x in answers),
                "last_receive": max((x["last_receive"] for x in answers
                                     if x["last_receive"]), default=None)}

    def wait_for(self, what: str, done, timeout: float, expect=0) -> dict:
        """Poll the workers until ``done(progress)``; the last progress."""
        deadline = time.monotonic() + timeout
        last_log = time.monotonic()
        while True:
            p = self.progress(expect)
            if done(p) or time.monotonic() >= deadline:
                return p
            if time.monotonic() - last_log > 3:
                last_log = time.monotonic()
                self.log(f"waiting for {what}: {p['received']} read, {p['complete']} complete")
            gevent.sleep(0.2)

    def receipts(self) -> "tuple[dict, dict]":
        users, other = {}, defaultdict(Counter)
        for ans in self.workers.call_all("receipts", timeout=120):
            users.update(ans["users"])
            for key in ("frames", "replies", "dropped", "failures"):
                other[key].update(ans[key])
        return users, {k: dict(v) for k, v in other.items()}

    def close(self) -> None:
        if self.workers is not None:
            try:
                self.workers.call_all("close_all", timeout=15)
            except Exception as exc:
                self.results["errors"].append(f"close: {exc}")
            self.workers.stop()
        left = self.servers.stop()
        if left:
            self.results["errors"].append(f"killed leftover processes {left}")


# -- private ---------------------------------------------------------------------------------

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


# -- the command -----------------------------------------------------------------------------

def table(run: Run) -> str:
    rows = run.table_rows()
    v = run.results.get("verdict") or {}
    rows.append(("verdict", "PASS" if v.get("ok") else "FAIL: " + "; ".join(
        v.get("problems") or [run.results.get("aborted", "")])))
    return "\n".join(["| metric | value |", "|---|---|"] +
                     [f"| {k} | {val} |" for k, val in rows])


def main(args, argv) -> int:
    """``python -m imserver.bench private|offline ...`` (called by the CLI)."""
    name = args.scenario
    errors = check_args(args)
    if errors:
        print(f"imserver.bench {name}: " + "; ".join(errors), file=sys.stderr)
        return EXIT_SETUP
    if args.nodes == 2:
        try:
            redis_binary(args.redis_server)
        except RuntimeError as exc:
            print(f"imserver.bench {name}: {exc}", file=sys.stderr)
            return EXIT_SETUP
    max_seconds = args.max_seconds or default_max_seconds(args)
    out_dir = os.path.abspath(args.out or os.path.join(
        "bench-results", f"{name}-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out_dir, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m imserver.bench " + " ".join(shlex.quote(x) for x in argv),
            "scenario": name, "nodes": args.nodes, "out": out_dir, "max_seconds": max_seconds,
            "cpus": os.cpu_count()}
    run = (PrivateRun if name == PRIVATE else OfflineRun)(args, out_dir, meta)
    main_greenlet = gevent.getcurrent()
    watcher = gevent.signal_handler(
        signal.SIGTERM, lambda: gevent.get_hub().loop.run_callback(main_greenlet.throw,
                                                                   Interrupted()))
    code = EXIT_OK
    t0 = time.time()
    started = False
    try:
        try:
            with gevent.Timeout(max_seconds):
                run.run()
                started = True
        except gevent.Timeout:
            run.results["aborted"] = f"--max-seconds {max_seconds:g} reached"
            code = EXIT_MAX_SECONDS
        except (KeyboardInterrupt, Interrupted):
            run.results["aborted"] = "interrupted"
            code = EXIT_INTERRUPTED
        except Exception as exc:
            run.results["aborted"] = f"{type(exc).__name__}: {exc}"
            code = EXIT_FAILED if "phases" in run.results or "store" in run.results \
                else EXIT_SETUP
        finally:
            run.log("stopping the clients and the servers")
            with gevent.Timeout(60, False):
                run.close()
    finally:
        watcher.cancel()
    if "aborted" in run.results:
        print(f"imserver.bench {name}: {run.results['aborted']}", file=sys.stderr)
    meta["seconds"] = round(time.time() - t0, 1)
    meta["loadavg_end"] = loadavg()
    problems = run.problems + run.results["errors"]
    run.results["verdict"] = {"ok": started and not problems and "aborted" not in run.results,
                              "problems": problems}
    run.results["settings"] = {k: v for k, v in vars(args).items()}
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(run.results, fh, indent=1, default=str)
    text = table(run)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(f"# {name}\n\n`{meta['command']}`\n\n{text}\n")
    print(text)
    print(f"\nresults: {os.path.join(out_dir, 'results.json')} (results.md, node logs)")
    if code == EXIT_OK and not run.results["verdict"]["ok"]:
        code = EXIT_FAILED
    print(f"imserver.bench {name}: " + ("PASS" if code == EXIT_OK else
                                       "FAIL: " + "; ".join(problems or [
                                           run.results.get("aborted", "")])),
          file=sys.stderr)
    return code
