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
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import websocket  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from imserver.bench import procstat  # noqa: E402
from imserver.bench.harness import PeerServer, free_port  # noqa: E402


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
    log_path = os.path.join(tempfile.gettempdir(), f"idle_rss-{kind}-{port}.log")
    peer = PeerServer(kind, port, log_path, env={"PEER_PRESENCE_MAX_ROOM": "0"})
    opener = open_naive if kind == "naive" else open_socketio
    clients = []
    try:
        peer.start(timeout=20)
        wpid = peer.worker_pid()
        # warm up: one connection through every code path, then closed
        opener(port, "warm").close()
        time.sleep(1.0)
        before = procstat.rss_kb(wpid)
        started = time.time()
        pool = Pool(200)
        clients = list(pool.imap_unordered(lambda i: opener(port, i), range(n)))
        took = time.time() - started
        for ws in clients:
            gevent.spawn(keep_alive, ws)
        time.sleep(settle)
        state = peer.get("/system/state")["data"]
        after = procstat.rss_kb(wpid)
        print(json.dumps({"peer": kind, "connections": n, "state": state,
                          "loginSeconds": round(took, 2),
                          "rssBeforeKiB": before, "rssAfterKiB": after,
                          "rssPerConnectionKiB": round((after - before) / n, 2)}))
    finally:
        for ws in clients:
            try:
                ws.close(timeout=0)
            except Exception:
                pass
        peer.stop(timeout=15)


if __name__ == "__main__":
    main()
