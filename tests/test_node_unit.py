"""The node's parts without sockets: the hub, the command registry and dispatch, the sweep,
login/heartbeat handling and the advertised address.

Connections here are fakes that record what is sent and closed: that is fault injection,
the real Connection is exercised by the tests that run a node process.
"""
import ipaddress
import itertools
import json
import logging
import os
import time

import pytest

from imserver.cluster import MemoryPresenceStore, NoPeersRelay, StoreError
from imserver.auth import Auth
from imserver.config import load_config
from imserver.hub import Hub
from imserver.node import CommandRegistry, Node, commands as default_commands
from imserver.protocol import CloseCode, Code
from imserver.runtime import resolve_advertise_ip

CLOSE_REPLACED, CLOSE_HEARTBEAT_TIMEOUT = CloseCode.REPLACED, CloseCode.HEARTBEAT_TIMEOUT

_ids = itertools.count(1)


class FakeConnection:
    """What the node uses of a Connection; records frames and closes."""

    def __init__(self, heartbeat_time=None, addr="192.168.1.20", port=53000):
        self.id = next(_ids)
        self.app_id = 0
        self.user_id = ""
        self.addr = addr
        self.port = port
        now = time.time()
        self.connect_time = now
        self.login_time = 0.0
        self.heartbeat_time = now if heartbeat_time is None else heartbeat_time
        self.last_seen = now
        self.pinged = False
        self.tokens, self.tokens_time, self.strikes = 40.0, now, 0
        self.closing = False
        self.closed = False
        self.rooms = None
        self.frames = []
        self.closes = []
        self.pings = 0
        self.aborted = False
        # Not None: imserver.connection.send_to_all then takes the path through send().
        self._backlog = ()

    @property
    def user_key(self):
        return f"{self.app_id}_{self.user_id}" if self.user_id else ""

    def send(self, frame: bytes) -> bool:
        if self.closing or self.closed:
            return False
        self.frames.append(frame)
        return True

    def close(self, code, reason=""):
        if self.closing or self.closed:
            return
        self.closing = True
        self.closes.append((code, reason))

    def ping(self):
        self.pings += 1
        self.pinged = True

    def abort(self):
        self.aborted = self.closed = self.closing = True

    def messages(self):
        """Payloads of the recorded frames, checking that each is one final text frame."""
        out = []
        for frame in self.frames:
            assert frame[0] == 0x81
            n = frame[1]
            header = 2
            if n == 126:
                n, header = int.from_bytes(frame[2:4], "big"), 4
            elif n == 127:
                n, header = int.from_bytes(frame[2:10], "big"), 10
            assert len(frame) == header + n
            out.append(frame[header:])
        return out

    def decoded(self):
        return [json.loads(m.decode("utf-8")) for m in self.messages()]

    def __repr__(self):
        return f"<FakeConnection {self.id} {self.user_key or '-'}>"


class FailingStore(MemoryPresenceStore):
    """A store that is down (fault injection)."""

    def set_user(self, record):
        raise StoreError("redis: ConnectionError: down")


@pytest.fixture
def cfg():
    return load_config(os.devnull, env={})


def make_node(cfg, store=None, registry=default_commands, ip="10.0.0.7"):
    return Node(cfg, store or MemoryPresenceStore(), NoPeersRelay(), Auth(cfg), ip,
                command_registry=registry)


@pytest.fixture
def node(cfg):
    return make_node(cfg)


def connect(node, **kw) -> FakeConnection:
    conn = FakeConnection(**kw)
    node.hub.add(conn)
    return conn


def request(node, conn, cmd, data=None, seq="1"):
    """Dispatch one request and return its reply (the last frame sent)."""
    frame = {"seq": seq, "cmd": cmd}
    if data is not None:
        frame["data"] = data
    before = len(conn.frames)
    node.sessions.dispatch(conn, json.dumps(frame, ensure_ascii=False))
    replies = [m for m in conn.decoded()[before:] if m["seq"] == seq and m["cmd"] == cmd]
    assert len(replies) == 1, conn.decoded()[before:]
    return replies[0]


def reply(seq, cmd, code=200, data=None):
    return {"seq": seq, "cmd": cmd,
            "response": {"code": code, "codeMsg": Code(code).message, "data": data}}


def login(node, conn, user_id, app_id=101, seq="1"):
    return request(node, conn, "login",
                   {"serviceToken": "", "appID": app_id, "userID": user_id}, seq)


# -- Hub ----------------------------------------------------------------------------------------

class TestHub:
    def test_empty(self):
        hub = Hub()
        assert (hub.connections, hub.rooms, hub.user_count) == ({}, {}, 0)
        assert hub.room_size(101) == 0
        assert hub.user_ids(101) == []
        assert hub.rooms.get(101) is None
        assert hub.user(101, "alice") is None

    def test_add_registers_the_connection(self):
        hub, conn = Hub(), FakeConnection()
        hub.add(conn)
        assert hub.connections == {conn.id: conn}
        assert hub.user_count == 0

    def test_login_binds_the_user(self):
        hub, conn = Hub(), FakeConnection()
        hub.add(conn)
        assert hub.login(conn, 101, "alice") is None
        assert (conn.app_id, conn.user_id) == (101, "alice")
        assert hub.user(101, "alice") is conn
        assert hub.room_size(101) == 1
        assert hub.user_ids(101) == ["alice"]
        assert hub.rooms[101] == {"alice": conn}
        assert hub.user_count == 1

    def test_same_user_in_other_app_is_independent(self):
        hub, a, b = Hub(), FakeConnection(), FakeConnection()
        hub.login(a, 101, "alice")
        assert hub.login(b, 102, "alice") is None
        assert (hub.user(101, "alice"), hub.user(102, "alice")) == (a, b)
        assert (hub.room_size(101), hub.room_size(102), hub.user_count) == (1, 1, 2)
        assert a.user_id == "alice"

    def test_login_again_on_the_same_connection_replaces_nothing(self):
        hub, conn = Hub(), FakeConnection()
        hub.login(conn, 101, "alice")
        assert hub.login(conn, 101, "alice") is None
        assert hub.user(101, "alice") is conn
        assert hub.room_size(101) == 1

    def test_new_login_replaces_the_old_connection(self):
        hub, old, new = Hub(), FakeConnection(), FakeConnection()
        hub.add(old)
        hub.add(new)
        hub.login(old, 101, "alice")
        assert hub.login(new, 101, "alice") is old
        assert old.user_id == ""  # no longer the user's
        assert hub.user(101, "alice") is new
        assert hub.room_size(101) == 1
        assert hub.user_ids(101) == ["alice"]

    def test_removing_the_replaced_connection_keeps_the_user(self):
        hub, old, new = Hub(), FakeConnection(), FakeConnection()
        hub.add(old)
        hub.add(new)
        hub.login(old, 101, "alice")
        hub.login(new, 101, "alice")
        assert hub.remove(old) is False
        assert hub.user(101, "alice") is new
        assert hub.connections == {new.id: new}

    def test_remove_logged_in_connection(self):
        hub, a, b = Hub(), FakeConnection(), FakeConnection()
        for c in (a, b):
            hub.add(c)
        hub.login(a, 101, "alice")
        hub.login(b, 101, "bob")
        assert hub.remove(a) is True
        assert hub.user_ids(101) == ["bob"]
        assert hub.room_size(101) == 1
        assert hub.remove(b) is True
        assert hub.room_size(101) == 0
        assert 101 not in hub.rooms  # empty rooms are dropped
        assert hub.connections == {}

    def test_remove_anonymous_connection(self):
        hub, conn = Hub(), FakeConnection()
        hub.add(conn)
        assert hub.remove(conn) is False
        assert hub.connections == {}

    def test_remove_twice(self):
        hub, conn = Hub(), FakeConnection()
        hub.add(conn)
        hub.login(conn, 101, "alice")
        assert hub.remove(conn) is True
        assert hub.remove(conn) is False

    def test_user_ids_and_room_size_per_room(self):
        hub = Hub()
        for app_id, user in [(101, "a"), (101, "b"), (101, "c"), (103, "a")]:
            conn = FakeConnection()
            hub.add(conn)
            hub.login(conn, app_id, user)
        assert sorted(hub.user_ids(101)) == ["a", "b", "c"]
        assert hub.user_ids(103) == ["a"]
        assert hub.user_ids(102) == []
        assert (hub.room_size(101), hub.room_size(102), hub.room_size(103)) == (3, 0, 1)
        assert hub.user_count == 4

    def test_user_ids_is_a_copy(self):
        hub, conn = Hub(), FakeConnection()
        hub.login(conn, 101, "alice")
        hub.user_ids(101).append("mallory")
        assert hub.user_ids(101) == ["alice"]


# -- command registry ---------------------------------------------------------------------------

def test_registry_register_adds_a_command():
    registry = CommandRegistry()
    assert registry.get("echo") is None
    assert registry.names() == []

    @registry.register("echo")
    def echo(node, conn, data):
        return Code.OK, data

    assert registry.get("echo") is echo
    assert registry.names() == ["echo"]


def test_registry_names_are_sorted_and_registration_replaces():
    registry = CommandRegistry()
    first = registry.register("b")(lambda n, c, d: (Code.OK, 1))
    registry.register("a")(lambda n, c, d: (Code.OK, 2))
    second = registry.register("b")(lambda n, c, d: (Code.OK, 3))
    assert registry.names() == ["a", "b"]
    assert registry.get("b") is second is not first


def test_default_registry_has_the_protocol_commands():
    assert {"login", "heartbeat", "ping"} <= set(default_commands.names())


def test_registries_are_independent():
    registry = CommandRegistry()
    registry.register("only-here")(lambda n, c, d: (Code.OK, None))
    assert default_commands.get("only-here") is None


# -- dispatch ------------------------------------------------------------------------------------

def test_dispatch_calls_the_handler_with_sessions_conn_and_data(cfg):
    registry = CommandRegistry()
    calls = []

    @registry.register("echo")
    def echo(node, conn, data):
        calls.append((node, conn, data))
        return Code.OK, {"got": data}

    node = make_node(cfg, registry=registry)
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"s-1","cmd":"echo","data":{"k":"值"}}')
    assert calls == [(node.sessions, conn, {"k": "值"})]
    payload = ('{"seq":"s-1","cmd":"echo","response":{"code":200,"codeMsg":"Success",'
               '"data":{"got":{"k":"值"}}}}').encode("utf-8")
    assert len(payload) == 97
    assert conn.frames == [b"\x81\x61" + payload]  # one text frame, 7-bit length 97


def test_dispatch_accepts_bytes(node):
    conn = connect(node)
    node.sessions.dispatch(conn, b'{"seq":"b","cmd":"ping"}')
    assert conn.messages() == [
        b'{"seq":"b","cmd":"ping","response":{"code":200,"codeMsg":"Success","data":"pong"}}']


def test_raising_handler_gives_1004_and_logs_a_traceback(cfg, caplog):
    registry = CommandRegistry()

    @registry.register("boom")
    def boom(node, conn, data):
        raise ZeroDivisionError("kaboom in handler")

    node = make_node(cfg, registry=registry)
    conn = connect(node)
    with caplog.at_level(logging.ERROR, logger="imserver"):
        node.sessions.dispatch(conn, '{"seq":"7","cmd":"boom","data":{}}')
    assert conn.messages() == [
        '{"seq":"7","cmd":"boom","response":{"code":1004,"codeMsg":"系统错误","data":null}}'
        .encode("utf-8")]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "imserver.node"
    assert "'boom'" in errors[0].getMessage()
    assert errors[0].exc_info[0] is ZeroDivisionError
    assert "Traceback (most recent call last)" in caplog.text
    assert "ZeroDivisionError: kaboom in handler" in caplog.text
    assert conn.closes == []  # the connection lives on


def test_connection_keeps_working_after_a_failing_handler(cfg):
    registry = CommandRegistry()
    registry.register("boom")(lambda n, c, d: 1 / 0)
    registry.register("ok")(lambda n, c, d: (Code.OK, "fine"))
    node = make_node(cfg, registry=registry)
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"1","cmd":"boom"}')
    node.sessions.dispatch(conn, '{"seq":"2","cmd":"ok"}')
    assert conn.decoded() == [reply("1", "boom", 1004), reply("2", "ok", 200, "fine")]


def test_handler_returning_unencodable_data_gives_1004(cfg):
    # A bug in one command must not end the connection: the reply is built under the
    # same guard as the handler call.
    registry = CommandRegistry()
    registry.register("bad")(lambda n, c, d: (Code.OK, object()))
    node = make_node(cfg, registry=registry)
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"1","cmd":"bad"}')
    assert conn.decoded() == [reply("1", "bad", 1004)]


def test_unknown_command_is_1010(cfg):
    node = make_node(cfg, registry=CommandRegistry())
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"9","cmd":"ping"}')
    assert conn.messages() == [
        '{"seq":"9","cmd":"ping","response":{"code":1010,"codeMsg":"路由不存在","data":null}}'
        .encode("utf-8")]


@pytest.mark.parametrize("payload,seq,cmd", [
    ("not json", "", ""),
    ("[1,2]", "", ""),
    ('{"seq":1,"cmd":"ping"}', "", "ping"),
    ('{"seq":"x","cmd":5}', "x", ""),
    ("[" * 100000, "", ""),
])
def test_bad_request_frame_is_a_1001_reply(node, payload, seq, cmd):
    conn = connect(node)
    node.sessions.dispatch(conn, payload)
    assert conn.decoded() == [reply(seq, cmd, 1001)]


def test_request_without_cmd_is_1010(node):
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"x"}')
    assert conn.decoded() == [reply("x", "", 1010)]


def test_request_with_a_lone_surrogate_is_answered(node):
    # '\ud800' is a JSON escape that decodes to a str UTF-8 cannot carry; the node must
    # still answer in the envelope instead of raising out of its reader loop.
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"\\ud800","cmd":"ping"}')
    assert len(conn.frames) == 1
    answer = json.loads(conn.messages()[0].decode("utf-8"))
    assert answer["response"]["code"] in (200, 1001)


# -- login, heartbeat, ping through dispatch ------------------------------------------------------

def test_ping_is_pong_and_not_a_heartbeat(node):
    conn = connect(node, heartbeat_time=1000.0)
    assert request(node, conn, "ping", {"anything": 1}) == reply("1", "ping", 200, "pong")
    assert conn.heartbeat_time == 1000.0


def test_login_success(node):
    conn = connect(node)
    before = time.time()
    assert login(node, conn, "alice") == reply("1", "login")
    assert (conn.app_id, conn.user_id) == (101, "alice")
    assert node.hub.user(101, "alice") is conn
    assert before <= conn.login_time == conn.heartbeat_time <= time.time()
    rec = node.store.get_user(101, "alice")
    assert rec == {"accIp": "10.0.0.7", "accPort": "9001", "appID": 101, "userID": "alice",
                   "clientIp": "192.168.1.20", "clientPort": "53000",
                   "loginTime": int(conn.login_time), "heartbeatTime": int(conn.login_time),
                   "logOutTime": 0, "qua": "", "deviceInfo": "", "isLogoff": False}


def test_login_keys_match_without_regard_to_case(node):
    conn = connect(node)
    assert request(node, conn, "login", {"userid": "bob", "APPID": 102}) == reply("1", "login")
    assert node.hub.user(102, "bob") is conn


def test_login_app_id_as_digit_string(node):
    conn = connect(node)
    assert request(node, conn, "login", {"userId": "bob", "appId": "103"}) == reply("1", "login")
    assert node.hub.user(103, "bob") is conn


@pytest.mark.parametrize("data,code", [
    ("not an object", 1001),
    ([1], 1001),
    ({"userID": 5, "appID": 101}, 1001),
    ({"userID": "a", "appID": "x"}, 1001),
    ({"userID": "a", "appID": True}, 1001),
    ({"userID": "", "appID": 101}, 1002),
    ({"appID": 101}, 1002),
    ({"userID": "x" * 65, "appID": 101}, 1002),
    ({"userID": "a", "appID": 999}, 1003),
    ({"userID": "a"}, 1003),
    ({"userID": "", "appID": 999}, 1002),  # the userID check comes first
])
def test_login_checks(node, data, code):
    conn = connect(node)
    assert request(node, conn, "login", data) == reply("1", "login", code)
    assert conn.user_id == ""
    assert node.hub.user_count == 0


def test_login_without_data_is_1001(node):
    conn = connect(node)
    assert request(node, conn, "login") == reply("1", "login", 1001)


def test_user_id_limit_is_in_characters(node):
    conn = connect(node)
    assert login(node, conn, "张" * 64) == reply("1", "login")


def test_user_id_with_a_lone_surrogate_is_invalid(node):
    conn = connect(node)
    node.sessions.dispatch(conn, '{"seq":"1","cmd":"login","data":{"userID":"a\\ud800","appID":101}}')
    assert conn.decoded() == [reply("1", "login", 1002)]
    assert node.hub.user_count == 0


def test_second_login_on_a_connection_is_1009(node):
    conn = connect(node)
    login(node, conn, "alice")
    assert login(node, conn, "bob", seq="2") == reply("2", "login", 1009)
    assert login(node, conn, "alice", seq="3") == reply("3", "login", 1009)
    assert node.hub.user_ids(101) == ["alice"]


def test_login_on_a_closing_connection_is_1009(node):
    conn = connect(node)
    conn.closing = True
    conn.send = lambda frame: conn.frames.append(frame) or True  # still record the reply
    assert login(node, conn, "alice") == reply("1", "login", 1009)
    assert node.hub.user_count == 0


def test_login_with_the_store_down_is_1004_and_changes_nothing(cfg):
    node = make_node(cfg, store=FailingStore())
    watcher = connect(node)
    node.hub.login(watcher, 101, "watcher")
    conn = connect(node)
    assert login(node, conn, "alice") == reply("1", "login", 1004)
    assert (conn.app_id, conn.user_id) == (0, "")
    assert node.hub.user(101, "alice") is None
    assert watcher.frames == []  # no enter event


def test_login_announces_enter_to_the_room_only(node):
    bob, carol, other_room = connect(node), connect(node), connect(node)
    login(node, bob, "bob")
    login(node, other_room, "dave", app_id=102)
    bob.frames.clear()
    other_room.frames.clear()
    login(node, carol, "carol")
    pushes = bob.decoded()
    assert len(pushes) == 1
    assert pushes[0]["cmd"] == "enter"
    assert pushes[0]["response"] == {"code": 200, "codeMsg": "Ok", "data": {
        "target": "", "type": "text", "msg": "哈喽~", "from": "carol", "room": ""}}
    assert isinstance(pushes[0]["seq"], str) and pushes[0]["seq"]
    assert carol.decoded() == [reply("1", "login")]  # no enter for oneself
    assert other_room.frames == []


def test_presence_max_room_zero_turns_enter_off(cfg):
    cfg = dict(cfg, **{"app.presenceMaxRoom": 0})
    node = make_node(cfg)
    bob, carol = connect(node), connect(node)
    login(node, bob, "bob")
    bob.frames.clear()
    login(node, carol, "carol")
    assert bob.frames == []


def test_presence_events_stop_above_presence_max_room(cfg):
    cfg = dict(cfg, **{"app.presenceMaxRoom": 2})
    node = make_node(cfg)
    a, b, c = connect(node), connect(node), connect(node)
    login(node, a, "a")
    login(node, b, "b")  # room of 2: announced
    assert [m["cmd"] for m in a.decoded()] == ["login", "enter"]
    login(node, c, "c")  # room of 3: not announced
    assert [m["cmd"] for m in a.decoded()] == ["login", "enter"]
    assert [m["cmd"] for m in b.decoded()] == ["login"]


def test_new_login_replaces_and_closes_the_old_connection_without_enter(node):
    watcher, old, new = connect(node), connect(node), connect(node)
    login(node, watcher, "watcher")
    login(node, old, "alice")
    watcher.frames.clear()
    assert login(node, new, "alice", seq="2") == reply("2", "login")
    assert old.closes == [(CLOSE_REPLACED, "logged in elsewhere")]
    assert CLOSE_REPLACED == 4000
    assert old.user_id == ""
    assert node.hub.user(101, "alice") is new
    assert watcher.frames == []  # alice never went offline: no exit, no second enter
    assert new.closes == []


def test_heartbeat_before_login_is_1000(node):
    conn = connect(node, heartbeat_time=1000.0)
    assert request(node, conn, "heartbeat", {}) == reply("1", "heartbeat", 1000)
    assert conn.heartbeat_time == 1000.0


def test_heartbeat_refreshes_connection_and_store(node):
    conn = connect(node)
    login(node, conn, "alice")
    conn.heartbeat_time = 1000.0
    before = time.time()
    assert request(node, conn, "heartbeat", {"userID": "ignored"}, seq="2") == reply(
        "2", "heartbeat")
    assert before <= conn.heartbeat_time <= time.time()
    rec = node.store.get_user(101, "alice")
    assert rec["heartbeatTime"] == int(conn.heartbeat_time)
    assert rec["userID"] == "alice"
    assert rec["isLogoff"] is False


def test_heartbeat_without_data_is_fine(node):
    conn = connect(node)
    login(node, conn, "alice")
    assert request(node, conn, "heartbeat", seq="2") == reply("2", "heartbeat")


def test_heartbeat_with_non_object_data_is_1001(node):
    conn = connect(node)
    login(node, conn, "alice")
    assert request(node, conn, "heartbeat", [1], seq="2") == reply("2", "heartbeat", 1001)


def test_heartbeat_survives_a_store_outage(cfg):
    store = MemoryPresenceStore()
    node = make_node(cfg, store=store)
    conn = connect(node)
    login(node, conn, "alice")
    store.set_user = FailingStore.set_user.__get__(store)  # the store goes down
    conn.heartbeat_time = 1000.0
    assert request(node, conn, "heartbeat", seq="2") == reply("2", "heartbeat")
    assert conn.heartbeat_time > 1000.0


# -- sweep -----------------------------------------------------------------------------------

def test_sweep_closes_only_stale_connections(node):
    now = 1_700_000_000.0
    timeout = node.cfg["app.heartbeatTimeout"]
    assert timeout == 360.0
    fresh = connect(node, heartbeat_time=now - 10)
    almost = connect(node, heartbeat_time=now - timeout + 0.5)
    stale = connect(node, heartbeat_time=now - timeout - 0.5)
    ancient = connect(node, heartbeat_time=now - 10_000)
    login(node, ancient, "alice")
    ancient.heartbeat_time = now - 10_000
    assert node.sessions.sweep(now) == 2
    assert stale.closes == [(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")]
    assert ancient.closes == [(4001, "heartbeat timeout")]
    assert fresh.closes == []
    assert almost.closes == []


def test_sweep_skips_connections_already_closing(node):
    now = 1_700_000_000.0
    closing = connect(node, heartbeat_time=now - 1000)
    closing.close(4000, "logged in elsewhere")
    assert node.sessions.sweep(now) == 0
    assert closing.closes == [(4000, "logged in elsewhere")]


def test_sweep_uses_the_configured_timeout(cfg):
    node = make_node(dict(cfg, **{"app.heartbeatTimeout": 30.0}))
    now = 1_700_000_000.0
    a = connect(node, heartbeat_time=now - 29)
    b = connect(node, heartbeat_time=now - 31)
    assert node.sessions.sweep(now) == 1
    assert (a.closes, b.closes) == ([], [(4001, "heartbeat timeout")])


def test_sweep_of_an_empty_node(node):
    assert node.sessions.sweep(time.time()) == 0


def test_presence_prunes_the_store(cfg):
    clock_now = [1_700_000_000.0]
    store = MemoryPresenceStore(clock=lambda: clock_now[0])
    node = make_node(cfg, store=store)
    store.claim_msg_id("m")
    clock_now[0] += 12 * 3600
    node.presence.prune()
    assert list(store._msg_ids) == []


# -- advertised address ----------------------------------------------------------------------------

def test_resolve_advertise_ip_returns_the_configured_value():
    assert resolve_advertise_ip("10.1.2.3") == "10.1.2.3"
    assert resolve_advertise_ip("node-a.internal") == "node-a.internal"


def test_resolve_advertise_ip_finds_an_ipv4_address():
    ip = resolve_advertise_ip("")
    assert ip
    assert isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address)
    assert ip != "0.0.0.0"


def test_node_address_is_advertised_ip_and_rpc_port(cfg):
    node = Node(cfg, MemoryPresenceStore(), NoPeersRelay(), Auth(cfg), "10.9.8.7")
    assert (node.presence.ip, node.presence.rpc_port, node.addr) == (
        "10.9.8.7", 9001, "10.9.8.7:9001")
    node = Node(cfg, MemoryPresenceStore(), NoPeersRelay(), Auth(cfg), "10.9.8.7", rpc_port=9003)
    assert node.addr == "10.9.8.7:9003"


def test_sweep_pings_quiet_connections_and_drops_silent_ones(node):
    now = 1_700_000_000.0
    interval, timeout = node.cfg["app.pingInterval"], node.cfg["app.pingTimeout"]
    talking = connect(node, heartbeat_time=now)
    talking.last_seen = now - interval + 1
    quiet = connect(node, heartbeat_time=now)
    quiet.last_seen = now - interval - 1
    silent = connect(node, heartbeat_time=now)
    silent.last_seen = now - interval - timeout - 1
    silent.pinged = True
    assert node.sessions.sweep(now) == 1
    assert (talking.pings, quiet.pings, silent.pings) == (0, 1, 0)
    assert silent.aborted and not quiet.aborted and not talking.aborted
    # A quiet connection is pinged once per silence, not at every sweep.
    assert node.sessions.sweep(now + 1) == 0
    assert quiet.pings == 1


def test_rate_limit_is_a_token_bucket(node):
    conn = connect(node)
    now = 1_700_000_000.0
    conn.tokens, conn.tokens_time = float(node.sessions.rate_burst), now
    allowed = [node.sessions.allow_message(conn, now) for _ in range(node.sessions.rate_burst + 3)]
    assert allowed == [True] * node.sessions.rate_burst + [False] * 3
    assert conn.strikes == 3
    # Refilled at app.rateLimit tokens a second.
    assert node.sessions.allow_message(conn, now + 1.0 / node.sessions.rate_limit + 1e-6) is True
    assert conn.strikes == 0


class FlakyStore(MemoryPresenceStore):
    """A memory store that fails every call while ``down`` (fault injection)."""

    down = False

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if (name in ("set_user", "set_users", "report_node", "get_user", "live_nodes")
                and super().__getattribute__("down")):
            def fail(*args, **kwargs):
                raise StoreError("store down")
            return fail
        return attr


def test_logouts_missed_in_an_outage_are_written_when_the_store_is_back(cfg):
    store = FlakyStore()
    node = make_node(cfg, store=store)
    alice, bob = connect(node), connect(node)
    assert login(node, alice, "alice")["response"]["code"] == 200
    assert login(node, bob, "bob", seq="2")["response"]["code"] == 200
    node.sessions.disconnected(alice)
    store.down = True
    assert node.presence.flush_records() is False  # kept, not lost
    store.down = False
    assert store.get_user(101, "alice")["isLogoff"] is False
    assert node.presence.flush_records() is True
    assert store.get_user(101, "alice") is None  # the memory store drops logged-off users
    assert store.get_user(101, "bob")["isLogoff"] is False  # still here: untouched


def test_heartbeats_and_logouts_are_written_in_batches(cfg):
    store = FlakyStore()
    node = make_node(cfg, store=store)
    conns = [connect(node) for _ in range(3)]
    for i, conn in enumerate(conns):
        assert login(node, conn, f"u{i}", seq=str(i))["response"]["code"] == 200
    written = []
    store.set_users = lambda records: written.append(list(records))
    later = time.time() + 5
    for conn in conns:
        node.sessions.heartbeat(conn, later)
    node.sessions.heartbeat(conns[0], later + 1)  # the newest record of a user wins
    assert node.presence.flush_records() is True
    assert len(written) == 1 and len(written[0]) == 3
    assert {r["userID"]: r["heartbeatTime"] for r in written[0]} == {
        "u0": int(later + 1), "u1": int(later), "u2": int(later)}


def test_a_user_back_before_the_store_is_not_logged_out(cfg):
    store = FlakyStore()
    node = make_node(cfg, store=store)
    first = connect(node)
    assert login(node, first, "carol")["response"]["code"] == 200
    node.sessions.disconnected(first)
    store.down = True
    node.presence.flush_records()
    store.down = False
    again = connect(node)
    assert login(node, again, "carol", seq="2")["response"]["code"] == 200
    node.presence.flush_records()
    assert store.get_user(101, "carol")["isLogoff"] is False
