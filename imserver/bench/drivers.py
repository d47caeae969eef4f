"""Protocol drivers: what a load client says after the WebSocket handshake.

One small interface for every target::

    driver = make_driver("acc", ws_url, app_id=101, on_push=cb, timeout=10)
    conn = driver.connect(user_id, source_ip)   # TCP, handshake, login; WSError on failure
    driver.serve(conn)                          # the reader loop (one greenlet); returns the end reason
    driver.heartbeat(conn)
    driver.close(conn)

``on_push(cmd, msg_id, recv_time)`` is called for every message the server pushes
(``msg``, ``enter``, ``exit``); replies to our own requests are counted in
``driver.replies`` (``"heartbeat 200"`` -> n).

- ``acc``: this project's protocol (docs/PROTOCOL.md): JSON frames on ``/acc``; pushes carry
  the msgID in ``seq``. The naive gevent-websocket server speaks it too.
- ``socketio``: Engine.IO v4 / Socket.IO v5 over WebSocket, for the Flask-SocketIO peer
  server: ``0{open}``, ``40`` connect, ``421["login",{...}]`` acked by ``431[{"code":200}]``,
  ``42["heartbeat",{}]``, the server's ping ``2`` answered by ``3``, and pushes
  ``42["msg",{"seq":"<msgID>",...}]``.
"""
import json
import time
from collections import Counter

from .wsclient import ClosedError, WSConnection, WSError, parse_ws_url

PUSH_CMDS = frozenset(("msg", "enter", "exit"))
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


class Driver:
    name = ""

    def __init__(self, ws_url: str, app_id: int = 101, on_push=None, timeout: float = 10.0,
                 clock=time.time):
        self.host, self.port, self.path = parse_ws_url(ws_url)
        self.app_id = app_id
        self.on_push = on_push or (lambda cmd, msg_id, t: None)
        self.timeout = timeout
        self.clock = clock
        self.replies = Counter()  # "<cmd> <code>" -> n, for replies after login
        self.heartbeats_sent = 0

    def connect(self, user_id: str, source_ip: str = "") -> WSConnection:
        conn = WSConnection()
        conn.user = user_id
        conn.connect(self.host, self.port, self.path, source_ip, self.timeout)
        try:
            self.login(conn, user_id)
        except BaseException:
            conn.abort()
            raise
        return conn

    def serve(self, conn: WSConnection) -> str:
        """Run the reader loop until the connection ends; the reason it ended."""
        try:
            conn.serve(self.on_message, self.clock)
        except ClosedError as exc:
            conn.abort()
            return exc.reason
        except WSError as exc:
            conn.abort()
            return exc.reason
        finally:
            conn.abort()
        return "ended"

    def close(self, conn: WSConnection) -> None:
        conn.close(1000)

    def pushed(self, conn: WSConnection, cmd: str, msg_id: str, now: float) -> None:
        """A push read by the reader loop (a subclass may want to know whose it is)."""
        self.on_push(cmd, msg_id, now)

    # -- per protocol ---------------------------------------------------------------------

    def login(self, conn: WSConnection, user_id: str) -> None:
        raise NotImplementedError

    def heartbeat(self, conn: WSConnection) -> bool:
        raise NotImplementedError

    def on_message(self, conn: WSConnection, opcode: int, payload: bytes, now: float) -> None:
        raise NotImplementedError


class AccDriver(Driver):
    """docs/PROTOCOL.md: login/heartbeat request frames, pushed msg/enter/exit frames."""
    name = "acc"

    def login(self, conn, user_id):
        conn.send_text(_dumps({"seq": "l", "cmd": "login", "data": {
            "serviceToken": "", "appID": self.app_id, "userID": user_id}}))
        deadline = time.monotonic() + self.timeout
        while True:
            _, payload = conn.recv_message()
            now = self.clock()
            try:
                frame = _loads(payload)
                cmd = frame["cmd"]
            except (ValueError, KeyError, TypeError):
                raise WSError("login bad frame", payload[:100].decode("utf-8", "replace"))
            if cmd == "login":
                code = (frame.get("response") or {}).get("code")
                if code != 200:
                    raise WSError(f"login code {code}")
                return
            if cmd in PUSH_CMDS:
                self.on_push(cmd, frame.get("seq", ""), now)
            if time.monotonic() > deadline:
                raise WSError("login timeout")

    def heartbeat(self, conn):
        ok = conn.send_text(b'{"seq":"h","cmd":"heartbeat","data":{}}')
        if ok:
            self.heartbeats_sent += 1
        return ok

    def on_message(self, conn, opcode, payload, now):
        try:
            frame = _loads(payload)
            cmd = frame["cmd"]
        except (ValueError, KeyError, TypeError):
            self.replies["bad frame"] += 1
            return
        if cmd in PUSH_CMDS:
            self.pushed(conn, cmd, frame.get("seq", ""), now)
        else:
            try:
                code = frame["response"]["code"]
            except (KeyError, TypeError):
                code = "?"
            self.replies[f"{cmd} {code}"] += 1


class SocketIODriver(Driver):
    """Engine.IO v4 / Socket.IO v5 over a WebSocket, namespace "/"."""
    name = "socketio"

    def __init__(self, ws_url, *args, **kw):
        super().__init__(ws_url, *args, **kw)
        if "socket.io" not in self.path:
            self.path = SOCKETIO_PATH

    def _recv_text(self, conn):
        _, payload = conn.recv_message()
        return payload.decode("utf-8", "replace")

    def login(self, conn, user_id):
        deadline = time.monotonic() + self.timeout
        text = self._recv_text(conn)
        if not text.startswith("0"):
            raise WSError("eio no open packet", text[:100])
        conn.send_text(b"40")
        stage = "connect"
        while True:
            if time.monotonic() > deadline:
                raise WSError(f"login timeout ({stage})")
            text = self._recv_text(conn)
            now = self.clock()
            if text == "2":
                conn.send_text(b"3")
                continue
            if stage == "connect":
                if text.startswith("40"):
                    stage = "login"
                    conn.send_text(b'421["login",' + _dumps(
                        {"userID": user_id, "appID": self.app_id}).encode() + b"]")
                    continue
                if text.startswith("44"):
                    raise WSError("sio connect error", text[:100])
            elif text.startswith("431"):
                try:
                    ack = _loads(text[3:])
                    code = ack[0].get("code") if ack and isinstance(ack[0], dict) else ack[0]
                except (ValueError, IndexError, AttributeError):
                    raise WSError("login bad ack", text[:100])
                if code != 200:
                    raise WSError(f"login code {code}")
                return
            if text.startswith("42"):
                self._event(text, now)
            elif text.startswith("41") or text.startswith("1"):
                raise WSError("sio disconnected", text[:100])

    def heartbeat(self, conn):
        ok = conn.send_text(b'42["heartbeat",{}]')
        if ok:
            self.heartbeats_sent += 1
        return ok

    def close(self, conn):
        # Leave the namespace, then close the WebSocket.
        conn.send_text(b"41")
        conn.close(1000)

    def _event(self, text, now):
        start = text.find("[")
        try:
            event = _loads(text[start:]) if start >= 0 else None
            name = event[0]
        except (ValueError, IndexError, TypeError):
            self.replies["bad frame"] += 1
            return
        if name in PUSH_CMDS:
            data = event[1] if len(event) > 1 and isinstance(event[1], dict) else {}
            self.on_push(name, data.get("seq", ""), now)
        else:
            self.replies[f"event {name}"] += 1

    def on_message(self, conn, opcode, payload, now):
        text = payload.decode("utf-8", "replace")
        if text == "2":
            conn.send_text(b"3")
            return
        if text.startswith("42"):
            self._event(text, now)
            return
        if text.startswith("43"):
            self.replies["ack"] += 1
            return
        if text.startswith("41") or text.startswith("1"):
            # The server left the namespace or closed the Engine.IO session: a drop.
            raise WSError("sio disconnected", text[:100])
        self.replies[f"eio {text[:2]}"] += 1


DRIVERS = {"acc": AccDriver, "socketio": SocketIODriver}


def make_driver(name: str, ws_url: str, **kw) -> Driver:
    try:
        cls = DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown driver {name!r}; choose from {', '.join(DRIVERS)}")
    return cls(ws_url, **kw)
