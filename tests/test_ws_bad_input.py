"""Bad input on the WebSocket endpoint: malformed requests get a 1001 reply and the
connection lives on; framing violations close it with the RFC 6455 code; nothing a
client sends hurts the node (its worker survives and every connection is released)."""
import json

import pytest
import websocket
from websocket import ABNF

from support import Clients, RawSocket, compact, reply, unique_id, wait_until, ws_frame

BAD_JSON_REPLY = '{"seq":"","cmd":"","response":{"code":1001,"codeMsg":"参数不合法","data":null}}'

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@pytest.fixture
def connect():
    with Clients() as clients:
        yield clients


@pytest.fixture(autouse=True)
def node_stays_healthy(node):
    """Around every test here: the shared node's worker is the same process afterwards,
    and every connection the test opened is gone (polled: closes take a moment)."""
    workers = node.worker_pids()
    assert workers, "no gunicorn worker"
    before = node.connection_ids()
    yield
    wait_until(lambda: not (node.connection_ids() - before), timeout=10,
               what="connections of the test released")
    state = node.state(debug=True)
    assert state["connections"] == len(state["connectionList"])
    assert node.proc.poll() is None
    assert node.worker_pids() == workers


def assert_alive(client):
    assert client.request("ping", seq="alive") == reply("alive", "ping", 200, "pong")


def padded_ping(seq, size):
    """A ping request of exactly ``size`` bytes of JSON."""
    head, tail = f'{{"seq":"{seq}","cmd":"ping","data":"', '"}'
    frame = head + "x" * (size - len(head) - len(tail)) + tail
    assert len(frame.encode()) == size
    return frame


# -- malformed requests: a 1001 reply, the connection goes on ---------------------------

@pytest.mark.parametrize("payload", [
    "not json", "{", '{"seq":"a","cmd":"ping"', "{'seq':'a','cmd':'ping'}", "", " ",
    '{"seq":"a","cmd":"ping"}}', "\ufeff{}", "NaN-ish{"],
    ids=["words", "brace", "truncated", "single-quotes", "empty", "space", "trailing",
         "bom", "junk"])
def test_invalid_json_is_1001_with_empty_seq_and_cmd(node, connect, payload):
    c = connect(node)
    c.send_raw(payload)
    opcode, raw = c.recv_raw()
    assert opcode == OP_TEXT
    assert raw.decode() == BAD_JSON_REPLY
    assert_alive(c)


@pytest.mark.parametrize("payload", ['[{"seq":"a","cmd":"ping"}]', "[]", "42", '"ping"',
                                     "null", "true", "3.5"],
                         ids=["array", "empty-array", "number", "string", "null", "true", "float"])
def test_json_that_is_not_an_object_is_1001(node, connect, payload):
    c = connect(node)
    c.send_raw(payload)
    assert c.recv_raw()[1].decode() == BAD_JSON_REPLY
    assert_alive(c)


@pytest.mark.parametrize("frame", [
    {"seq": 1, "cmd": "ping"}, {"seq": ["a"], "cmd": "ping"}, {"seq": {"a": 1}, "cmd": "ping"},
    {"seq": True, "cmd": "ping"}],
    ids=["number", "list", "object", "bool"])
def test_seq_not_a_string_is_1001(node, connect, frame):
    c = connect(node)
    c.send_json(frame)
    # seq cannot be echoed: it is "" (cmd, a valid string, is echoed)
    assert c.recv_frame() == reply("", "ping", 1001)
    assert_alive(c)


@pytest.mark.parametrize("frame", [{"cmd": "ping"}, {"seq": None, "cmd": "ping"}],
                         ids=["missing", "null"])
def test_ping_without_seq_is_answered_with_an_empty_seq(node, connect, frame):
    c = connect(node)
    c.send_json(frame)
    assert c.recv_raw()[1].decode() == compact(reply("", "ping", 200, "pong"))
    assert_alive(c)


def test_seq_not_a_string_on_login_does_not_log_in(node, connect):
    c = connect(node)
    user = unique_id()
    c.send_json({"seq": 5, "cmd": "login", "data": {"appID": 101, "userID": user}})
    assert c.recv_frame() == reply("", "login", 1001)
    assert user not in node.get("/user/list", appID=101)["data"]["userList"]
    assert c.request("heartbeat", seq="h") == reply("h", "heartbeat", 1000)


@pytest.mark.parametrize("frame", [
    {"seq": "c1"}, {"seq": "c1", "cmd": ""}, {"seq": "c1", "cmd": None}, {"seq": "c1", "data": {}}],
    ids=["missing", "empty", "null", "only-data"])
def test_cmd_missing_or_empty_is_1010(node, connect, frame):
    # The original looks "" up in its command table and answers 路由不存在.
    c = connect(node)
    c.send_json(frame)
    assert c.recv_raw()[1].decode() == compact(reply("c1", "", 1010))
    assert_alive(c)


def test_neither_seq_nor_cmd_is_1010(node, connect):
    c = connect(node)
    c.send_raw("{}")
    assert c.recv_frame() == reply("", "", 1010)
    assert_alive(c)


@pytest.mark.parametrize("frame", [
    {"seq": "c1", "cmd": 7}, {"seq": "c1", "cmd": ["ping"]}, {"seq": "c1", "cmd": {"a": 1}},
    {"seq": "c1", "cmd": False}],
    ids=["number", "list", "object", "bool"])
def test_cmd_not_a_string_is_1001(node, connect, frame):
    c = connect(node)
    c.send_json(frame)
    assert c.recv_frame() == reply("c1", "", 1001)
    assert_alive(c)


def test_deeply_nested_json_is_1001(node, connect):
    c = connect(node)
    c.send_raw('{"seq":"n","cmd":"ping","data":' + "[" * 30000 + "]" * 30000 + "}")
    assert c.recv_raw()[1].decode() == BAD_JSON_REPLY
    assert_alive(c)


def test_seq_with_a_lone_surrogate_escape_gets_a_reply(node, connect):
    """JSON may escape a lone surrogate ("\\ud800"), which has no UTF-8 form, so it
    cannot be echoed as is: either the request is refused as invalid (1001, seq "")
    or the character is replaced with U+FFFD, as Go's decoder does. Either way a reply
    comes and the connection lives on."""
    c = connect(node)
    c.send_raw('{"seq":"\\ud800","cmd":"ping"}')
    assert c.recv_frame() in (reply("", "ping", 1001), reply("\ufffd", "ping", 200, "pong"))
    assert_alive(c)


def test_user_id_with_a_lone_surrogate_escape_is_refused_or_repaired(node, connect):
    """The same for a userID: never a half-done login (1004 with the user bound), and
    the room's user list and the node's state stay readable."""
    c = connect(node)
    tag = unique_id("sur")
    c.send_raw('{"seq":"s","cmd":"login","data":{"appID":102,"userID":"%s\\udc00"}}' % tag)
    answer = c.recv_frame()
    assert answer in (reply("s", "login", 1001), reply("s", "login", 1002), reply("s", "login"))
    status, _, body = node.request("GET", "/user/list", params={"appID": 102})
    assert status == 200, body[:200]
    listed = json.loads(body)["data"]["userList"]
    status, _, body = node.request("GET", "/system/state", params={"isDebug": "true"})
    assert status == 200, body[:200]
    if answer["response"]["code"] == 200:
        assert tag + "\ufffd" in listed
        assert c.request("heartbeat", seq="h") == reply("h", "heartbeat")
    else:
        assert not [u for u in listed if u.startswith(tag)]
        assert c.request("heartbeat", seq="h") == reply("h", "heartbeat", 1000)


# -- binary frames -----------------------------------------------------------------------

def test_binary_frame_with_json_is_answered(node, connect):
    c = connect(node)
    c.send_raw(b'{"seq":"b1","cmd":"ping"}', ABNF.OPCODE_BINARY)
    opcode, raw = c.recv_raw()
    assert opcode == OP_TEXT  # replies are text frames
    assert raw.decode() == '{"seq":"b1","cmd":"ping","response":{"code":200,"codeMsg":"Success","data":"pong"}}'
    user = unique_id("二进制")
    c.send_raw(json.dumps({"seq": "b2", "cmd": "login",
                           "data": {"appID": 101, "userID": user}}, ensure_ascii=False).encode(),
               ABNF.OPCODE_BINARY)
    assert c.reply("b2") == reply("b2", "login")
    assert user in node.get("/user/list", appID=101)["data"]["userList"]


@pytest.mark.parametrize("payload", [b"\xff\xfe\xfd", b'{"seq":"a\xff","cmd":"ping"}',
                                     b"\xc3\x28", b"\x00\x01binary"],
                         ids=["garbage", "bad-byte-in-json", "bad-sequence", "control-bytes"])
def test_binary_frame_that_is_not_utf8_json_is_1001(node, connect, payload):
    c = connect(node)
    c.send_raw(payload, ABNF.OPCODE_BINARY)
    assert c.recv_raw()[1].decode() == BAD_JSON_REPLY
    assert_alive(c)


# -- framing: invalid UTF-8, size limits, fragments, control frames ----------------------

@pytest.mark.parametrize("payload", [b"\xff\xfe", b'{"seq":"a\xff","cmd":"ping"}',
                                     b'{"seq":"a","cmd":"ping","data":"\xed\xa0\x80"}'],
                         ids=["garbage", "bad-byte-in-json", "surrogate"])
def test_text_frame_with_invalid_utf8_closes_1007(node, connect, payload):
    c = connect(node)
    assert c.login(unique_id())["response"]["code"] == 200
    c.send_raw(payload, ABNF.OPCODE_TEXT)  # websocket-client sends bytes as they are
    assert c.wait_closed()[0] == 1007


def test_message_of_exactly_the_limit_is_answered(node, connect):
    c = connect(node)
    c.send_raw(padded_ping("big", 65536))
    assert c.reply("big") == reply("big", "ping", 200, "pong")


@pytest.mark.parametrize("size", [65537, 70000, 1 << 20])
def test_message_above_64_kib_closes_1009(node, connect, size):
    c = connect(node)
    try:
        c.send_raw(padded_ping("big", size))
    except (OSError, websocket.WebSocketException):
        pass  # the node may close before the whole frame is written
    assert c.wait_closed()[0] == 1009


def test_frame_limit_is_configurable(make_node, connect):
    small = make_node({"app": {"maxFrameBytes": 1024}})
    ok = connect(small)
    ok.send_raw(padded_ping("k", 1024))
    assert ok.reply("k") == reply("k", "ping", 200, "pong")
    c = connect(small)
    c.send_raw(padded_ping("big", 2000))
    assert c.wait_closed()[0] == 1009
    # the limit also holds for a message split into fragments
    f = connect(small)
    f.ws.send_frame(ABNF.create_frame("x" * 600, ABNF.OPCODE_TEXT, fin=0))
    f.ws.send_frame(ABNF.create_frame("x" * 600, ABNF.OPCODE_CONT, fin=1))
    assert f.wait_closed()[0] == 1009
    c.close()
    f.close()
    assert wait_until(lambda: small.state()["connections"] == 1, what="closed ones released")
    assert_alive(ok)


def test_fragmented_message_is_reassembled(node, connect):
    c = connect(node)
    user = unique_id("片")
    text = json.dumps({"seq": "frag", "cmd": "login", "data": {"appID": 101, "userID": user}},
                      ensure_ascii=False).encode()
    cut = text.index("片".encode()) + 1  # inside a multi-byte character
    parts = [text[:5], text[5:cut], text[cut:]]
    c.ws.send_frame(ABNF.create_frame(parts[0], ABNF.OPCODE_TEXT, fin=0))
    c.ws.send_frame(ABNF.create_frame(parts[1], ABNF.OPCODE_CONT, fin=0))
    c.ws.ping(b"between")  # control frames may come between fragments
    c.ws.send_frame(ABNF.create_frame(parts[2], ABNF.OPCODE_CONT, fin=1))
    opcode, payload = c.ws.recv_data(control_frame=True)
    assert (opcode, payload) == (ABNF.OPCODE_PONG, b"between")
    assert c.reply("frag") == reply("frag", "login")
    assert user in node.get("/user/list", appID=101)["data"]["userList"]


def test_fragmented_binary_message_is_reassembled(node, connect):
    c = connect(node)
    c.ws.send_frame(ABNF.create_frame(b'{"seq":"fb",', ABNF.OPCODE_BINARY, fin=0))
    c.ws.send_frame(ABNF.create_frame(b'"cmd":"ping"}', ABNF.OPCODE_CONT, fin=1))
    assert c.reply("fb") == reply("fb", "ping", 200, "pong")


def test_ping_control_frame_gets_a_pong_with_its_payload(node, connect):
    c = connect(node)
    for payload in (b"", b"hello", bytes(range(125))):
        c.ws.ping(payload)
        opcode, data = c.ws.recv_data(control_frame=True)
        assert (opcode, data) == (ABNF.OPCODE_PONG, payload)
    assert_alive(c)


def test_unsolicited_pong_is_ignored(node, connect):
    c = connect(node)
    c.ws.pong(b"unasked")
    assert_alive(c)


def test_close_handshake_is_answered_with_the_same_code(node, connect):
    c = connect(node)
    assert c.login(unique_id())["response"]["code"] == 200
    c.ws.send_close(1000, b"bye")
    assert c.wait_closed()[0] == 1000
    d = connect(node)
    d.ws.send_close(4321, b"app reason")
    assert d.wait_closed()[0] == 4321


# -- framing violations need a raw socket -------------------------------------------------

@pytest.fixture
def raw(node):
    opened = []

    def open_raw(target=None):
        sock = RawSocket(target or node)
        opened.append(sock)
        return sock

    yield open_raw
    for sock in opened:
        sock.close()


@pytest.mark.parametrize("frame", [
    ws_frame(OP_TEXT, b'{"seq":"a","cmd":"ping"}', masked=False),
    ws_frame(OP_TEXT, b'{"seq":"a","cmd":"ping"}', rsv=0b100),
    ws_frame(OP_TEXT, b'{"seq":"a","cmd":"ping"}', rsv=0b001),
    ws_frame(OP_CONT, b'{"seq":"a","cmd":"ping"}'),
    ws_frame(0x3, b"x"),
    ws_frame(0xB, b"x"),
    ws_frame(OP_PING, b"p" * 126),
    ws_frame(OP_PING, b"p", fin=False),
    ws_frame(OP_TEXT, b'{"seq":', fin=False) + ws_frame(OP_TEXT, b'"a"}'),
], ids=["unmasked", "rsv1", "rsv3", "continuation-first", "opcode-3", "opcode-11",
        "long-ping", "fragmented-ping", "text-inside-fragments"])
def test_framing_violation_closes_1002(node, raw, frame):
    sock = raw()
    sock.send(frame)
    assert sock.close_code() == 1002


def test_frame_header_announcing_too_much_closes_1009_before_the_payload(node, raw):
    sock = raw()
    # 127: 8-byte length; announce 1 TiB and send none of it
    sock.send(bytes((0x81, 0x80 | 127)) + (1 << 40).to_bytes(8, "big") + b"mask")
    assert sock.close_code() == 1009


@pytest.mark.parametrize("cut", [
    b"",  # handshake only
    b"\x81",  # half of the 2-byte header
    b"\x81\xfe\x01",  # half of a 16-bit length
    b"\x81\xff\x00\x00\x00",  # half of a 64-bit length
    b"\x81\x98ab",  # half of the mask
    ws_frame(OP_TEXT, b'{"seq":"a","cmd":"ping"}')[:15],  # half of the payload
    ws_frame(OP_TEXT, b"{" + b" " * 4000 + b"}")[:2000],  # half of a longer payload
], ids=["nothing", "header", "len16", "len64", "mask", "payload", "long-payload"])
def test_client_vanishing_mid_frame_is_cleaned_up(node, raw, connect, cut):
    before = node.connection_ids()
    sock = raw()
    (mine,) = wait_until(lambda: node.connection_ids() - before, what="raw connection seen")
    if cut:
        sock.send(cut)
    sock.close()
    wait_until(lambda: mine not in node.connection_ids(), timeout=10, what="connection released")
    state = node.state(debug=True)
    assert {c["id"] for c in state["connectionList"]} <= before
    assert state["connections"] == len(state["connectionList"]) <= len(before)
    c = connect(node)
    assert_alive(c)


def test_logged_in_client_vanishing_mid_frame_goes_offline(node, raw, connect):
    observer = connect(node)
    assert observer.login(unique_id("obs"), 104)["response"]["code"] == 200
    user = unique_id("gone")
    sock = raw()
    sock.send(ws_frame(OP_TEXT, json.dumps({"seq": "l", "cmd": "login",
                                            "data": {"appID": 104, "userID": user}}).encode()))
    assert json.loads(sock.read_frame()[1]) == reply("l", "login")
    assert observer.push("enter")["response"]["data"]["from"] == user
    sock.send(ws_frame(OP_TEXT, b'{"seq":"half","cmd":"heartbeat"}')[:12])
    sock.close()
    exit_event = observer.push("exit")
    assert exit_event["response"]["data"] == {"target": "", "type": "text",
                                              "msg": "用户已经离开~", "from": user, "room": ""}
    assert user not in node.get("/user/list", appID=104)["data"]["userList"]
    assert node.get("/user/online", appID=104, userID=user)["data"]["online"] is False


def test_raw_socket_control_frames_and_reply(node, raw):
    """A hand-made client sees the exact bytes: an unmasked text reply, a pong."""
    sock = raw()
    sock.send(ws_frame(OP_PING, b"raw"))
    assert sock.read_frame() == (OP_PONG, b"raw")
    sock.send(ws_frame(OP_TEXT, b'{"seq":"r","cmd":"ping"}'))
    assert sock.read_frame() == (OP_TEXT, compact(reply("r", "ping", 200, "pong")).encode())
    sock.send(ws_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    assert sock.close_code() == 1000


def test_garbage_instead_of_a_handshake_is_refused(node, connect):
    import socket
    with socket.create_connection(("127.0.0.1", node.ws_port), timeout=5) as s:
        s.sendall(b"\x00\xff\x81\x80 garbage\r\n\r\n")
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        assert not data or data.startswith(b"HTTP/1.1 4")
    assert_alive(connect(node))
