"""Idle memory per connection of a benchmark peer: start it under gunicorn on a free
loopback port, read the worker's VmRSS, open N logged-in idle connections, read VmRSS
again, close everything and stop the peer (by its pid).

    .venv/bin/python -m imserver.bench.peers.idle_rss naive 2000
    .venv/bin/python -m imserver.bench.peers.idle_rss socketio 2000

Bounded: N connections, a settle time, then it ends. Presence events are turned off on
the naive peer (PEER_PRESENCE_MAX_ROOM=0) so that the figure is the idle cost alone.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import gevent  # noqa: E402
import websocket  # noqa: E402
from gevent.pool import Pool  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
CONF = {"naive": "naive_gunicorn.conf.py", "socketio": "socketio_gunicorn.conf.py"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def worker_pid(master_pid) -> int:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as fh:
        children = fh.read().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one worker, found {children}")
    return int(children[0])


def state(port) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/system/state", timeout=5) as r:
        return json.loads(r.read())["data"]


def open_naive(port, i):
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/acc", timeout=30)
    ws.send(json.dumps({"seq": "1", "cmd": "login",
                        "data": {"userID": f"idle-{i}", "appID": 101, "serviceToken": ""}}))
    answer = json.loads(ws.recv())
    assert answer["response"]["code"] == 200, answer
    return ws


def open_socketio(port, i):
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", timeout=30)
    assert ws.recv().startswith("0")
    ws.send("40")
    assert ws.recv().startswith("40")
    ws.send('421["login",' + json.dumps({"userID": f"idle-{i}", "appID": 101}) + "]")
    while True:
        packet = ws.recv()
        if packet == "2":
            ws.send("3")
        elif packet.startswith("431"):
            assert json.loads(packet[3:]) == [{"code": 200}], packet
            return ws


def keep_alive(ws):
    """Read until closed, answering Engine.IO pings (the naive peer sends none)."""
    try:
        while True:
            packet = ws.recv()
            if packet == "2":
                ws.send("3")
            elif not packet:
                return
    except Exception:
        return


def main():
    kind = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    settle = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    port = free_port()
    env = dict(os.environ, PEER_PORT=str(port), PEER_PRESENCE_MAX_ROOM="0")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", os.path.join(HERE, CONF[kind])],
                            cwd=ROOT, env=env)
    clients = []
    try:
        deadline = time.time() + 20
        while True:
            try:
                state(port)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("peer did not start")
                time.sleep(0.1)
        wpid = worker_pid(proc.pid)
        # warm up: one connection through every code path, then closed
        warm = (open_naive if kind == "naive" else open_socketio)(port, "warm")
        warm.close()
        time.sleep(1.0)
        before = rss_kib(wpid)
        opener = open_naive if kind == "naive" else open_socketio
        started = time.time()
        pool = Pool(200)
        clients = list(pool.imap_unordered(lambda i: opener(port, i), range(n)))
        took = time.time() - started
        readers = [gevent.spawn(keep_alive, ws) for ws in clients]
        time.sleep(settle)
        s = state(port)
        after = rss_kib(wpid)
        print(json.dumps({"peer": kind, "connections": n, "state": s,
                          "loginSeconds": round(took, 2),
                          "rssBeforeKiB": before, "rssAfterKiB": after,
                          "rssPerConnectionKiB": round((after - before) / n, 2)}))
    finally:
        for ws in clients:
            try:
                ws.close(timeout=0)
            except Exception:
                pass
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    main()
