"""The soak run from start to end: set up, traffic and faults for ``--duration``, last
deliveries and settle, then stop everything it started and report; ``main`` bounds it by
``--max-seconds`` and turns the verdict into the exit code."""
import os
import shlex
import signal
import sys
import time
from collections import Counter

import gevent

from . import report, results
from .churn import Churn
from .cluster import Cluster
from .context import Context, Interrupted
from .events import Director
from .memory import Memory
from .options import NAME, check_args, default_max_seconds
from .steady import SteadyUsers
from .traffic import Traffic

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_MAX_SECONDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Soak:
    def __init__(self, args, out_dir: str, meta: dict):
        self.a = args
        self.out = out_dir
        self.ctx = Context(args)
        self.results = {"meta": meta}
        self.cluster = Cluster(self.ctx, out_dir)
        self.steady = SteadyUsers(self.ctx)
        self.traffic = Traffic(self.ctx, self.cluster, self.steady)
        self.churn = Churn(self.ctx, self.cluster)
        self.director = Director(self.ctx, self.cluster, self.steady)
        self.memory = Memory(self.ctx, self.cluster)
        self.end_state = None

    def log(self, text: str) -> None:
        self.ctx.log(text)

    @property
    def started(self) -> bool:
        """Churn and traffic have begun (before that, a failure is one of the setup)."""
        return self.ctx.t0 is not None

    def setup(self) -> None:
        a, ctx = self.a, self.ctx
        ctx.setup_t = time.time()
        self.cluster.start(self.results["meta"])
        self.steady.connect(self.cluster.node_a.ws_url, self.results)
        ctx.spawn(self.steady.heartbeat_loop)
        ctx.spawn(self.memory.loop)
        self.traffic.warm_up()
        self.log(f"baseline: waiting {a.baseline_settle:g}s")
        gevent.sleep(a.baseline_settle)
        baseline = self.memory.take_baseline()
        self.log(f"baseline: node A worker RSS {baseline['a_worker_rss_kb'] / 1024:.1f} MB "
                 f"with {len(self.steady.conns)} steady users")

    def run(self) -> None:
        a, ctx = self.a, self.ctx
        self.setup()
        ctx.t0 = time.time()
        ctx.t_end = ctx.t0 + a.duration
        self.memory.shift(ctx.t0 - ctx.setup_t)
        ctx.event("start", duration=a.duration)
        ctx.stage = "traffic"
        loops = [gevent.spawn(ctx.guarded, fn) for fn in
                 (self.traffic.unicast_loop, self.traffic.broadcast_loop, self.churn.loop)]
        director = gevent.spawn(ctx.guarded, self.director.run)
        progress = ctx.spawn(self.progress_loop)
        gevent.sleep(max(0.0, ctx.t_end - time.time()))
        ctx.event("traffic_stop")
        ctx.stage = "last deliveries"
        gevent.joinall(loops, timeout=a.http_timeout * 2 + 10)
        self.churn.group.join(timeout=a.churn_hold_max + a.connect_timeout + 10)
        self.churn.stop()
        director.join(timeout=a.recovery_timeout + 30)
        if not director.dead:
            ctx.errors.append("the events were still running at the end")
            director.kill(block=True, timeout=5)
        self.wait_deliveries()
        self.log(f"deliveries done; settling {a.settle:g}s before the end RSS")
        ctx.stage = "settle"
        gevent.sleep(a.settle)
        end = self.memory.take_end()
        ctx.event("end", a_worker_rss_kb=end["a_worker_rss_kb"])
        self.end_state = {"a": self.cluster.node_a.state(), "b": self.cluster.node_b.state()}
        self.steady.live_at_end = len(self.steady.conns)
        progress.kill(block=False)

    def wait_deliveries(self) -> None:
        sends = self.traffic.unicasts + self.traffic.broadcasts
        deadline = time.monotonic() + self.a.wait
        while time.monotonic() < deadline and self.traffic.missing_of(sends)[0]:
            gevent.sleep(0.2)

    def progress_loop(self) -> None:
        ctx, traffic = self.ctx, self.traffic
        while not ctx.stopping.wait(self.a.progress_interval):
            t = ctx.rel()
            acc = [r for r in traffic.unicasts if r["accepted"]]
            delivered = sum(1 for r in acc if r["user"] in self.steady.reached(r["msg_id"]))
            refused = Counter(r["refused"] for r in traffic.unicasts if not r["accepted"])
            top = ", ".join(f"{k}: {v}" for k, v in refused.most_common(2))
            b_ok = sum(1 for r in traffic.broadcasts if r["accepted"])
            b_must = [r for r in traffic.broadcasts if traffic.must_reach(r)]
            b_missing = traffic.missing_of(b_must)[0]
            samples = self.memory.samples
            rss = samples[-1]["a_worker_rss_kb"] if samples else None
            stage = ctx.phase(t) if ctx.stage == "traffic" else ctx.stage
            self.log(f"t={t:6.0f}/{self.a.duration:g}s [{stage}] unicast "
                     f"{len(traffic.unicasts)} sent: {len(acc)} accepted, {delivered} delivered, "
                     f"{sum(refused.values())} refused{' (' + top + ')' if top else ''} | "
                     f"broadcast {b_ok}/{len(traffic.broadcasts)} accepted, "
                     f"{len(b_must) - b_missing}/{len(b_must)} reached all | churn "
                     f"{self.churn.counts['logged_in']} logins, "
                     f"{sum(self.churn.failed.values())} failed | steady "
                     f"{len(self.steady.conns)}/{len(self.steady.users)}, "
                     f"{len(self.steady.dropped)} dropped | A worker RSS "
                     f"{(rss or 0) / 1024:.1f} MB (baseline "
                     f"{self.memory.baseline['a_worker_rss_kb'] / 1024:.1f})")

    def close(self) -> None:
        """Stop everything this run started, by pid. Runs in ``finally``."""
        started = time.monotonic()
        self.ctx.stopping.set()
        self.churn.stop()
        self.steady.close()
        self.ctx.background.kill(block=True, timeout=5)
        left = self.cluster.stop()
        if left:
            self.ctx.errors.append(f"killed leftover processes {left}")
        self.log(f"stopped in {time.monotonic() - started:.1f}s")

    def summarize(self) -> dict:
        a, ctx, r = self.a, self.ctx, self.results
        r["settings"] = {k: v for k, v in vars(a).items() if k not in ("func",)}
        r["run_id"] = ctx.run_id
        r["events"] = ctx.events
        r["windows"] = [{"phase": n, "start": s, "end": e} for n, s, e in ctx.windows]
        r["recovery"] = self.director.recovery
        r["unicast"] = results.unicast(self.traffic, self.steady, a)
        r["broadcast"] = results.broadcast(self.traffic, self.steady, a)
        r["steady"] = results.steady_users(self.steady, a)
        r["churn"] = results.churn(self.churn, a)
        r["memory"] = self.memory.summary()
        r["end_state"] = self.end_state
        r["errors"] = ctx.errors
        r["verdict"] = results.verdict(r, self.director.recovery, a.recovery_timeout)
        return r


def run_bounded(soak: Soak, max_seconds: float) -> int:
    """Run the soak within ``max_seconds``, SIGTERM and Ctrl-C stopping it cleanly; the
    processes are stopped whatever happens. The exit code before the verdict."""
    main_greenlet = gevent.getcurrent()
    hub = gevent.get_hub()

    def on_signal():
        hub.loop.run_callback(main_greenlet.throw, Interrupted())

    watchers = [gevent.signal_handler(signal.SIGTERM, on_signal)]
    code = EXIT_OK
    try:
        try:
            with gevent.Timeout(max_seconds):
                soak.run()
        except gevent.Timeout:
            code = _aborted(soak, f"--max-seconds {max_seconds:g} reached",
                            f"--max-seconds {max_seconds:g} reached, stopping", EXIT_MAX_SECONDS)
        except (KeyboardInterrupt, Interrupted):
            code = _aborted(soak, "interrupted", "interrupted, stopping", EXIT_INTERRUPTED)
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            code = _aborted(soak, what, f"error: {what}",
                            EXIT_FAILED if soak.started else EXIT_SETUP)
        finally:
            soak.log("stopping the steady users, the nodes and Redis")
            # Not interruptible by a second signal halfway: the processes must go.
            with gevent.Timeout(60, False):
                soak.close()
    finally:
        for w in watchers:
            w.cancel()
    return code


def _aborted(soak, reason: str, message: str, code: int) -> int:
    soak.results["aborted"] = reason
    print(f"imserver.bench {NAME}: {message}", file=sys.stderr)
    return code


def main(args, argv) -> int:
    """``python -m imserver.bench soak ...`` (called by the CLI with its parsed args)."""
    errors = check_args(args)
    if errors:
        print("imserver.bench soak: " + "; ".join(errors), file=sys.stderr)
        return EXIT_SETUP
    max_seconds = args.max_seconds or default_max_seconds(args)
    out_dir = os.path.abspath(args.out or os.path.join(
        "bench-results", "soak-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out_dir, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m imserver.bench " + " ".join(shlex.quote(x) for x in argv),
            "scenario": NAME, "out": out_dir, "max_seconds": max_seconds,
            "python": sys.version.split()[0], "cpus": os.cpu_count()}
    soak = Soak(args, out_dir, meta)
    t0 = time.time()
    code = run_bounded(soak, max_seconds)
    soak.results["meta"]["seconds"] = round(time.time() - t0, 1)
    soak.summarize()
    written = report.write(out_dir, soak, plots=not args.no_plots)
    print(report.summary_table(soak.results))
    print(f"\nresults: {os.path.join(out_dir, 'results.json')} ({', '.join(written[1:])})")
    verdict = soak.results["verdict"]
    if code == EXIT_OK and not verdict["ok"]:
        code = EXIT_FAILED
    if verdict["ok"] and code == EXIT_OK:
        print("imserver.bench soak: PASS", file=sys.stderr)
    else:
        print("imserver.bench soak: FAIL: " + "; ".join(verdict["problems"]), file=sys.stderr)
    return code
