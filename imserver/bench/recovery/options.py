"""The recovery scenario's command line (it targets no given address: it starts Redis and
two nodes itself)."""
import argparse
import sys

from ..options import add_options, plus_default

NAME = "recovery"
HELP = ("self-contained: a node drained under a room's traffic, its clients recover on the "
        "other node; lost/duplicated messages, recovery times, Redis commands per message")

RUN = [
    (("-n", "--clients"), int, 1000,
     plus_default("clients logged in on node A and joined to the room."), {"dest": "clients"}),
    ("--messages", int, 100,
     plus_default("messages published to the room through node B's /room/publish while A "
                  "drains (at most the room's history size: 100 unless --history-size).")),
    ("--publish-rate", float, 50.0, plus_default("those publications per second.")),
    ("--room", str, "bench-recovery", plus_default("the named room.")),
    ("--b-members", int, 10, plus_default(
        "members of the room on node B for the whole run (the room has members on both "
        "nodes for the command counts; they must get every message too).")),
    ("--stats-messages", int, 200, plus_default(
        "before the drain: this many /room/publish calls, then as many "
        "/user/sendMessageAll, through node B, each one at a time, with INFO commandstats "
        "read around each run; 0: skip.")),
    ("--stats-idle", float, 5.0, plus_default(
        "seconds of INFO commandstats with no sends, taken off the counts (the nodes' "
        "reports and room sizes).")),
    ("--spread", float, 1.0, plus_default(
        "a closed client waits a random 0..SPREAD s before reconnecting to node B.")),
    ("--reconnect-tries", int, 8, plus_default("reconnect attempts of one client at most.")),
    ("--reconnect-backoff", float, 0.5, plus_default(
        "seconds before the 2nd attempt, doubled each time up to 4 s (times a random "
        "0.5-1.5).")),
    ("--drain-window", float, 2.0, plus_default(
        "the nodes' app.drainWindow: node A's closes (1001) are spread over it.")),
    ("--concurrency", int, 100, plus_default("first logins in progress at once.")),
    ("--wait", float, 30.0, plus_default(
        "seconds, after the last publication, for every client to have every message.")),
    ("--source-ips", str, "127.0.0.2", plus_default(
        "source addresses of the clients, round robin ('none': let the OS choose).")),
    ("--seed", int, None, "random seed (reconnect pauses)"),
]

PROCESSES = [
    ("--redis-server", str, "",
     "redis-server binary. Default: from PATH, else /usr/bin/redis-server"),
    ("--report-interval", float, 2.0, plus_default("the nodes' app.reportInterval.")),
    ("--history-size", int, 0, "the nodes' app.historySize (0: the node's default, 100)"),
    ("--presence-max-room", int, None, "the nodes' app.presenceMaxRoom (default: the node's, "
                                       "1000)"),
    ("--node-log-level", str, "warning", plus_default("the nodes' app.logLevel.")),
    ("--access-log", bool, None, "the nodes write access-log lines"),
    ("--app-id", int, 101, plus_default("appID.")),
]

OUTPUT = [
    ("--out", str, "", "results folder. Default: bench-results/recovery-<timestamp>/"),
    ("--quiet", bool, None, "no progress on stderr"),
    ("--max-seconds", float, None, "stop everything after this many seconds (exit 3). "
                                   "Default: 120 plus the connect, publish and wait times"),
    ("--http-timeout", float, 10.0, plus_default("seconds for one HTTP call.")),
    ("--connect-timeout", float, 10.0,
     plus_default("seconds for one connect + handshake + login (and join).")),
]


def add_parser(sub) -> argparse.ArgumentParser:
    doc = sys.modules[__package__].__doc__
    p = sub.add_parser(NAME, help=HELP, description=doc.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p.add_argument_group("run"), RUN)
    add_options(p.add_argument_group("processes"), PROCESSES)
    add_options(p.add_argument_group("output and limits"), OUTPUT)
    return p


MAX_CLIENTS = 15000  # one process, 20,000 open files: A's and B's sockets of a client overlap


def check_args(args) -> "list[str]":
    errors = []
    if not 1 <= args.clients <= MAX_CLIENTS:
        errors.append(f"-n must be 1 to {MAX_CLIENTS} (one process holds the clients)")
    if args.messages < 1 or args.publish_rate <= 0:
        errors.append("--messages must be at least 1 and --publish-rate > 0")
    history = args.history_size or 100
    if args.messages > history:
        errors.append(f"--messages {args.messages} exceeds the room's history "
                      f"({history}): clients closed early could not recover; raise "
                      "--history-size")
    if args.b_members < 0 or args.stats_messages < 0:
        errors.append("--b-members and --stats-messages must be >= 0")
    if args.spread < 0 or args.drain_window < 0 or args.wait <= 0:
        errors.append("--spread and --drain-window must be >= 0, --wait > 0")
    if args.reconnect_tries < 1 or args.concurrency < 1:
        errors.append("--reconnect-tries and --concurrency must be at least 1")
    if not args.room or len(args.room) > 64:
        errors.append("--room must be 1 to 64 characters")
    return errors


def default_max_seconds(args) -> float:
    connect = args.clients / 50.0  # a slow first login burst on two shared cores
    publish = args.messages / args.publish_rate + 2 * args.stats_messages * 0.05
    return 120 + connect + publish + args.wait + args.drain_window + args.spread
