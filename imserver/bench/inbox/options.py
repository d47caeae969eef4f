"""The command lines of ``private`` and ``offline`` (self-contained: they start one embedded
node, or a Redis and two cluster nodes, themselves)."""
import argparse
import math

from ..options import add_options, plus_default

PRIVATE, OFFLINE = "private", "offline"
NAMES = (PRIVATE, OFFLINE)

PRIVATE_HELP = ("self-contained: private messages to online users at a rate, over HTTP "
                "/user/sendMessage and WebSocket send; latency to the receiver's frame, "
                "each message exactly once")
OFFLINE_HELP = ("self-contained: messages stored for offline users, who then log in with a "
                "deviceID at a rate; every message delivered once and in offset order, time "
                "to the last, memory per stored message")

PRIVATE_DOC = """\
Starts one embedded node (--nodes 1) or a redis-server and two cluster nodes (--nodes 2),
on loopback ports below 32768, and stops them by pid at the end. -n users log in with a
deviceID, spread over the nodes (user i on node i mod N) and over client worker processes;
--senders more users log in the same way and send.

Phase http: --messages POST /user/sendMessage to random users at --rate/s, round robin over
the nodes' HTTP APIs (with 2 nodes half of them reach a user on the other node). Phase ws:
--messages WebSocket `send` frames by the senders (round robin; each under the node's
per-connection rate limit) to random users at --rate/s. After each phase the tool waits
until every accepted message was read (at most --wait s).

Reported per phase: accepted, `sendResults`/`delivered` true, read by the receiver,
lost, duplicated, misrouted (read by another user), out of offset order; latency from the
call (HTTP request written / send frame written) to the frame read by the receiver,
p50/p99/max; the achieved rate; the nodes' CPU over the phase; the load average.

Exit code 0 when every accepted message was read exactly once by its receiver and nothing
was refused; 1 otherwise; 2 when the run could not be set up; 3 at --max-seconds."""

OFFLINE_DOC = """\
Starts one embedded node (--nodes 1) or a redis-server and two cluster nodes (--nodes 2),
on loopback ports below 32768, and stops them by pid at the end.

Store: --per-user POST /user/sendMessage to each of -n users who are offline, round robin
over the nodes (at --store-rate/s, 0: as fast as --http-concurrency allows). Memory per
stored message: the Redis server's INFO memory used_memory (cluster) and the nodes' worker
RSS, before and after (after --settle s), divided by the messages stored.

Login: every user logs in with a deviceID, at --login-rate/s, on node i mod N. Verified per
user: the login reply's inbox (unacked = messages stored, offset = the top), then every
stored message read exactly once, with the offset its store answered, in offset order.
Reported: the time from the first login to the last user complete, per user (connect ->
last message) p50/p99/max. Then each device acks its top offset, and --recheck users log in
again with the same device: they must be told 0 unacked and be sent nothing.

Exit code 0 when all of that holds; 1 otherwise; 2 when the run could not be set up; 3 at
--max-seconds."""

COMMON = [
    ("--nodes", int, 1, plus_default("1: one embedded node; 2: two cluster nodes on one Redis."),
     {"choices": (1, 2)}),
    (("-n", "--users"), int, 10000, plus_default("users (receivers)."), {"dest": "users"}),
    ("--procs", int, 0, "client worker processes (0: one per 5,000 connections)"),
    ("--concurrency", int, 200, plus_default("first logins in progress at once, all workers.")),
    ("--http-concurrency", int, 64, plus_default("HTTP calls in flight at most, all workers.")),
    ("--device", str, "bench-phone", plus_default("the deviceID every user logs in with.")),
    ("--source-ips", str, "", "source addresses, round robin; default 127.0.0.2, 127.0.0.3, ... "
                              "one per 20,000 connections; 'none': let the OS choose",
     {"metavar": "IP[,IP...]|none"}),
    ("--wait", float, 30.0, plus_default("seconds to wait for the deliveries of a phase.")),
    ("--discard-every", int, 0, "self-check of the verification: the clients throw away every "
                                "K-th private message they read (it must show as lost)"),
    ("--seed", int, None, "random seed (receivers, recheck sample)"),
]

PROCESSES = [
    ("--redis-server", str, "",
     "redis-server binary. Default: from PATH, else /usr/bin/redis-server"),
    ("--report-interval", float, 2.0, plus_default("the nodes' app.reportInterval.")),
    ("--presence-max-room", int, None, "the nodes' app.presenceMaxRoom (default: the node's, "
                                       "1000)"),
    ("--redis-pool-size", int, 0, "the nodes' redis.poolSize (0: the node's default, 30)"),
    ("--node-log-level", str, "warning", plus_default("the nodes' app.logLevel.")),
    ("--access-log", bool, None, "the nodes write access-log lines"),
    ("--app-id", int, 101, plus_default("appID.")),
]

OUTPUT = [
    ("--out", str, "", "results folder. Default: bench-results/<scenario>-<timestamp>/"),
    ("--quiet", bool, None, "no progress on stderr"),
    ("--max-seconds", float, None, "stop everything after this many seconds (exit 3). "
                                   "Default: from the counts and rates"),
    ("--http-timeout", float, 10.0, plus_default("seconds for one HTTP call.")),
    ("--connect-timeout", float, 10.0,
     plus_default("seconds for one connect + handshake + login.")),
]

PRIVATE_RUN = [
    ("--messages", int, 10000, plus_default("messages of each phase.")),
    ("--rate", float, 1000.0, plus_default("messages per second of each phase.")),
    ("--senders", int, 200, plus_default(
        "users that send the WebSocket messages (the node allows 20 a second each).")),
    ("--phases", str, "http,ws", plus_default("the phases, in order.")),
]

OFFLINE_RUN = [
    ("--per-user", int, 10, plus_default("messages stored for each user.")),
    ("--store-rate", float, 0.0, plus_default("stores per second (0: --http-concurrency bound).")),
    ("--login-rate", float, 500.0, plus_default("logins per second.")),
    ("--ack-rate", float, None, "acks per second after the logins (0: all at once). "
                                "Default: --login-rate"),
    ("--settle", float, 2.0, plus_default("seconds before the memory reading after the stores.")),
    ("--recheck", int, 100, plus_default(
        "after the acks, this many users log in again with the same device (0: none).")),
]


def add_parsers(sub) -> None:
    for name, help_, doc, run in ((PRIVATE, PRIVATE_HELP, PRIVATE_DOC, PRIVATE_RUN),
                                  (OFFLINE, OFFLINE_HELP, OFFLINE_DOC, OFFLINE_RUN)):
        p = sub.add_parser(name, help=help_, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_options(p.add_argument_group("run"), run + COMMON)
        add_options(p.add_argument_group("processes"), PROCESSES)
        add_options(p.add_argument_group("output and limits"), OUTPUT)


PER_PROC = 5000
MAX_PER_PROC = 15000  # open files: 20,000 a process


def connections(args) -> int:
    return args.users + (args.senders if args.scenario == PRIVATE else 0)


def check_args(args) -> "list[str]":
    errors = []
    total = connections(args)
    if args.users < 1:
        errors.append("-n must be at least 1")
    procs = args.procs or max(1, math.ceil(total / PER_PROC))
    if math.ceil(total / procs) > MAX_PER_PROC:
        errors.append(f"{math.ceil(total / procs)} connections per worker process: use more "
                      f"--procs (at most {MAX_PER_PROC} each)")
    args.procs = procs
    if args.scenario == PRIVATE:
        phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        if not phases or any(p not in ("http", "ws") for p in phases):
            errors.append("--phases: a list of http, ws")
        args.phase_list = phases
        if args.messages < 1 or args.rate <= 0:
            errors.append("--messages must be at least 1 and --rate > 0")
        if "ws" in phases:
            if args.senders < 1:
                errors.append("--senders must be at least 1 for the ws phase")
            elif args.rate / args.senders > 15:
                errors.append(f"{args.rate / args.senders:g} sends a second per sender: the "
                              "node allows 20 (burst 40); use more --senders")
    else:
        if args.per_user < 1 or args.login_rate <= 0:
            errors.append("--per-user must be at least 1 and --login-rate > 0")
        if args.per_user > 1000:
            errors.append("--per-user over the inbox size (1000)")
    return errors


def default_max_seconds(args) -> float:
    login = connections(args) / 100.0
    if args.scenario == PRIVATE:
        work = len(args.phase_list) * (args.messages / args.rate + args.wait + 10)
    else:
        work = args.users * args.per_user / 300.0 + args.users / args.login_rate + args.wait
    return 90 + login + work
