"""Limits that keep a node up under abuse: message rate, connection count, message
length, slow consumers, silent peers, and the spread-out drain at shutdown."""
import json
import signal
import socket
import time

import gevent
import pytest
import websocket

from support import RawSocket, reply, unique_id, wait_until, ws_frame


def ping_frame(seq):
    return ws_frame(0x1, json.dumps({"seq": seq, "cmd": "ping"}).encode())


def test_rate_limit_answers_1101_then_closes_with_1008(make_node):
    node = make_node({"app": {"rateLimit": 0.5, "rateBurst": 3}})
    raw = RawSocket(node)
    try:
        raw.send(b"".join(ping_frame(str(i)) for i in range(1, 6)))
        replies = [json.loads(raw.read_frame()[1]) for _ in range(5)]
        assert [r["response"]["code"] for r in replies] == [200, 200, 200, 1101, 1101]
        assert replies[3] == reply("4", "ping", 1101)
        assert replies[3]["response"]["codeMsg"] == "请求过于频繁"
        raw.send(ping_frame("6"))  # the third refusal in a row: closed
        assert raw.close_code() == 1008
    finally:
        raw.close()


def test_rate_limit_refills(make_node):
    node = make_node({"app": {"rateLimit": 20, "rateBurst": 2}})
    c = node.client()
    try:
        for seq in ("a", "b"):
            c.send_json({"seq": seq, "cmd": "ping"})
        c.send_json({"seq": "c", "cmd": "ping"})
        assert [c.reply(s)["response"]["code"] for s in ("a", "b", "c")] == [200, 200, 1101]
        time.sleep(0.2)  # four tokens' worth at 20 a second; the bucket holds two
        assert c.request("ping")["response"]["code"] == 200
    finally:
        c.close()


def test_connection_limit_refuses_with_503_and_disturbs_nobody(make_node):
    node = make_node({"app": {"maxConnections": 3}})
    clients = [node.client() for _ in range(3)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(node.ws_url, timeout=5)
        assert refused.value.status_code == 503
        assert b"app.maxConnections" in refused.value.resp_body
        for c in clients:
            assert c.request("ping")["response"]["data"] == "pong"
        clients.pop().close()
        wait_until(lambda: node.state()["connections"] == 2, what="a slot to free up")
        clients.append(node.client())
        assert clients[-1].request("ping")["response"]["data"] == "pong"
    finally:
        for c in clients:
            c.close()


def test_message_length_limit(make_node):
    node = make_node({"app": {"maxMessageLength": 10}})
    ok = node.post("/user/sendMessageAll", appID=101, userID="ops", message="x" * 10)
    assert ok["code"] == 200
    long = node.post("/user/sendMessageAll", appID=101, userID="ops", message="x" * 11)
    assert long["code"] == 1001 and "app.maxMessageLength" in long["detail"]


def worker_rss_kb(node) -> int:
    (pid,) = node.worker_pids()
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_consumer_is_dropped_and_others_keep_receiving(make_node):
    node = make_node({"app": {"sendQueueBytes": 256 * 1024, "sendQueueFrames": 64,
                              "presenceMaxRoom": 0}})
    fast = node.client()
    assert fast.login("fast")["response"]["code"] == 200
    # A client that logs in, then never reads: a small receive buffer fills at once.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", node.ws_port))
    slow.sendall(b"GET /acc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    slow.sendall(ws_frame(0x1, json.dumps({"seq": "1", "cmd": "login",
                                           "data": {"userID": "slow", "appID": 101}}).encode()))
    wait_until(lambda: "slow" in node.get("/user/list", appID=101)["data"]["userList"],
               what="the slow client to log in")
    rss_before = worker_rss_kb(node)
    count = 600
    message = "m" * 16000
    received = []

    def read_all():
        while len(received) < count:
            frame = fast.recv_frame(20)
            if frame is not None and frame["cmd"] == "msg":
                received.append(frame["seq"])

    reader = gevent.spawn(read_all)
    try:
        for i in range(count):
            answer = node.post("/user/sendMessageAll", appID=101, userID="ops",
                               msgID=f"storm-{i}", message=message)
            assert answer["code"] == 200
        reader.join(30)
        assert len(received) == count, f"fast client got {len(received)} of {count}"
        assert received == [f"storm-{i}" for i in range(count)]
        wait_until(lambda: "slow" not in node.get("/user/list", appID=101)["data"]["userList"],
                   what="the slow consumer to be dropped")
        # 600 x 16 KB went out; the node holds at most its bound for the slow client.
        assert worker_rss_kb(node) - rss_before < 32 * 1024
        assert "dropping slow consumer" in node.output()
    finally:
        reader.kill()
        slow.close()
        fast.close()


def test_silent_peers_are_pinged_then_dropped(make_node):
    node = make_node({"app": {"pingInterval": 0.3, "pingTimeout": 0.3, "sweepInterval": 0.1}})
    raw = RawSocket(node)  # reads, but never answers a ping
    lively = node.client()  # websocket-client answers each ping as it reads it
    stop = []

    def keep_reading():
        while not stop:
            lively.no_push(0.05)

    reader = gevent.spawn(keep_reading)
    try:
        opcode, _ = raw.read_frame(timeout=5)
        assert opcode == 0x9
        with pytest.raises((EOFError, ConnectionError, OSError)):
            while True:
                raw.read_frame(timeout=5)
        gevent.sleep(1.0)  # more than a ping interval and timeout again
        stop.append(True)
        reader.join(2)
        assert lively.request("ping")["response"]["data"] == "pong"
    finally:
        reader.kill()
        raw.close()
        lively.close()


def test_shutdown_spreads_closes_over_the_drain_window(make_node):
    node = make_node({"app": {"drainWindow": 2}})
    clients = [node.client() for _ in range(40)]
    for i, c in enumerate(clients):
        assert c.login(unique_id(f"d{i}-"))["response"]["code"] == 200
    closed_at = {}

    def wait(i, c):
        closed_at[i] = (c.wait_closed(15), time.time())

    waiters = [gevent.spawn(wait, i, c) for i, c in enumerate(clients)]
    started = time.time()
    node.proc.send_signal(signal.SIGTERM)
    gevent.joinall(waiters, timeout=20)
    assert len(closed_at) == 40
    assert {code for code, _ in closed_at.values()} == {(1001, "server going away")}
    times = sorted(t for _, t in closed_at.values())
    assert times[-1] - times[0] >= 1.0, "closes were not spread over the window"
    assert times[-1] - started < 5.0
    assert node.proc.wait(20) == 0
