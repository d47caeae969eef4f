"""The recovery run: set up, commands per message, drain under traffic, recover, verify,
stop what it started; ``main`` bounds it by ``--max-seconds``."""
import json
import os
import random
import shlex
import signal
import sys
import time
from collections import Counter

import gevent
from gevent.pool import Pool

from ..client import percentiles
from ..coordinator import HttpPool
from ..soak.cluster import Cluster, RunContext, redis_binary  # noqa: F401  (redis_binary: checked early)
from ..soak.context import Interrupted
from .members import Member, RoomDriver, come_back, first_join, serve_until_closed
from .options import NAME, check_args, default_max_seconds
from .redisstats import CommandMeter

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_MAX_SECONDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
BANNER = "recovery"
PUBLISHER = "bench-publisher"


class Recovery:
    def __init__(self, args, out_dir: str, meta: dict):
        self.a = args
        self.out = out_dir
        self.ctx = RunContext(args, NAME)
        self.rng = self.ctx.rng
        self.run_id = "rc%04x" % random.getrandbits(16)
        app = {"drainWindow": args.drain_window, "maxConnections": 19000}
        if args.history_size:
            app["historySize"] = args.history_size
        if args.presence_max_room is not None:
            app["presenceMaxRoom"] = args.presence_max_room
        self.cluster = Cluster(self.ctx, out_dir, {"app": app}, banner=BANNER)
        self.results = {"meta": meta}
        self.members = []  # on A, then B after the drain
        self.b_members = []  # on B throughout
        self.by_conn = {}
        self.published = {}  # msgID -> offset: every message of the room that was accepted
        self.publish_log = []
        self.t_drain = None
        self.t_published = None
        self.draining = False
        self.errors = []
        self.greenlets = []
        sources = [] if args.source_ips.strip().lower() == "none" else [
            s.strip() for s in args.source_ips.split(",") if s.strip()]
        self.sources = sources or [""]

    def log(self, text):
        self.ctx.log(text)

    def source(self, i: int) -> str:
        return self.sources[i % len(self.sources)]

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        a = self.a
        self.cluster.start(self.results["meta"])
        kw = {"app_id": a.app_id, "timeout": a.connect_timeout}
        self.driver_a = RoomDriver(self.cluster.node_a.ws_url, a.room, self.by_conn, **kw)
        self.driver_b = RoomDriver(self.cluster.node_b.ws_url, a.room, self.by_conn, **kw)
        self.http_b = HttpPool(self.cluster.node_b.http_url, size=8, timeout=a.http_timeout)
        self.members = [Member(i, f"{self.run_id}-a{i}", "A") for i in range(a.clients)]
        self.b_members = [Member(i, f"{self.run_id}-b{i}", "B") for i in range(a.b_members)]
        t = time.time()
        pool = Pool(a.concurrency)
        for m in self.b_members:
            pool.spawn(first_join, self.driver_b, m, self.source(m.index))
        for m in self.members:
            pool.spawn(first_join, self.driver_a, m, self.source(m.index))
        pool.join(timeout=max(60.0, a.clients / 20.0))
        pool.kill()
        failed = [m for m in self.members + self.b_members if m.state != "joined"]
        self.results["setup"] = {
            "seconds": round(time.time() - t, 2), "joined_a": sum(
                m.state == "joined" for m in self.members),
            "joined_b": sum(m.state == "joined" for m in self.b_members),
            "failures": dict(sum((m.failures for m in self.members + self.b_members),
                                 Counter()))}
        if failed:
            raise RuntimeError(f"{len(failed)} clients could not log in and join: "
                               f"{self.results['setup']['failures']}")
        for m in self.members:
            self.greenlets.append(gevent.spawn(self.life_on_a, m))
        for m in self.b_members:
            self.greenlets.append(gevent.spawn(self.driver_b.serve, m.conn))
        self.log(f"{len(self.members)} clients on node A and {len(self.b_members)} on node B "
                 f"joined room {a.room!r} in {time.time() - t:.1f}s")

    def life_on_a(self, m: Member) -> None:
        m.t_closed, m.close_code = serve_until_closed(self.driver_a, m)
        if not self.draining:
            m.state = "dropped before the drain"
            return
        m.state = "closed"
        come_back(self.driver_b, m, self.source(m.index), self.a.spread,
                  self.a.reconnect_tries, self.a.reconnect_backoff, self.rng,
                  self.deadline)

    # -- sends -----------------------------------------------------------------------------

    def publish(self, msg_id: str, text: str) -> "dict | None":
        """One /room/publish through node B; the answer's data when accepted."""
        t0 = time.time()
        try:
            status, body = self.http_b.post("/room/publish", appID=self.a.app_id,
                                            room=self.a.room, userID=PUBLISHER, msgID=msg_id,
                                            message=text)
            data = body.get("data") if status == 200 and body.get("code") == 200 else None
            answer = f"{status} {body.get('code')}"
        except (OSError, ValueError) as exc:
            data, answer = None, f"error {type(exc).__name__}"
        ok = bool(data and data.get("sendResults") and isinstance(data.get("offset"), int))
        if ok:
            self.published[msg_id] = data["offset"]
        self.publish_log.append({"msg_id": msg_id, "t": round(t0, 4),
                                 "ms": round((time.time() - t0) * 1000, 2), "answer": answer,
                                 "offset": data.get("offset") if data else None,
                                 "err": data.get("sendResultsErr") if data else None})
        return data if ok else None

    def send_all(self, msg_id: str, text: str) -> bool:
        try:
            status, body = self.http_b.post("/user/sendMessageAll", appID=self.a.app_id,
                                            userID=PUBLISHER, msgID=msg_id, message=text)
        except (OSError, ValueError):
            return False
        return status == 200 and body.get("code") == 200

    def command_counts(self) -> None:
        a = self.a
        if a.stats_messages <= 0:
            return
        redis = self.cluster.redis
        meter = CommandMeter("127.0.0.1", redis.port)
        self.log(f"INFO commandstats: {a.stats_idle:g}s idle, then {a.stats_messages} "
                 f"/room/publish and {a.stats_messages} /user/sendMessageAll through node B")
        # warm-up: the nodes load their scripts (SCRIPT LOAD after a NOSCRIPT) at first use
        self.publish(f"{self.run_id}-w", "warm-up")
        self.send_all(f"{self.run_id}-allw", "warm-up")
        idle = meter.idle(a.stats_idle)
        pub = meter.measure("/room/publish", a.stats_messages, lambda i: self.publish(
            f"{self.run_id}-s{i}", f"stats {i}"))
        alls = meter.measure("/user/sendMessageAll", a.stats_messages, lambda i: self.send_all(
            f"{self.run_id}-all{i}", f"all {i}"))
        self.results["redis_commands"] = {"idle": idle, "room_publish": pub,
                                          "send_message_all": alls}
        for r in (pub, alls):
            self.log(f"{r['label']}: {r['total_net_per_msg']} Redis commands per message "
                     f"(net; gross {r['total_gross_per_msg']}): " + ", ".join(
                         f"{k} {v['net_per_msg']}" for k, v in r["per_message"].items()
                         if v["net_per_msg"] >= 0.01))

    def wait_current(self, timeout: float) -> None:
        """Until every client saw the room's top offset (the sends before the drain)."""
        top = max(self.published.values(), default=0)
        deadline = time.monotonic() + timeout
        everyone = self.members + self.b_members
        while time.monotonic() < deadline:
            if all(m.last >= top for m in everyone):
                return
            gevent.sleep(0.1)
        behind = sum(1 for m in everyone if m.last < top)
        self.errors.append(f"{behind} clients had not seen offset {top} before the drain")

    def publisher(self) -> None:
        a = self.a
        t0 = time.time()
        for k in range(a.messages):
            slot = t0 + k / a.publish_rate
            delay = slot - time.time()
            if delay > 0:
                gevent.sleep(delay)
            self.publish(f"{self.run_id}-m{k}", f"recovery {k}")
        self.t_published = time.time()

    # -- the drain --------------------------------------------------------------------------

    def run(self) -> None:
        a = self.a
        self.deadline = time.time() + 10 ** 6
        self.setup()
        self.command_counts()
        self.wait_current(15)
        node_a = self.cluster.node_a
        node_a.drop_keepalives()
        self.deadline = time.time() + a.messages / a.publish_rate + a.wait + a.drain_window
        self.log(f"draining node A (SIGTERM to {node_a.pid}) while {a.messages} messages go "
                 f"to {a.room!r} through node B at {a.publish_rate:g}/s")
        self.draining = True
        self.t_drain = time.time()
        node_a.proc.send_signal(signal.SIGTERM)
        pub = gevent.spawn(self.publisher)
        pub.join()
        accepted = sum(1 for r in self.publish_log
                       if r["msg_id"].startswith(self.run_id + "-m") and r["offset"])
        self.log(f"published {accepted} of {a.messages} in {self.t_published - self.t_drain:.2f}s"
                 f"; waiting up to {a.wait:g}s for every client to have every message")
        self.wait_complete(a.wait)
        status = node_a.stop(timeout=a.drain_window + 15)
        self.results["node_a_exit"] = status

    def expected_for(self, m: Member) -> "list[str]":
        top = m.first_top or 0
        return [mid for mid, off in self.published.items() if off > top]

    def missing(self, m: Member) -> int:
        return sum(1 for mid in self.expected_for(m) if not m.got.get(mid))

    def wait_complete(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_log = 0
        while time.monotonic() < deadline:
            pending = [m for m in self.members if m.state not in ("gave up", "failed")
                       and (m.state not in ("recovered", "not recovered") or self.missing(m))]
            pending += [m for m in self.b_members if self.missing(m)]
            if not pending:
                return
            if time.monotonic() - last_log > 2:
                last_log = time.monotonic()
                self.log(f"{len(pending)} clients not complete yet (states: "
                         f"{dict(Counter(m.state for m in self.members))})")
            gevent.sleep(0.1)

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        for m in self.members + self.b_members:
            if m.conn is not None and not m.conn.closed:
                m.conn.close(1000)
        gevent.sleep(0.5)
        for m in self.members + self.b_members:
            if m.conn is not None:
                m.conn.abort()
        gevent.killall(self.greenlets, block=True, timeout=5)
        left = self.cluster.stop()
        if left:
            self.errors.append(f"killed leftover processes {left}")

    def summarize(self) -> dict:
        r, a = self.results, self.a
        r["settings"] = dict(vars(a))
        r["run_id"] = self.run_id
        drain_msgs = [x for x in self.publish_log if x["msg_id"].startswith(self.run_id + "-m")]
        r["published"] = {
            "room": a.room, "during_drain": len(drain_msgs),
            "accepted_during_drain": sum(1 for x in drain_msgs if x["offset"]),
            "accepted_total": len(self.published),
            "refused": dict(Counter(x["answer"] for x in drain_msgs if not x["offset"])),
            "with_send_results_err": sum(1 for x in drain_msgs if x["err"]),
            "publish_ms": percentiles([x["ms"] for x in drain_msgs]),
            "seconds": round(self.t_published - self.t_drain, 3)
            if self.t_published and self.t_drain else None}
        per_client = []
        lost = dup = unexpected = disorder = expected_total = 0
        for m in self.members + self.b_members:
            exp = self.expected_for(m)
            m_lost = sum(1 for mid in exp if not m.got.get(mid))
            m_dup = sum(c - 1 for c in m.got.values() if c > 1)
            m_unexp = sum(1 for mid in m.got if mid not in self.published)
            m_dis = sum(1 for x, y in zip(m.offsets, m.offsets[1:]) if y <= x)
            lost += m_lost
            dup += m_dup
            unexpected += m_unexp
            disorder += m_dis
            expected_total += len(exp)
            if m_lost or m_dup or m_unexp or m_dis or m.state not in ("recovered", "joined"):
                per_client.append({"user": m.user, "node": m.node, "state": m.state,
                                   "close_code": m.close_code, "recovered": m.recovered,
                                   "lost": m_lost, "duplicated": m_dup,
                                   "unexpected": m_unexp, "out_of_order": m_dis,
                                   "failures": dict(m.failures)})
        rec = [m for m in self.members if m.recovered]
        t0 = self.t_drain or 0
        drain_to = [(m.t_recovered - t0) * 1000 for m in rec]
        downtime = [(m.t_recovered - m.t_closed) * 1000 for m in rec if m.t_closed]
        closed_at = [(m.t_closed - t0) * 1000 for m in self.members if m.t_closed]
        r["clients"] = {
            "on_a": len(self.members), "on_b": len(self.b_members),
            "close_codes": {str(k): v for k, v in Counter(
                m.close_code for m in self.members).items()},
            "states": dict(Counter(m.state for m in self.members)),
            "recovered": len(rec),
            "not_recovered": sum(1 for m in self.members if m.recovered is False),
            "never_back": sum(1 for m in self.members if m.t_recovered is None),
            "publications_in_join_replies": sum(m.recovered_count for m in self.members),
            # a first login and one recovery attempt are the plan; more are retries
            "reconnect_attempts": sum(max(0, m.tries - 2) for m in self.members),
            "failures": dict(sum((m.failures for m in self.members), Counter())),
        }
        r["messages"] = {"expected_deliveries": expected_total,
                         "delivered": sum(sum(m.got.values()) for m in self.members + self.b_members),
                         "lost": lost, "duplicated": dup, "unexpected": unexpected,
                         "out_of_order": disorder, "frames": {
                             "a": dict(self.driver_a.frames), "b": dict(self.driver_b.frames)}}
        r["times_ms"] = {
            "drain_to_last_recovered": round(max(drain_to), 1) if drain_to else None,
            "drain_to_recovered": percentiles(drain_to),
            "close_to_recovered": percentiles(downtime),
            "drain_to_close": percentiles(closed_at)}
        r["problem_clients"] = per_client[:50]
        r["errors"] = self.errors
        problems = []
        if lost or dup or unexpected or disorder:
            problems.append(f"{lost} lost, {dup} duplicated, {unexpected} unexpected, "
                            f"{disorder} out of order")
        if len(rec) != len(self.members):
            problems.append(f"{len(self.members) - len(rec)} of {len(self.members)} clients "
                            "not recovered")
        if r["published"]["accepted_during_drain"] != a.messages:
            problems.append(f"{a.messages - r['published']['accepted_during_drain']} "
                            "publications refused")
        bad_close = {k: v for k, v in r["clients"]["close_codes"].items() if k != "1001"}
        if bad_close:
            problems.append(f"closes other than 1001: {bad_close}")
        problems += self.errors
        r["verdict"] = {"ok": not problems and "aborted" not in r, "problems": problems}
        return r


def _fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(r: dict) -> str:
    rows = []
    c, m, t, p = (r.get("clients") or {}, r.get("messages") or {}, r.get("times_ms") or {},
                  r.get("published") or {})
    if c:
        rows += [("clients on A / on B", f"{_fmt(c['on_a'])} / {_fmt(c['on_b'])}"),
                 ("close codes from A", json.dumps(c["close_codes"])),
                 ("recovered / not recovered / never back",
                  f"{_fmt(c['recovered'])} / {_fmt(c['not_recovered'])} / "
                  f"{_fmt(c['never_back'])}"),
                 ("messages in join replies", _fmt(c["publications_in_join_replies"])),
                 ("reconnect retries", _fmt(c["reconnect_attempts"]))]
    if p:
        rows += [("published during the drain: accepted / sent",
                  f"{_fmt(p['accepted_during_drain'])} / {_fmt(p['during_drain'])} in "
                  f"{_fmt(p['seconds'])} s")]
    if m:
        rows += [("deliveries expected / received", f"{_fmt(m['expected_deliveries'])} / "
                                                    f"{_fmt(m['delivered'])}"),
                 ("lost / duplicated / out of order",
                  f"{_fmt(m['lost'])} / {_fmt(m['duplicated'])} / {_fmt(m['out_of_order'])}")]
    if t:
        d, cl = t["drain_to_recovered"], t["close_to_recovered"]
        rows += [("drain → last client recovered (ms)", _fmt(t["drain_to_last_recovered"])),
                 ("drain → recovered, p50 / p99 (ms)",
                  f"{_fmt(d.get('p50'))} / {_fmt(d.get('p99'))}"),
                 ("close → recovered per client, p50 / p99 (ms)",
                  f"{_fmt(cl.get('p50'))} / {_fmt(cl.get('p99'))}")]
    for key in ("room_publish", "send_message_all"):
        s = (r.get("redis_commands") or {}).get(key)
        if s:
            rows.append((f"Redis commands per {s['label']} (net)",
                         f"{s['total_net_per_msg']}: " + ", ".join(
                             f"{k} {v['net_per_msg']}" for k, v in s["per_message"].items()
                             if v["net_per_msg"] >= 0.01)))
    v = r.get("verdict") or {}
    rows.append(("verdict", "PASS" if v.get("ok") else "FAIL: " + "; ".join(
        v.get("problems") or [r.get("aborted", "")])))
    return "\n".join(["| metric | value |", "|---|---|"] +
                     [f"| {k} | {val} |" for k, val in rows])


def main(args, argv) -> int:
    """``python -m imserver.bench recovery ...`` (called by the CLI with its parsed args)."""
    errors = check_args(args)
    if errors:
        print(f"imserver.bench {NAME}: " + "; ".join(errors), file=sys.stderr)
        return EXIT_SETUP
    try:
        redis_binary(args.redis_server)
    except RuntimeError as exc:
        print(f"imserver.bench {NAME}: {exc}", file=sys.stderr)
        return EXIT_SETUP
    max_seconds = args.max_seconds or default_max_seconds(args)
    out_dir = os.path.abspath(args.out or os.path.join(
        "bench-results", "recovery-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out_dir, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m imserver.bench " + " ".join(shlex.quote(x) for x in argv),
            "scenario": NAME, "out": out_dir, "max_seconds": max_seconds}
    rec = Recovery(args, out_dir, meta)
    main_greenlet = gevent.getcurrent()
    watcher = gevent.signal_handler(
        signal.SIGTERM, lambda: gevent.get_hub().loop.run_callback(main_greenlet.throw,
                                                                   Interrupted()))
    code = EXIT_OK
    t0 = time.time()
    try:
        try:
            with gevent.Timeout(max_seconds):
                rec.run()
        except gevent.Timeout:
            rec.results["aborted"] = f"--max-seconds {max_seconds:g} reached"
            code = EXIT_MAX_SECONDS
        except (KeyboardInterrupt, Interrupted):
            rec.results["aborted"] = "interrupted"
            code = EXIT_INTERRUPTED
        except Exception as exc:
            rec.results["aborted"] = f"{type(exc).__name__}: {exc}"
            code = EXIT_FAILED if rec.t_drain else EXIT_SETUP
        finally:
            rec.log("stopping the clients, the nodes and Redis")
            with gevent.Timeout(60, False):
                rec.close()
    finally:
        watcher.cancel()
    if "aborted" in rec.results:
        print(f"imserver.bench {NAME}: {rec.results['aborted']}", file=sys.stderr)
    rec.results["meta"]["seconds"] = round(time.time() - t0, 1)
    try:
        rec.summarize()
    except Exception as exc:  # a run cut short may leave parts unset
        rec.results["verdict"] = {"ok": False, "problems": [f"summary: {exc}"]}
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(rec.results, fh, indent=1, default=str)
    with open(os.path.join(out_dir, "publications.jsonl"), "w") as fh:
        for row in rec.publish_log:
            fh.write(json.dumps(row) + "\n")
    text = table(rec.results)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(f"# {NAME}\n\n`{meta['command']}`\n\n{text}\n")
    print(text)
    print(f"\nresults: {os.path.join(out_dir, 'results.json')} (results.md, "
          "publications.jsonl, node and Redis logs)")
    verdict = rec.results["verdict"]
    if code == EXIT_OK and not verdict["ok"]:
        code = EXIT_FAILED
    print(f"imserver.bench {NAME}: " + ("PASS" if code == EXIT_OK else
                                       "FAIL: " + "; ".join(verdict["problems"])),
          file=sys.stderr)
    return code
