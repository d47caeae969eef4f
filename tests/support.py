"""Test support: real node processes and a WebSocket client that speaks the protocol."""
import base64
import itertools
import json
import os
import socket
import struct
import time
import urllib.parse
import uuid

import websocket

from imserver.bench import harness
from imserver.bench.harness import ROOT, free_port  # noqa: F401  (the tests import them here)


def unique_id(prefix="u") -> str:
    """A user ID no other test uses (tests share the session's node)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(predicate, timeout=5.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError
    with its last value after ``timeout`` seconds."""
    try:
        return harness.wait_until(predicate, timeout, interval, what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


CODE_MSG = {200: "Success", 1000: "未登录", 1001: "参数不合法", 1002: "非法的用户ID",
            1003: "未授权", 1004: "系统错误", 1005: "没有数据", 1006: "添加错误",
            1007: "删除错误", 1008: "存储错误", 1009: "操作失败", 1010: "路由不存在",
            1100: "节点不可达", 1101: "请求过于频繁", 1102: "节点正在关闭"}


def grpc_api():
    """(grpc, pb, pb_grpc) for gRPC calls and servers in this gevent-patched process: grpcio
    is made to cooperate with gevent first, before any gRPC object exists."""
    from imserver.cluster.grpc_relay import enable_gevent
    enable_gevent()
    import grpc
    from imserver.cluster.pb import accserver_pb2 as pb
    from imserver.cluster.pb import accserver_pb2_grpc as pb_grpc
    return grpc, pb, pb_grpc


class FakeClock:
    """A clock a store takes as ``clock=``: time passes when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def reply(seq, cmd, code=200, data=None) -> dict:
    """The reply envelope PROTOCOL.md specifies, as a dict (its key order too)."""
    return {"seq": seq, "cmd": cmd,
            "response": {"code": code, "codeMsg": CODE_MSG[code], "data": data}}


# Keys a push gains with rooms (PROTOCOL.md, "Rooms, history and recovery"): ``room`` is
# compared by ``push``; the others vary per message and are checked by the tests of rooms.
PLACE_KEYS = frozenset(("msgID", "time", "offset", "epoch"))


class Push(dict):
    """An expected push: equal to a pushed frame with these keys and values, which may
    also carry the keys of PLACE_KEYS (only those) with any value."""

    def __eq__(self, other):
        if not isinstance(other, dict) or set(other) != set(self):
            return False
        mine, theirs = self["response"], other.get("response")
        if not isinstance(theirs, dict) or set(theirs) != set(mine):
            return False
        if any(other[k] != self[k] for k in ("seq", "cmd")) or any(
                theirs[k] != mine[k] for k in ("code", "codeMsg")):
            return False
        data, got = mine["data"], theirs["data"]
        extra = set(got) - set(data)
        return extra <= PLACE_KEYS and all(got.get(k) == v for k, v in data.items())

    def __ne__(self, other):
        return not self == other

    __hash__ = None


def push(seq, cmd, msg, sender, msg_type="text", target="", room="") -> dict:
    """A server push (``msg``, ``enter``, ``exit``) as PROTOCOL.md specifies it; with
    ``room=None`` as the original pushes it, without a room."""
    data = {"target": target, "type": msg_type, "msg": msg, "from": sender}
    if room is not None:
        data["room"] = room
    return Push({"seq": seq, "cmd": cmd, "response": {"code": 200, "codeMsg": "Ok",
                                                      "data": data}})


def without_place(data: dict) -> dict:
    """An answer of a send to a room without the stored message's place, which must be
    there: a positive ``offset`` and an ``epoch``."""
    data = dict(data)
    offset, epoch = data.pop("offset", None), data.pop("epoch", None)
    assert isinstance(offset, int) and offset > 0, f"no offset in {data}"
    assert isinstance(epoch, str) and epoch, f"no epoch in {data}"
    return data


def compact(obj) -> str:
    """JSON text the way the node writes it: no spaces, UTF-8 as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class NodeProcess(harness.NodeServer):
    """A node started the way the README starts one (``python -m imserver``), on free
    ports, with its own config file and log in ``workdir``."""

    def __init__(self, workdir, config=None, name="node", env=None):
        self.workdir = str(workdir)
        defaults = {"app": {"logFile": os.path.join(self.workdir, f"{name}.log"),
                            "logLevel": "debug",
                            # Spread shutdown closes over half a second, not five.
                            "drainWindow": 0.5}}
        super().__init__(name, harness.node_config(free_port(), free_port(), free_port(),
                                                   defaults, config),
                         os.path.join(self.workdir, f"{name}.yaml"),
                         os.path.join(self.workdir, f"{name}.stderr"), env=env)
        self.stderr_path = self.log_path

    def startup_failure(self, reason: str) -> str:
        return f"{reason}:\n" + self.output()

    # HTTP --------------------------------------------------------------------------------

    def get(self, path, timeout=10, **params) -> dict:
        status, _, body = self.request("GET", path, params=params, timeout=timeout)
        return json.loads(body)

    def post(self, path, timeout=10, **form) -> dict:
        body = urllib.parse.urlencode(form).encode()
        status, _, data = self.request(
            "POST", path, body=body, timeout=timeout,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        return json.loads(data)

    def state(self, debug=False) -> dict:
        return self.get("/system/state", **({"isDebug": "true"} if debug else {}))["data"]

    def connection_ids(self) -> "set[int]":
        return {c["id"] for c in self.state(debug=True)["connectionList"]}

    def client(self, **kw) -> "Client":
        return Client(self.ws_url, **kw)


_seq = itertools.count(1)


class Client:
    """A WebSocket client: requests wait for the reply with their seq; pushes that
    arrive meanwhile are kept for ``push()``."""

    def __init__(self, url, timeout=10):
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.pushes = []
        self.close_code = None
        self.close_reason = None

    def send_json(self, obj) -> None:
        self.ws.send(json.dumps(obj))

    def send_raw(self, data, opcode=websocket.ABNF.OPCODE_TEXT) -> None:
        self.ws.send(data, opcode)

    def recv_raw(self, timeout=10):
        """Next data message as (opcode, payload bytes); None when the server closed
        (code kept)."""
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                if len(data) >= 2:
                    self.close_code = int.from_bytes(data[:2], "big")
                    self.close_reason = data[2:].decode("utf-8", "replace")
                else:
                    self.close_code = 1005
                return None
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                return opcode, data

    def recv_frame(self, timeout=10):
        """Next data frame as a dict; None when the server closed (code kept)."""
        message = self.recv_raw(timeout)
        return None if message is None else json.loads(message[1])

    def request(self, cmd, data=None, seq=None, timeout=10) -> dict:
        seq = seq if seq is not None else f"t-{next(_seq)}"
        frame = {"seq": seq, "cmd": cmd}
        if data is not None:
            frame["data"] = data
        self.send_json(frame)
        return self.reply(seq, timeout)

    def reply(self, seq, timeout=10) -> dict:
        deadline = time.time() + timeout
        while True:
            frame = self.recv_frame(max(0.01, deadline - time.time()))
            if frame is None:
                raise ConnectionError(f"closed with {self.close_code} {self.close_reason!r}")
            if frame.get("seq") == seq and frame.get("cmd") not in ("msg", "enter", "exit"):
                return frame
            self.pushes.append(frame)

    def login(self, user_id, app_id=101, token="") -> dict:
        return self.request("login", {"serviceToken": token, "appID": app_id, "userID": user_id})

    def push(self, cmd=None, timeout=10) -> dict:
        """The next pushed frame (optionally of one cmd), skipping others."""
        deadline = time.time() + timeout
        while True:
            for i, frame in enumerate(self.pushes):
                if cmd is None or frame.get("cmd") == cmd:
                    return self.pushes.pop(i)
            frame = self.recv_frame(max(0.01, deadline - time.time()))
            if frame is None:
                raise ConnectionError(f"closed with {self.close_code} {self.close_reason!r}")
            self.pushes.append(frame)

    def flush(self, timeout=10) -> list:
        """Every push that reached this client so far, in order, taken out of
        ``pushes``: a ping's reply comes after all of them, as the node writes each
        connection's frames in order. Proves that nothing was pushed, without a wait."""
        self.request("ping", timeout=timeout)
        frames, self.pushes = self.pushes, []
        return frames

    def no_push(self, wait=0.5) -> bool:
        """True if nothing is pushed within ``wait`` seconds."""
        if self.pushes:
            return False
        try:
            frame = self.recv_frame(wait)
        except websocket.WebSocketTimeoutException:
            return True
        if frame is not None:
            self.pushes.append(frame)
        return False

    def wait_closed(self, timeout=10) -> "tuple[int, str]":
        """Read until the server's close frame or end of stream: (code, reason)."""
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                frame = self.recv_frame(max(0.01, deadline - time.time()))
                if frame is None:
                    return self.close_code, self.close_reason
                self.pushes.append(frame)
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return self.close_code or 1006, self.close_reason or ""
        raise TimeoutError("connection still open")

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass
        # ws.close() does nothing once a close frame was exchanged (recv answers the
        # server's close itself); the socket must be closed all the same.
        self.ws.shutdown()


class Clients:
    """Opens clients and closes every one at the end: ``with Clients() as connect:
    a = connect(node)``."""

    def __init__(self):
        self._open = []

    def __call__(self, node, **kw) -> Client:
        client = node.client(**kw)
        self._open.append(client)
        return client

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for client in self._open:
            client.close()


def ws_frame(opcode, payload=b"", fin=True, masked=True, rsv=0) -> bytes:
    """One client frame built by hand, with the freedom to break the rules."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n <= 0xFFFF:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A WebSocket connection on a plain socket, for what websocket-client refuses to
    send: broken frames, a frame cut in half, a peer that vanishes."""

    def __init__(self, node, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", node.ws_port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /acc HTTP/1.1\r\nHost: 127.0.0.1:{node.ws_port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"handshake failed: {head!r}")
            head += chunk
        head, _, self._buf = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake failed: {head!r}")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_frame(self, timeout=10) -> "tuple[int, bytes]":
        """The next frame from the server: (opcode, payload). EOFError at end of stream."""
        self.sock.settimeout(timeout)
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def close_code(self, timeout=10) -> int:
        """Read until the server's close frame: its code."""
        deadline = time.time() + timeout
        while True:
            opcode, payload = self.read_frame(max(0.01, deadline - time.time()))
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
