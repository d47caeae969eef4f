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
from . import soak  # the soak scenario (imserver/bench/soak.py) runs its own processes
from .drivers import SOCKETIO_PATH
from .scenarios import ORDER, Bench

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
             time to all logged in, server RSS sampled every 10% of the way (memory.png)
  idle       connect, then hold --duration seconds with heartbeats every --heartbeat-interval:
             server KB per connection = (RSS after - RSS before connecting) / N over all server
             processes, connections dropped during the hold
  broadcast  connect, then --messages POST /user/sendMessageAll to the room, every --interval s:
             deliveries counted by the clients, deliveries/s, server CPU µs per delivery,
             HTTP call -> last client per broadcast, receive latency p50
  unicast    connect, then --unicast-messages POST /user/sendMessage to random online users at
             --rate/s (round robin over --http-targets): latency p50/p99/max to the client frame
  churn      connect, log in, hold --churn-hold s and leave, --churn-rate per second for
             --churn-duration s: achieved rate, failures, server RSS at start and end
  suite      the --scenarios list in that order on one set of connections, one result
"""


def _csv(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    t = common.add_argument_group("target")
    t.add_argument("--driver", choices=("acc", "socketio"), default="acc",
                   help="protocol: acc (this project's /acc frames; also the naive server) or "
                        "socketio (Engine.IO v4 / Socket.IO v5). Default: acc")
    t.add_argument("--ws", default=None, metavar="URL[,URL...]",
                   help="WebSocket URL(s); connections are spread round robin. Default: "
                        "ws://127.0.0.1:8089/acc (acc), ws://127.0.0.1:8080" + SOCKETIO_PATH +
                        " (socketio; a URL without a socket.io path gets it)")
    t.add_argument("--http", default="http://127.0.0.1:8080", metavar="URL",
                   help="HTTP API base URL (pushes, /system/state). Default: %(default)s")
    t.add_argument("--http-targets", default="", metavar="URL[,URL...]",
                   help="unicast sends go round robin to these instead of --http (e.g. another "
                        "node of the cluster than the one holding the users)")
    t.add_argument("--app-id", type=int, default=101, help="appID (the room). Default: %(default)s")
    t.add_argument("--allow-remote", action="store_true",
                   help="allow targets that are not on loopback (refused otherwise)")
    t.add_argument("--server-pid", default="", metavar="PID[,PID...]",
                   help="server processes to measure (their children are added); default: found "
                        "from the listening ports of --ws/--http via /proc")

    c = common.add_argument_group("clients")
    c.add_argument("-n", "--connections", dest="n", type=int, default=1000,
                   help="connections to open. Default: %(default)s")
    c.add_argument("--procs", type=int, default=0,
                   help="client worker processes (0: one per --per-proc connections)")
    c.add_argument("--per-proc", type=int, default=15000,
                   help="connections per worker process when --procs is 0. Default: %(default)s")
    c.add_argument("--concurrency", type=int, default=200,
                   help="connection attempts in progress at once, over all workers. Default: %(default)s")
    c.add_argument("--source-ips", default="", metavar="IP[,IP...]|none",
                   help="source addresses to bind before connect, round robin; default on loopback: "
                        "127.0.0.2, 127.0.0.3, ... one per --per-source connections; 'none': let the OS choose")
    c.add_argument("--per-source", type=int, default=20000,
                   help="connections per source address. Default: %(default)s")
    c.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds for one connect + handshake + login. Default: %(default)s")
    c.add_argument("--heartbeat-interval", type=float, default=30.0,
                   help="seconds between heartbeats of each connection (the chat page's 30 s); 0: none")

    s = common.add_argument_group("scenario settings")
    s.add_argument("--duration", type=float, default=30.0, help="idle: seconds to hold. Default: %(default)s")
    s.add_argument("--messages", type=int, default=10, help="broadcast: messages to send. Default: %(default)s")
    s.add_argument("--interval", type=float, default=1.0,
                   help="broadcast: seconds between two sends. Default: %(default)s")
    s.add_argument("--idle-probe", type=float, default=3.0,
                   help="broadcast: seconds the server's idle CPU is measured first, to take "
                        "it off the per-delivery figure (the gross one is reported too). "
                        "Default: %(default)s")
    s.add_argument("--unicast-messages", type=int, default=1000,
                   help="unicast: messages to send. Default: %(default)s")
    s.add_argument("--rate", type=float, default=200.0,
                   help="unicast: sends per second. Default: %(default)s")
    s.add_argument("--http-concurrency", type=int, default=50,
                   help="unicast: HTTP calls in flight at most. Default: %(default)s")
    s.add_argument("--churn-rate", type=float, default=50.0,
                   help="churn: connect/login/leave cycles started per second. Default: %(default)s")
    s.add_argument("--churn-duration", type=float, default=30.0,
                   help="churn: seconds. Default: %(default)s")
    s.add_argument("--churn-hold", type=float, default=0.0,
                   help="churn: seconds each client stays logged in. Default: %(default)s")
    s.add_argument("--message", default="", help="text of the pushed messages (default: 'broadcast K' ...)")
    s.add_argument("--wait", type=float, default=30.0,
                   help="seconds to wait for deliveries after the last send. Default: %(default)s")
    s.add_argument("--mem-steps", type=int, default=10,
                   help="server RSS samples while connecting. Default: %(default)s")
    s.add_argument("--settle", type=float, default=1.0,
                   help="seconds to let the server settle before an end-of-phase RSS reading")
    s.add_argument("--seed", type=int, default=None, help="random seed (unicast recipients)")

    o = common.add_argument_group("output and limits")
    o.add_argument("--out", default="", help="results folder. Default: bench-results/<timestamp>/")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    o.add_argument("--quiet", action="store_true", help="no progress on stderr")
    o.add_argument("--strict", action="store_true",
                   help="exit 1 when a connection failed or dropped or a message was lost")
    o.add_argument("--max-seconds", type=float, default=600.0,
                   help="stop everything after this many seconds (exit 3). Default: %(default)s")
    o.add_argument("--phase-timeout", type=float, default=300.0,
                   help="bound of the connect phase, in seconds. Default: %(default)s")
    o.add_argument("--http-timeout", type=float, default=10.0,
                   help="seconds for one HTTP call. Default: %(default)s")

    parser = argparse.ArgumentParser(
        prog="python -m imserver.bench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO", required=True)
    helps = {"connect": "open N connections and log in; rate, failures, memory curve",
             "idle": "connect, hold idle with heartbeats; server KB per connection, drops",
             "broadcast": "connect, send room broadcasts; deliveries/s, CPU per delivery, last receive",
             "unicast": "connect, send to random users; latency p50/p99/max",
             "churn": "connect/login/leave at a rate; achieved rate, failures, RSS",
             "suite": "several scenarios on one set of connections"}
    for name in ORDER + ("suite",):
        p = sub.add_parser(name, parents=[common], help=helps[name], description=helps[name])
        if name == "suite":
            p.add_argument("--scenarios", default=",".join(ORDER),
                           help="comma-separated list from: " + ", ".join(ORDER) +
                                ". Default: %(default)s")
    # -- soak: self-contained (starts Redis and two nodes itself); options of its own --------
    soak.add_parser(sub)
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # ``--scenario NAME`` works as well as the subcommand.
    if "--scenario" in argv:
        i = argv.index("--scenario")
        if i + 1 < len(argv):
            name = argv[i + 1]
            del argv[i:i + 2]
            argv.insert(0, name)
    parser = build_parser()
    args = parser.parse_args(argv)
    # -- soak: it targets no given address, see imserver/bench/soak.py --------------------
    if args.scenario == soak.NAME:
        return soak.main(args, argv)

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

    remote = [(u, h) for u, h in _hosts(ws_urls + [args.http] + http_targets) if not is_loopback(h)]
    if remote and not args.allow_remote:
        print("imserver.bench: refusing to load a target that is not on loopback: " +
              ", ".join(f"{u} ({h})" for u, h in remote) +
              ". A load test opens thousands of connections and can hurt a shared server; "
              "pass --allow-remote if that machine is yours to load.", file=sys.stderr)
        return 2
    local = not remote

    # Source addresses.
    if args.source_ips.strip().lower() == "none":
        source_ips = []
    elif args.source_ips:
        source_ips = _csv(args.source_ips)
    elif local:
        count = max(1, math.ceil(args.n / max(1, args.per_source)))
        source_ips = [f"127.0.0.{2 + i}" for i in range(count)]
    else:
        source_ips = []

    # Processes and their file limit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    procs = args.procs or max(1, math.ceil(args.n / args.per_proc))
    per = math.ceil(args.n / procs)
    if hard != resource.RLIM_INFINITY and per > hard - 200:
        parser.error(f"{per} connections per worker process exceed the open-file limit "
                     f"({hard}); use more --procs")
    args.procs = procs

    # Server processes.
    server_pids = []
    if args.server_pid:
        given = {int(p) for p in _csv(args.server_pid)}
        server_pids = sorted(given | procstat.children_of(given))
    elif local:
        server_pids = procstat.find_server_pids(_ports(ws_urls + [args.http]))
    out_dir = args.out or os.path.join("bench-results", time.strftime("%Y%m%d-%H%M%S"))

    names = _csv(args.scenarios) if args.scenario == "suite" else [args.scenario]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")

    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m imserver.bench " + " ".join(shlex.quote(a) for a in argv),
            "scenario": args.scenario, "scenarios": [n for n in ORDER if n in names],
            "driver": args.driver, "ws_urls": ws_urls, "http": args.http,
            "http_targets": http_targets, "app_id": args.app_id, "connections": args.n,
            "source_ips": source_ips, "server_pids": server_pids,
            "server_processes": {str(p): procstat.proc_name(p) for p in server_pids},
            "settings": {k: v for k, v in vars(args).items()
                         if k not in ("ws", "http", "http_targets", "server_pid")}}
    if not server_pids and not args.quiet:
        print("imserver.bench: no server process found to measure (remote target, or nothing "
              "listens on the ports): memory and CPU figures are left out", file=sys.stderr)

    bench = Bench(args, ws_urls, args.http, http_targets, source_ips, server_pids, meta)
    code = 0
    t0 = time.time()
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
    except Exception as exc:
        bench.results["aborted"] = f"{type(exc).__name__}: {exc}"
        print(f"imserver.bench: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        bench.stop()
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
