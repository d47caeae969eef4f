"""Property-based tests: arbitrary bytes, JSON and field values thrown at the frame
parser and at a live node. Nothing may crash, every reply is well formed, and no
greenlet is left behind."""
import json
import socket

import gevent
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from imserver.connection import Connection
from imserver.protocol import Code, ProtocolError, parse_request
from imserver.protocol.envelope import encode_reply, is_encodable
from imserver.protocol.frames import FrameError
from support import RawSocket, wait_until, ws_frame

KNOWN_CODES = {int(c) for c in Code}
FAST = settings(max_examples=300, deadline=None, database=None)
LIVE = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=4),
    max_leaves=12)

requests = st.fixed_dictionaries(
    {"seq": st.one_of(st.text(max_size=12), json_values),
     "cmd": st.one_of(st.sampled_from(["login", "heartbeat", "ping", "", "nope"]), json_values),
     "data": st.one_of(
         json_values,
         st.fixed_dictionaries({"userID": st.one_of(st.text(max_size=70), json_values),
                                "appID": st.one_of(st.sampled_from([101, 102, 105]),
                                                   st.text(max_size=4), json_values),
                                "serviceToken": st.one_of(st.text(max_size=8), json_values)}))})


# -- the pure parser ---------------------------------------------------------------------------

@FAST
@given(st.one_of(st.text(), st.binary()))
def test_parse_request_raises_only_protocol_errors(payload):
    try:
        request = parse_request(payload)
    except ProtocolError as exc:
        assert exc.code == Code.PARAMETER_ILLEGAL
        reply = encode_reply(exc.seq, exc.cmd, exc.code)
    else:
        assert isinstance(request.seq, str) and isinstance(request.cmd, str)
        reply = encode_reply(request.seq, request.cmd, Code.OK)
    assert json.loads(reply)["response"]["code"] in KNOWN_CODES


@FAST
@given(requests)
def test_any_json_request_can_be_answered(obj):
    text = json.dumps(obj)
    try:
        request = parse_request(text)
    except ProtocolError as exc:
        assert is_encodable(exc.seq) and is_encodable(exc.cmd)
        return
    # null counts as missing, which is ""
    assert request.seq == ("" if obj["seq"] is None else obj["seq"])
    assert request.cmd == ("" if obj["cmd"] is None else obj["cmd"])
    json.loads(encode_reply(request.seq, request.cmd, Code.OK, None))


def connection_over(stream: bytes, max_frame=1024) -> Connection:
    ours, theirs = socket.socketpair()
    theirs.close()  # the peer sent ``stream`` and went away
    return Connection(ours, ("127.0.0.1", 1), stream, max_frame_bytes=max_frame,
                      max_backlog_bytes=65536, max_backlog_frames=64, write_timeout=1.0,
                      burst=10)


@FAST
@given(st.binary(max_size=2048))
def test_frame_reader_on_arbitrary_bytes(stream):
    conn = connection_over(stream)
    try:
        for _ in range(64):
            message = conn.read_message()
            if message is None:
                break
            opcode, payload = message
            assert opcode in (0x1, 0x2) and len(payload) <= 1024
    except FrameError as exc:
        assert exc.close_code in (1002, 1009)
    finally:
        conn.release()


@FAST
@given(st.lists(st.tuples(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3]),
                          st.binary(max_size=300), st.booleans()), max_size=6))
def test_frame_reader_on_arbitrary_frame_sequences(parts):
    stream = b"".join(ws_frame(op, payload, fin=fin) for op, payload, fin in parts)
    conn = connection_over(stream, max_frame=512)
    try:
        while True:
            message = conn.read_message()
            if message is None:
                break
            assert len(message[1]) <= 512
    except FrameError as exc:
        assert exc.close_code in (1002, 1009)
    finally:
        conn.release()


# -- a live node ----------------------------------------------------------------------------

def check_reply(raw_payload: bytes) -> dict:
    text = raw_payload.decode("utf-8")  # every reply is UTF-8 JSON
    frame = json.loads(text)
    assert list(frame) == ["seq", "cmd", "response"]
    assert list(frame["response"]) == ["code", "codeMsg", "data"]
    assert frame["response"]["code"] in KNOWN_CODES
    return frame


def exchange(node, frame_bytes: bytes):
    """Send one frame on a fresh connection; read what comes back: the replies, and the
    close code if the node closed the connection."""
    raw = RawSocket(node, timeout=5)
    raw.sock.settimeout(2)
    replies, close_code = [], None
    try:
        raw.send(frame_bytes + ws_frame(0x1, b'{"seq":"probe","cmd":"ping"}'))
        while True:
            opcode, payload = raw.read_frame(timeout=2)
            if opcode == 0x8:
                close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                break
            if opcode in (0x1, 0x2):
                frame = check_reply(payload)
                replies.append(frame)
                if frame["seq"] == "probe" and frame["cmd"] == "ping":
                    break
    except EOFError:
        close_code = close_code or 1006
    except socket.timeout:
        # The bytes announced a frame longer than what followed (our probe became part of
        # it): the node rightly waits for the rest. We hang up; the end of the test checks
        # that the node let go of the connection and its greenlet.
        close_code = "waiting"
    finally:
        raw.close()
    return replies, close_code


def test_live_node_survives_fuzzing(make_node):
    node = make_node({"app": {"maxFrameBytes": 4096, "logLevel": "info"}})
    baseline = node.state(debug=True)["greenlets"]["total"]
    worker = node.worker_pids()

    @LIVE
    @given(st.one_of(requests.map(lambda o: ws_frame(0x1, json.dumps(o).encode())),
                     requests.map(lambda o: ws_frame(0x2, json.dumps(o).encode())),
                     st.binary(max_size=200).map(lambda b: ws_frame(0x1, b)),
                     st.binary(max_size=200).map(lambda b: ws_frame(0x2, b)),
                     st.binary(max_size=64)))
    @example(b"\x81\xfe\x10\x00")  # announces 4096 bytes, sends far fewer: the node waits
    @example(ws_frame(0x1, b"\xff\xfe"))  # text that is not UTF-8
    @example(ws_frame(0x1, b"x" * 5000))  # over maxFrameBytes
    def run(frame_bytes):
        replies, close_code = exchange(node, frame_bytes)
        if close_code is None:
            assert replies and replies[-1]["response"]["data"] == "pong"
        elif close_code == "waiting":
            assert frame_bytes[:1] and frame_bytes[0] & 0x0F in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA)
        else:
            assert close_code in (1002, 1007, 1009, 1006)

    run()
    assert node.proc.poll() is None and node.worker_pids() == worker
    wait_until(lambda: node.state()["connections"] == 0, timeout=10, what="all connections gone")
    wait_until(lambda: node.state(debug=True)["greenlets"]["total"] <= baseline + 2, timeout=10,
               what="greenlets back to the baseline")
