"""The benchmark peers in imserver/bench/peers/ start under gunicorn and keep their contract
(imserver/bench/peers/README.md): the naive server speaks this project's protocol on /acc, the
Flask-SocketIO server speaks Socket.IO v5 over a real WebSocket."""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websocket

from support import free_port, push, reply, unique_id, wait_until

from imserver.bench.harness import PeerServer


class Peer(PeerServer):
    def __init__(self, kind, workdir):
        super().__init__(kind, free_port(), os.path.join(str(workdir), f"{kind}.log"),
                         env={"PEER_LOG_LEVEL": "info"})
        self.start()

    def startup_failure(self, reason: str) -> str:
        return f"{reason}:\n{self.output()}"

    def post(self, path, **form):
        body = urllib.parse.urlencode(form).encode()
        with urllib.request.urlopen(self.url(path), data=body, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def naive(tmp_path_factory):
    peer = Peer("naive", tmp_path_factory.mktemp("naive"))
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def sio(tmp_path_factory):
    peer = Peer("socketio", tmp_path_factory.mktemp("socketio"))
    yield peer
    peer.stop()


def recv_json(ws, predicate=lambda frame: True, timeout=5.0):
    """The next JSON frame matching ``predicate``; others are skipped."""
    deadline = time.time() + timeout
    while True:
        ws.settimeout(max(0.01, deadline - time.time()))
        frame = json.loads(ws.recv())
        if predicate(frame):
            return frame


def nothing_more(ws, predicate, wait=0.3) -> bool:
    """True when no frame matching ``predicate`` arrives within ``wait`` seconds."""
    try:
        recv_json(ws, predicate, timeout=wait)
    except websocket.WebSocketTimeoutException:
        return True
    return False


# -- the naive peer ---------------------------------------------------------------------

def naive_login(peer, user_id, app_id=101):
    ws = websocket.create_connection(f"ws://127.0.0.1:{peer.port}/acc", timeout=5)
    ws.send(json.dumps({"seq": "s1", "cmd": "login",
                        "data": {"userID": user_id, "appID": app_id, "serviceToken": ""}}))
    assert recv_json(ws, lambda f: f.get("seq") == "s1") == reply("s1", "login")
    return ws


def test_naive_commands_and_broadcast(naive):
    alice, bob = unique_id("alice"), unique_id("bob")
    a = naive_login(naive, alice)
    b = naive_login(naive, bob)
    try:
        # the enter event reaches the member already in the room
        enter = recv_json(a, lambda f: f["cmd"] == "enter")
        assert enter["response"]["data"]["from"] == bob
        a.send(json.dumps({"seq": "h", "cmd": "heartbeat", "data": {}}))
        assert recv_json(a, lambda f: f.get("seq") == "h") == reply("h", "heartbeat")
        a.send(json.dumps({"seq": "p", "cmd": "ping"}))
        assert recv_json(a, lambda f: f.get("seq") == "p") == reply("p", "ping", data="pong")
        a.send(json.dumps({"seq": "x", "cmd": "nope"}))
        assert recv_json(a, lambda f: f.get("seq") == "x") == reply("x", "nope", 1010)
        a.send(json.dumps({"seq": "l2", "cmd": "login", "data": {"userID": alice, "appID": 101}}))
        assert recv_json(a, lambda f: f.get("seq") == "l2") == reply("l2", "login", 1009)

        msg_id = unique_id("m")
        answer = naive.post("/user/sendMessageAll", appID=101, userID=alice, msgID=msg_id,
                            message="hello room")
        assert answer == {"code": 200, "msg": "Success", "data": {"sendResults": True}}
        got = recv_json(b, lambda f: f["cmd"] == "msg")
        assert got == push(msg_id, "msg", "hello room", alice, room=None)
        assert nothing_more(a, lambda f: f["cmd"] == "msg")  # the sender is left out

        msg_id = unique_id("m")
        answer = naive.post("/user/sendMessage", appID=101, userID=alice, msgID=msg_id,
                            message="hi alice", **{"from": bob})
        assert answer["data"] == {"sendResults": True}
        assert recv_json(a, lambda f: f["cmd"] == "msg") == push(msg_id, "msg", "hi alice", bob, room=None)
        answer = naive.post("/user/sendMessage", appID=101, userID=unique_id("nobody"),
                            msgID=unique_id("m"), message="x")
        assert answer["data"]["sendResults"] is False

        state = naive.get("/system/state")
        assert state["code"] == 200
        assert state["data"]["connections"] >= 2 and state["data"]["users"] >= 2
    finally:
        a.close()
        b.close()
    wait_until(lambda: naive.get("/system/state")["data"]["connections"] == 0,
               what="connections closed")


def test_naive_plain_get_on_acc_is_400(naive):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(naive.url("/acc"), timeout=5)
    assert err.value.code == 400


# -- the Flask-SocketIO peer ------------------------------------------------------------

class EngineIOClient:
    """Just enough Engine.IO v4 / Socket.IO v5 over websocket-client for the test."""

    def __init__(self, port):
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", timeout=5)
        opening = self.ws.recv()
        assert opening.startswith("0"), opening
        self.handshake = json.loads(opening[1:])
        self.ws.send("40")
        connected = self.recv_packet()  # "40{"sid":..}": Socket.IO CONNECT in a message
        assert connected.startswith("0{"), connected
        self.sid = json.loads(connected[1:])["sid"]
        self.acks = 0

    def recv_packet(self, timeout=5.0) -> str:
        """The next Engine.IO message packet's Socket.IO text; pings are answered."""
        deadline = time.time() + timeout
        while True:
            self.ws.settimeout(max(0.01, deadline - time.time()))
            packet = self.ws.recv()
            if packet == "2":
                self.ws.send("3")
                continue
            assert packet.startswith("4"), packet
            return packet[1:]

    def call(self, event, data):
        self.acks += 1
        ack_id = self.acks
        self.ws.send(f"42{ack_id}" + json.dumps([event, data]))
        while True:
            packet = self.recv_packet()
            if packet.startswith(f"3{ack_id}["):
                return json.loads(packet[len(f"3{ack_id}"):])

    def event(self, name, timeout=5.0):
        while True:
            packet = self.recv_packet(timeout)
            if packet.startswith("2["):
                got, payload = json.loads(packet[1:])
                if got == name:
                    return payload

    def close(self):
        self.ws.close()


def test_socketio_login_broadcast_and_unicast(sio):
    alice, bob = unique_id("alice"), unique_id("bob")
    a, b = EngineIOClient(sio.port), EngineIOClient(sio.port)
    try:
        assert a.handshake["pingInterval"] == 25000  # the library's default
        assert a.call("login", {"userID": alice, "appID": 101}) == [{"code": 200}]
        assert b.call("login", {"userID": bob, "appID": 101}) == [{"code": 200}]
        assert a.call("login", "nonsense") == [{"code": 1001}]
        a.ws.send('42["heartbeat",{}]')

        msg_id = unique_id("m")
        answer = sio.post("/user/sendMessageAll", appID=101, userID=alice, msgID=msg_id,
                          message="hello room")
        assert answer == {"code": 200, "msg": "Success", "data": {"sendResults": True}}
        assert b.event("msg") == push(msg_id, "msg", "hello room", alice, room=None)
        with pytest.raises(websocket.WebSocketTimeoutException):
            a.event("msg", timeout=0.3)  # the sender is left out

        msg_id = unique_id("m")
        answer = sio.post("/user/sendMessage", appID=101, userID=alice, msgID=msg_id,
                          message="hi alice")
        assert answer["data"] == {"sendResults": True}
        got = a.event("msg")
        assert got["seq"] == msg_id and got["response"]["data"]["msg"] == "hi alice"
        answer = sio.post("/user/sendMessage", appID=101, userID=unique_id("nobody"),
                          msgID=unique_id("m"), message="x")
        assert answer["data"] == {"sendResults": False}

        state = sio.get("/system/state")
        assert state["data"]["connections"] >= 2 and state["data"]["users"] >= 2
    finally:
        a.close()
        b.close()
    wait_until(lambda: sio.get("/system/state")["data"] == {"connections": 0, "users": 0},
               what="connections closed")
    # the clients above spoke Engine.IO over a WebSocket from the first packet on; the
    # server says that gevent-websocket (not simple-websocket) carries it
    assert "async_mode=gevent, WebSocket transport via gevent-websocket" in sio.output()
