"""The soak's command line: its options (it targets no given address), their checks and
the default bound of the whole run."""
import argparse
import sys

from ..options import add_options, plus_default

NAME = "soak"
HELP = "self-contained long run: Redis restart and a node kill under churn; memory, delivery"

RUN = [
    ("--duration", float, 1200.0, plus_default("seconds of churn and traffic.")),
    ("--steady", int, 200, plus_default("users logged in on node A for the whole run.")),
    ("--churners", int, 200,
     plus_default("churner user IDs (at most this many churners online at once).")),
    ("--churn-rate", float, 20.0,
     plus_default("churn cycles started per second, alternating A and B.")),
    ("--churn-hold-min", float, 0.5, plus_default("shortest stay of a churner, in seconds.")),
    ("--churn-hold-max", float, 10.0, plus_default("longest stay of a churner, in seconds.")),
    ("--rate", float, 20.0, plus_default("unicasts per second to random steady users.")),
    ("--broadcast-interval", float, 5.0, plus_default("seconds between two room broadcasts.")),
    ("--redis-down", float, 20.0, plus_default("seconds Redis stays stopped (at 1/3 of the run).")),
    ("--node-down", float, 20.0, plus_default("seconds node B stays killed (at 2/3 of the run).")),
    ("--heartbeat-interval", float, 30.0,
     plus_default("seconds between two heartbeats of a steady user.")),
    ("--warmup", int, 20, plus_default("unicasts (and two broadcasts) sent before the baseline, "
                                       "so that first-use allocations are not counted as "
                                       "growth.")),
    ("--baseline-settle", float, 10.0,
     plus_default("seconds between the warm-up and the baseline RSS.")),
    ("--settle", float, 30.0,
     plus_default("seconds between the end of the deliveries and the end RSS.")),
    ("--wait", float, 30.0, plus_default("seconds to wait for the last deliveries.")),
    ("--recovery-timeout", float, 60.0,
     plus_default("seconds a recovery (after Redis, after node B) may take.")),
    ("--sample-interval", float, 10.0, plus_default("seconds between two RSS samples.")),
    ("--progress-interval", float, 10.0,
     plus_default("seconds between two progress lines on stderr.")),
    ("--rss-tolerance-pct", float, 20.0,
     "end RSS may exceed the baseline by the larger of this percentage..."),
    ("--rss-tolerance-mb", float, 10.0, "...and this many MB. Defaults: 20 %% and 10 MB"),
    ("--seed", int, None, "random seed"),
]

PROCESSES = [
    ("--redis-server", str, "",
     "redis-server binary. Default: from PATH, else /usr/bin/redis-server"),
    ("--report-interval", float, 2.0, plus_default("the nodes' app.reportInterval.")),
    ("--node-log-level", str, "info", "the nodes' app.logLevel"),
    ("--access-log", bool, None, "the nodes write access-log lines"),
    ("--app-id", int, 101, plus_default("appID (the room).")),
]

OUTPUT = [
    ("--out", str, "", "results folder. Default: bench-results/soak-<timestamp>/"),
    ("--no-plots", bool, None, "skip rss.png"),
    ("--quiet", bool, None, "no progress on stderr"),
    ("--max-seconds", float, None, "stop everything after this many seconds (exit 3). "
                                   "Default: --duration plus every wait and settle plus 300"),
    ("--http-timeout", float, 10.0, plus_default("seconds for one HTTP call.")),
    ("--http-concurrency", int, 50, plus_default("HTTP sends in flight at most.")),
    ("--connect-timeout", float, 10.0,
     plus_default("seconds for one connect + handshake + login.")),
]


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``soak`` on the CLI's subparsers (its options are its own: it targets no
    given address)."""
    doc = sys.modules[__package__].__doc__
    p = sub.add_parser(NAME, help=HELP, description=doc.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p.add_argument_group("run"), RUN)
    add_options(p.add_argument_group("processes"), PROCESSES)
    add_options(p.add_argument_group("output and limits"), OUTPUT)
    return p


def check_args(args) -> "list[str]":
    errors = []
    third = args.duration / 3
    if args.duration <= 0:
        errors.append("--duration must be > 0")
    if args.steady < 1:
        errors.append("--steady must be at least 1")
    if args.churners < 0 or args.churn_rate < 0 or args.rate <= 0:
        errors.append("--churners and --churn-rate must be >= 0, --rate > 0")
    if not 0 <= args.churn_hold_min <= args.churn_hold_max:
        errors.append("need 0 <= --churn-hold-min <= --churn-hold-max")
    for flag, seconds in (("--redis-down", args.redis_down), ("--node-down", args.node_down)):
        if not 0 < seconds < third:
            errors.append(f"{flag} must be > 0 and shorter than a third of --duration "
                          f"({third:g}s)")
    if args.broadcast_interval <= 0 or args.sample_interval <= 0 or args.progress_interval <= 0:
        errors.append("intervals must be > 0")
    return errors


def default_max_seconds(args) -> float:
    return (args.duration + args.baseline_settle + args.settle + args.wait
            + 2 * args.recovery_timeout + args.churn_hold_max + 300)
