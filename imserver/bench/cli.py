"""``python -m imserver.bench SCENARIO [options]``: the coordinator's command line."""
import argparse
import ipaddress
import math
import os
import resource
import shlex
import socket
import sys
import time
from urllib.parse import urlsplit

import gevent

from . import procstat, report
from . import soak  # the soak scenario (imserver/bench/soak/) runs its own processes
from . import recovery  # so does the recovery scenario (imserver/bench/recovery/)
from . import inbox  # and the private/offline scenarios (imserver/bench/inbox/)
from .drivers import SOCKETIO_PATH
from .options import add_options, plus_default
from .scenarios import ORDER, Bench, NothingConnected

DESCRIPTION = """\
Load tool for imserver (and peers speaking the same contract): opens many WebSocket
clients from worker processes, logs each in as its own user, pushes through the HTTP
API and measures connect rate, memory per connection, broadcast fan-out and CPU per
delivery, unicast latency and churn. Progress goes to stderr, a summary table to stdout,
results (JSON, Markdown, PNG plots) to --out.

Only the addresses given are targeted; anything not on loopback is refused unless
--allow-remote. Every phase is bounded and --max-seconds stops the whole run."""

EPILOG = """\
examples:
  python -m imserver.bench connect --ws ws://127.0.0.1:8089/acc --http http://127.0.0.1:8080 -n 1000
  python -m imserver.bench idle -n 10000 --duration 60
  python -m imserver.bench broadcast -n 10000 --messages 10 --interval 2
  python -m imserver.bench unicast -n 10000 --unicast-messages 2000 --rate 200
  python -m imserver.bench churn --churn-rate 100 --churn-duration 30
  python -m imserver.bench suite --scenarios connect,idle,broadcast,unicast,churn -n 2000
  python -m imserver.bench connect --driver socketio --ws ws://127.0.0.1:5000 --http http://127.0.0.1:5000

scenarios:
  connect    open -n connections and log in (--concurrency at once): rate, failures by reason,
             time to all logged in, server RSS after each of --mem-steps rounds (memory.png)
  idle       connect, then hold --duration seconds with heartbeats every --heartbeat-interval:
             server KB per connection = (RSS after - RSS before connecting) / N over all server
             processes, connections dropped during the hold
  broadcast  connect, then --messages POST /user/sendMessageAll to the room, every --interval s:
             deliveries counted by the clients, deliveries/s, server CPU µs per delivery
             net of the server's idle CPU (measured first, --idle-probe),
             HTTP call -> last client per broadcast, receive latency p50; with --send-floor K,
             the kernel floor (send_floor, K runs) and the ratio CPU per delivery / floor
  unicast    connect, then --unicast-messages POST /user/sendMessage to random online users at
             --rate/s (round robin over --http-targets): latency p50/p99/max to the client frame
  churn      connect, log in, hold --churn-hold s and leave, --churn-rate per second for
             --churn-duration s: achieved rate, failures, server RSS at start and end
  suite      the --scenarios list in that order on one set of connections, one result
  soak       self-contained long run (own Redis and two nodes): churn, Redis restart, node kill
  recovery   self-contained (own Redis and two nodes): node A drained while a room gets
             messages through node B; its clients rejoin on B with `since`: lost/duplicated,
             recovery times, Redis commands per message (see `recovery --help`)
  private    self-contained (one embedded node, or Redis and two nodes): private messages to
             online users at --rate/s via /user/sendMessage and WebSocket send; latency to the
             receiver's frame, each message exactly once (see `private --help`)
  offline    self-contained: messages stored for offline users, who then log in with a
             deviceID at --login-rate/s: each message once and in offset order, time to the
             last, memory per stored message (see `offline --help`)
"""


def _csv(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


TARGET = [
    ("--driver", str, "acc", "protocol: acc (this project's /acc frames; also the naive server) "
                             "or socketio (Engine.IO v4 / Socket.IO v5). Default: acc",
     {"choices": ("acc", "socketio")}),
    ("--ws", str, None, "WebSocket URL(s); connections are spread round robin. Default: "
                        "ws://127.0.0.1:8089/acc (acc), ws://127.0.0.1:8080" + SOCKETIO_PATH +
                        " (socketio; a URL without a socket.io path gets it)",
     {"metavar": "URL[,URL...]"}),
    ("--http", str, "http://127.0.0.1:8080",
     plus_default("HTTP API base URL (pushes, /system/state)."), {"metavar": "URL"}),
    ("--http-targets", str, "", "unicast sends go round robin to these instead of --http (e.g. "
                                "another node of the cluster than the one holding the users)",
     {"metavar": "URL[,URL...]"}),
    ("--app-id", int, 101, plus_default("appID (the room).")),
    ("--allow-remote", bool, None, "allow targets that are not on loopback (refused otherwise)"),
    ("--server-pid", str, "", "server processes to measure (their children are added); "
                              "default: found from the listening ports of --ws/--http via /proc",
     {"metavar": "PID[,PID...]"}),
]

CLIENTS = [
    (("-n", "--connections"), int, 1000, plus_default("connections to open."), {"dest": "n"}),
    ("--procs", int, 0, "client worker processes (0: one per --per-proc connections)"),
    ("--per-proc", int, 15000, plus_default("connections per worker process when --procs is 0.")),
    ("--concurrency", int, 200,
     plus_default("connection attempts in progress at once, over all workers.")),
    ("--source-ips", str, "", "source addresses to bind before connect, round robin; default on "
                              "loopback: 127.0.0.2, 127.0.0.3, ... one per --per-source "
                              "connections; 'none': let the OS choose",
     {"metavar": "IP[,IP...]|none"}),
    ("--per-source", int, 20000, plus_default("connections per source address.")),
    ("--connect-timeout", float, 10.0,
     plus_default("seconds for one connect + handshake + login.")),
    ("--heartbeat-interval", float, 30.0,
     "seconds between heartbeats of each connection (the chat page's 30 s); 0: none"),
]

SETTINGS = [
    ("--duration", float, 30.0, plus_default("idle: seconds to hold.")),
    ("--messages", int, 10, plus_default("broadcast: messages to send.")),
    ("--interval", float, 1.0, plus_default("broadcast: seconds between two sends.")),
    ("--idle-probe", float, 3.0, plus_default(
        "broadcast: seconds the server's idle CPU is measured first, to take it off the "
        "per-delivery figure (the gross one is reported too).")),
    ("--send-floor", int, 0, plus_default(
        "broadcast: after the broadcasts, run the kernel floor (imserver.bench.send_floor: one "
        "frame of the broadcast's size to each of as many loopback sockets as receivers) this "
        "many times and report CPU per delivery as a ratio to the median floor; 0: off.")),
    ("--send-floor-rounds", int, 10, plus_default("broadcast: frames per socket of one floor run.")),
    ("--unicast-messages", int, 1000, plus_default("unicast: messages to send.")),
    ("--rate", float, 200.0, plus_default("unicast: sends per second.")),
    ("--http-concurrency", int, 50, plus_default("unicast: HTTP calls in flight at most.")),
    ("--churn-rate", float, 50.0,
     plus_default("churn: connect/login/leave cycles started per second.")),
    ("--churn-duration", float, 30.0, plus_default("churn: seconds.")),
    ("--churn-hold", float, 0.0, plus_default("churn: seconds each client stays logged in.")),
    ("--message", str, "", "text of the pushed messages (default: 'broadcast K' ...)"),
    ("--wait", float, 30.0, plus_default("seconds to wait for deliveries after the last send.")),
    ("--mem-steps", int, 10, plus_default("connect in this many rounds and read the server's "
                                          "RSS after each: the memory curve's points.")),
    ("--settle", float, 1.0, "seconds to let the server settle before an end-of-phase RSS reading"),
    ("--seed", int, None, "random seed (unicast recipients)"),
]

OUTPUT = [
    ("--out", str, "", "results folder. Default: bench-results/<timestamp>/"),
    ("--no-plots", bool, None, "skip the PNG plots"),
    ("--quiet", bool, None, "no progress on stderr"),
    ("--strict", bool, None, "exit 1 when a connection failed or dropped or a message was lost"),
    ("--max-seconds", float, 600.0,
     plus_default("stop everything after this many seconds (exit 3).")),
    ("--phase-timeout", float, 300.0, plus_default("bound of the connect phase, in seconds.")),
    ("--http-timeout", float, 10.0, plus_default("seconds for one HTTP call.")),
]

HELPS = {"connect": "open N connections and log in; rate, failures, memory curve",
         "idle": "connect, hold idle with heartbeats; server KB per connection, drops",
         "broadcast": "connect, send room broadcasts; deliveries/s, CPU per delivery, last receive",
         "unicast": "connect, send to random users; latency p50/p99/max",
         "churn": "connect/login/leave at a rate; achieved rate, failures, RSS",
         "suite": "several scenarios on one set of connections"}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for title, rows in (("target", TARGET), ("clients", CLIENTS),
                        ("scenario settings", SETTINGS), ("output and limits", OUTPUT)):
        add_options(common.add_argument_group(title), rows)
    parser = argparse.ArgumentParser(
        prog="python -m imserver.bench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO", required=True)
    for name in ORDER + ("suite",):
        p = sub.add_parser(name, parents=[common], help=HELPS[name], description=HELPS[name])
        if name == "suite":
            p.add_argument("--scenarios", default=",".join(ORDER),
                           help="comma-separated list from: " + ", ".join(ORDER) +
                                ". Default: %(default)s")
    # -- soak: self-contained (starts Redis and two nodes itself); options of its own --------
    soak.add_parser(sub)
    recovery.add_parser(sub)
    inbox.add_parsers(sub)
    return parser


def _hosts(urls):
    for url in urls:
        host = urlsplit(url).hostname
        yield url, host or "127.0.0.1"


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def _ports(urls):
    ports = set()
    for url in urls:
        parts = urlsplit(url)
        ports.add(parts.port or 80)
    return ports


def _scenario_first(argv) -> list:
    """``--scenario NAME`` works as well as the subcommand."""
    argv = list(argv)
    if "--scenario" in argv:
        i = argv.index("--scenario")
        if i + 1 < len(argv):
            name = argv[i + 1]
            del argv[i:i + 2]
            argv.insert(0, name)
    return argv


def _targets(parser, args):
    """(WebSocket URLs, unicast HTTP targets), checked."""
    if args.ws:
        ws_urls = _csv(args.ws)
    else:
        ws_urls = ["ws://127.0.0.1:8089/acc" if args.driver == "acc"
                   else "ws://127.0.0.1:8080" + SOCKETIO_PATH]
    http_targets = _csv(args.http_targets)
    for url in ws_urls:
        if urlsplit(url).scheme != "ws":
            parser.error(f"--ws: only ws:// URLs are supported, got {url!r}")
    for url in [args.http] + http_targets:
        if urlsplit(url).scheme != "http":
            parser.error(f"--http/--http-targets: only http:// URLs are supported, got {url!r}")
    if args.n < 1 and args.scenario != "churn":
        parser.error("-n must be at least 1")
    return ws_urls, http_targets


def _source_ips(args, local: bool) -> list:
    if args.source_ips.strip().lower() == "none":
        return []
    if args.source_ips:
        return _csv(args.source_ips)
    if local:
        count = max(1, math.ceil(args.n / max(1, args.per_source)))
        return [f"127.0.0.{2 + i}" for i in range(count)]
    return []


def _set_procs(parser, args) -> None:
    """Worker processes enough for -n within the open-file limit of each."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    procs = args.procs or max(1, math.ceil(args.n / args.per_proc))
    per = math.ceil(args.n / procs)
    if hard != resource.RLIM_INFINITY and per > hard - 200:
        parser.error(f"{per} connections per worker process exceed the open-file limit "
                     f"({hard}); use more --procs")
    args.procs = procs


def _server_pids(args, ws_urls, local: bool) -> list:
    if args.server_pid:
        given = {int(p) for p in _csv(args.server_pid)}
        return sorted(given | procstat.children_of(given))
    if local:
        return procstat.find_server_pids(_ports(ws_urls + [args.http]))
    return []


def _meta(args, argv, names, ws_urls, http_targets, source_ips, server_pids) -> dict:
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m imserver.bench " + " ".join(shlex.quote(a) for a in argv),
            "scenario": args.scenario, "scenarios": [n for n in ORDER if n in names],
            "driver": args.driver, "ws_urls": ws_urls, "http": args.http,
            "http_targets": http_targets, "app_id": args.app_id, "connections": args.n,
            "source_ips": source_ips, "server_pids": server_pids,
            "server_processes": {str(p): procstat.proc_name(p) for p in server_pids},
            "settings": {k: v for k, v in vars(args).items()
                         if k not in ("ws", "http", "http_targets", "server_pid")}}


def _run(bench, args, names) -> int:
    """Run the scenarios within --max-seconds; the exit code."""
    code = 0
    try:
        with gevent.Timeout(args.max_seconds):
            try:
                bench.run(names)
            finally:
                bench.close_all()
    except gevent.Timeout:
        bench.results["aborted"] = f"--max-seconds {args.max_seconds:g} reached"
        print(f"imserver.bench: --max-seconds {args.max_seconds:g} reached, stopping",
              file=sys.stderr)
        code = 3
    except KeyboardInterrupt:
        bench.results["aborted"] = "interrupted"
        code = 130
    except NothingConnected as exc:
        bench.results["aborted"] = str(exc)
        print(f"imserver.bench: {exc}", file=sys.stderr)
        code = 1
    except Exception as exc:
        bench.results["aborted"] = f"{type(exc).__name__}: {exc}"
        print(f"imserver.bench: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        bench.stop()
    return code


def main(argv=None) -> int:
    argv = _scenario_first(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # -- soak: it targets no given address, see imserver/bench/soak/ ----------------------
    if args.scenario == soak.NAME:
        return soak.main(args, argv)
    if args.scenario == recovery.NAME:
        return recovery.main(args, argv)
    if args.scenario in inbox.NAMES:
        return inbox.main(args, argv)
    ws_urls, http_targets = _targets(parser, args)
    remote = [(u, h) for u, h in _hosts(ws_urls + [args.http] + http_targets) if not is_loopback(h)]
    if remote and not args.allow_remote:
        print("imserver.bench: refusing to load a target that is not on loopback: " +
              ", ".join(f"{u} ({h})" for u, h in remote) +
              ". A load test opens thousands of connections and can hurt a shared server; "
              "pass --allow-remote if that machine is yours to load.", file=sys.stderr)
        return 2
    local = not remote
    source_ips = _source_ips(args, local)
    _set_procs(parser, args)
    server_pids = _server_pids(args, ws_urls, local)
    out_dir = args.out or os.path.join("bench-results", time.strftime("%Y%m%d-%H%M%S"))
    names = _csv(args.scenarios) if args.scenario == "suite" else [args.scenario]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    meta = _meta(args, argv, names, ws_urls, http_targets, source_ips, server_pids)
    if not server_pids and not args.quiet:
        print("imserver.bench: no server process found to measure (remote target, or nothing "
              "listens on the ports): memory and CPU figures are left out", file=sys.stderr)
    bench = Bench(args, ws_urls, args.http, http_targets, source_ips, server_pids, meta)
    t0 = time.time()
    code = _run(bench, args, names)
    bench.results["meta"]["seconds"] = round(time.time() - t0, 2)
    written = report.write(out_dir, bench.results, bench.samples, plots=not args.no_plots)
    print(report.table(bench.results))
    print(f"\nresults: {os.path.join(out_dir, 'results.json')} "
          f"({', '.join(written[2:])})")
    if code == 0 and args.strict and _problems(bench.results):
        print("imserver.bench: --strict: " + "; ".join(_problems(bench.results)), file=sys.stderr)
        code = 1
    return code


def _problems(results) -> "list[str]":
    out = []
    sc = results.get("scenarios", {})
    if sc.get("connect", {}).get("failed"):
        out.append(f"{sc['connect']['failed']} connections failed")
    if sc.get("idle", {}).get("dropped"):
        out.append(f"{sc['idle']['dropped']} connections dropped")
    b = sc.get("broadcast")
    if b and not b.get("all_received"):
        out.append(f"broadcast delivered {b['delivered']}/{b['expected_deliveries']}")
    u = sc.get("unicast")
    if u and u.get("lost"):
        out.append(f"unicast lost {u['lost']}")
    if sc.get("churn", {}).get("failed"):
        out.append(f"churn: {sc['churn']['failed']} failed")
    return out
