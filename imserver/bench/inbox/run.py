"""The ``private`` and ``offline`` commands: run one, bound it by ``--max-seconds``, write
and print its results."""
import json
import os
import shlex
import signal
import sys
import time

import gevent

from ..soak.cluster import redis_binary
from ..soak.context import Interrupted
from .options import PRIVATE, check_args, default_max_seconds
from .base import Run
from .offline import OfflineRun
from .private import PrivateRun
from .servers import loadavg


EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_MAX_SECONDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


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
