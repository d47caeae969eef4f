"""The node's parts in isolation: the message value, the close-code table, the periodic
helper, the gRPC relay's one conversion to and from protobuf, and what a node offers its
peers. Relays and connections here are fakes that record calls (fault injection)."""
import dataclasses
import logging

import gevent
import pytest

from imserver.auth import Auth
from imserver.cluster import MemoryPresenceStore, NoPeersRelay, PeerService, RelayError
from imserver.cluster.grpc_relay import (AccServerServicer, message_of, send_msg_all_request,
                                         send_msg_request)
from imserver.cluster.pb import accserver_pb2 as pb
from imserver.config import load_config
from imserver.node import Node
from imserver.node.periodic import every
from imserver.protocol import CloseCode, Disconnect, Message
from imserver.protocol.envelope import encode_push
from imserver.protocol.frames import text_frame
from test_node_unit import FakeConnection


# -- Message ---------------------------------------------------------------------------------------

def test_a_message_is_immutable():
    message = Message(101, "s-1", "msg", "hi", "alice")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"


def test_a_message_frame_is_the_push_frame_encoded_once():
    message = Message(101, "s-1", "msg", "héllo", "alice", msg_id="m-1", time=1.5)
    frame = message.frame
    assert frame == text_frame(encode_push("s-1", "msg", "héllo", "alice", "text", "",
                                           {"room": "", "msgID": "m-1", "time": 1500}))
    assert message.frame is frame  # cached, not encoded again


def test_messages_compare_by_value_not_by_their_cached_frame():
    a, b = Message(101, "1", "msg", "x"), Message(101, "1", "msg", "x")
    a.frame
    assert a == b and a != Message(102, "1", "msg", "x")


# -- close codes -----------------------------------------------------------------------------------

def test_the_node_uses_exactly_the_documented_close_codes():
    assert {int(c) for c in CloseCode} == {1000, 1001, 1002, 1007, 1008, 1009, 4000, 4001}


@pytest.mark.parametrize("disconnect,code,drop", [
    (Disconnect.SHUTDOWN, 1001, None),
    (Disconnect.PROTOCOL_ERROR, 1002, "protocol_error"),
    (Disconnect.INVALID_UTF8, 1007, "invalid_utf8"),
    (Disconnect.RATE_LIMITED, 1008, "rate_limit"),
    (Disconnect.MESSAGE_TOO_BIG, 1009, "message_too_big"),
    (Disconnect.REPLACED, 4000, "replaced"),
    (Disconnect.HEARTBEAT_TIMEOUT, 4001, "heartbeat_timeout"),
])
def test_each_failure_maps_to_one_close_code_and_drop_label(disconnect, code, drop):
    assert (int(disconnect.code), disconnect.drop) == (code, drop)
    assert disconnect.reason


# -- every -----------------------------------------------------------------------------------------

def run_until(loop, done, timeout=5.0):
    """Let the ``every`` greenlet ``loop`` run until ``done()``, then kill it."""
    try:
        with gevent.Timeout(timeout):
            while not done():
                gevent.sleep(0.01)
    finally:
        loop.kill()


def test_every_runs_again_and_again_and_survives_a_failure(caplog):
    calls = []

    def work():
        calls.append(len(calls))
        if len(calls) == 2:
            raise ValueError("one bad round")

    with caplog.at_level(logging.ERROR, logger="imserver.node"):
        run_until(every(0.01, work, "test work"), lambda: len(calls) >= 4)
    assert calls[:4] == [0, 1, 2, 3]
    assert [r.getMessage() for r in caplog.records] == ["test work failed"]
    done = len(calls)
    gevent.sleep(0.05)
    assert len(calls) == done  # killed: no more rounds


def test_every_reads_a_callable_interval_before_each_wait():
    waits = []

    def interval():
        waits.append(len(waits))
        return 0.01

    run_until(every(interval, lambda: None, "test"), lambda: len(waits) >= 3)
    assert waits[:3] == [0, 1, 2]


# -- relay: protobuf in one place ------------------------------------------------------------------

def test_send_msg_round_trips_a_message():
    message = Message(101, "s-9", "msg", "hi 你好", "ops")
    request = send_msg_request("bob", message)
    assert (request.appID, request.userID, request.cms, request.sender) == (101, "bob", "msg", "ops")
    assert message_of(request) == message


def test_send_msg_all_carries_the_sender_in_user_id():
    message = Message(102, "s-1", "enter", "哈喽~", "carol")
    request = send_msg_all_request(message)
    assert (request.appID, request.userID, request.cms) == (102, "carol", "enter")
    assert message_of(request) == message


def test_a_relayed_message_without_cmd_or_type_is_a_text_msg():
    message = message_of(pb.SendMsgAllReq(seq="1", appID=101, userID="a", msg="x"))
    assert (message.cmd, message.type, message.sender) == ("msg", "text", "a")


class RecordingService(PeerService):
    def __init__(self):
        self.calls = []

    def deliver_to_user(self, user_id, message):
        self.calls.append(("user", user_id, message))
        return user_id == "here"

    def deliver_to_room(self, message):
        self.calls.append(("room", message))
        return 3

    def local_users(self, app_id):
        return ["here"] if app_id == 101 else []

    def is_local(self, app_id, user_id):
        return (app_id, user_id) == (101, "here")

    def publish_here(self, message):
        self.calls.append(("publish", message))
        return 2

    def local_room_users(self, app_id, room):
        return ["here"] if (app_id, room) == (101, "lobby") else []

    def replace_here(self, app_id, user_id, device, login_time):
        self.calls.append(("replace", app_id, user_id, device, login_time))
        return 1


def test_the_servicer_answers_from_the_peer_service_only():
    service = RecordingService()
    servicer = AccServerServicer(service)
    rsp = servicer.SendMsg(pb.SendMsgReq(seq="7", appID=101, userID="here", cms="msg",
                                         type="text", msg="hi", sender="ops"), None)
    assert (rsp.retCode, rsp.sendMsgID) == (200, "7")
    assert service.calls == [("user", "here", Message(101, "7", "msg", "hi", "ops"))]
    rsp = servicer.SendMsg(pb.SendMsgReq(seq="8", appID=101, userID="gone", msg="hi"), None)
    assert rsp.retCode == 1005
    rsp = servicer.SendMsgAll(pb.SendMsgAllReq(seq="9", appID=101, userID="ops", msg="all"), None)
    assert rsp.retCode == 200 and service.calls[-1] == ("room", Message(101, "9", "msg", "all", "ops"))
    assert list(servicer.GetUserList(pb.GetUserListReq(appID=101), None).userID) == ["here"]
    assert servicer.QueryUsersOnline(pb.QueryUsersOnlineReq(appID=101, userID="here"), None).online
    assert not servicer.QueryUsersOnline(pb.QueryUsersOnlineReq(appID=102, userID="here"),
                                         None).online
    rsp = servicer.Publish(pb.PublishReq(seq="m-1", appID=101, room="lobby", cms="msg",
                                         type="emoji", msg=":)", sender="ann", msgID="m-1",
                                         offset=7, epoch="e1", time=1500), None)
    assert (rsp.retCode, rsp.members) == (200, 2)
    assert service.calls[-1] == ("publish", Message(101, "m-1", "msg", ":)", "ann", "emoji",
                                                    room="lobby", msg_id="m-1", time=1.5,
                                                    offset=7, epoch="e1"))
    assert list(servicer.RoomUsers(pb.RoomUsersReq(appID=101, room="lobby"), None).userID) == [
        "here"]
    assert list(servicer.RoomUsers(pb.RoomUsersReq(appID=101, room="other"), None).userID) == []
    rsp = servicer.Replace(pb.ReplaceReq(appID=101, userID="ann", deviceID="phone",
                                         loginTime=2500), None)
    assert (rsp.retCode, rsp.replaced) == (200, 1)
    assert service.calls[-1] == ("replace", 101, "ann", "phone", 2.5)


# -- delivery --------------------------------------------------------------------------------------

class RecordingRelay(NoPeersRelay):
    def __init__(self):
        self.broadcasts = []

    def broadcast(self, peers, message, timeout=None):
        self.broadcasts.append((list(peers), message))
        return [RelayError(peers[-1], "no answer")] if len(peers) > 1 else []


@pytest.fixture
def cluster_node():
    cfg = load_config("/dev/null", env={})
    store = MemoryPresenceStore()
    relay = RecordingRelay()
    node = Node(cfg, store, relay, Auth(cfg), "10.0.0.7")
    return node, store, relay


def test_a_room_message_is_one_value_here_and_to_the_peers(cluster_node):
    node, store, relay = cluster_node
    store.report_node("10.0.0.8:9001")
    bob, carol = FakeConnection(), FakeConnection()
    for conn, user in ((bob, "bob"), (carol, "carol")):
        node.hub.add(conn)
        node.hub.login(conn, 101, user)
    message = Message(101, "s-1", "msg", "hi all", "bob")
    assert node.delivery.push_to_room(message) == []
    assert bob.frames == [] and carol.frames == [message.frame]
    assert carol.frames[0] is message.frame  # the same bytes, not re-encoded
    assert relay.broadcasts == [(["10.0.0.8:9001"], message)]


def test_a_peer_that_does_not_answer_is_named_in_the_answer(cluster_node):
    node, store, relay = cluster_node
    store.report_node("10.0.0.8:9001")
    store.report_node("10.0.0.9:9001")
    missed = node.delivery.push_to_room(Message(101, "s-2", "msg", "hi", "ops"))
    assert missed == ["10.0.0.9:9001"]


def test_the_node_offers_its_peers_its_delivery(cluster_node):
    node, _, _ = cluster_node
    conn = FakeConnection()
    node.hub.add(conn)
    node.hub.login(conn, 101, "alice")
    assert isinstance(node.delivery, PeerService)
    assert node.delivery.is_local(101, "alice") and not node.delivery.is_local(102, "alice")
    assert node.delivery.local_users(101) == ["alice"]
    assert node.delivery.deliver_to_user("alice", Message(101, "1", "msg", "psst", "ops"))
    assert not node.delivery.deliver_to_user("nobody", Message(101, "2", "msg", "psst"))
    assert conn.decoded()[0]["response"]["data"]["msg"] == "psst"


# -- throttled log lines ---------------------------------------------------------------------------

def test_a_throttled_log_writes_one_line_per_interval_with_the_count(caplog):
    from imserver.throttle import ThrottledLog
    now = [100.0]
    line = ThrottledLog(logging.getLogger("imserver.test"), logging.WARNING, "refused %s",
                        every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="imserver.test"):
        assert line("a") is True
        assert [line("b") for _ in range(5)] == [False] * 5
        now[0] += 10.0
        assert line("c") is True
    assert [r.getMessage() for r in caplog.records] == [
        "refused a", "refused c (5 more like it in the last 10s)"]


class FlakyPublishRelay(RecordingRelay):
    """Publish: the first call to each peer is not answered (a slow peer), later ones are."""

    def __init__(self):
        super().__init__()
        self.publishes = []

    def publish(self, peers, message, timeout=None):
        self.publishes.append((list(peers), message))
        first = len(self.publishes) == 1
        failures = [RelayError(p, f"{p} Publish: DEADLINE_EXCEEDED") for p in peers] if first else []
        return ({} if first else {p: 1 for p in peers}), failures


def test_a_stored_message_a_peer_did_not_take_is_offered_once_more(monkeypatch):
    import gevent
    from imserver.node import delivery
    monkeypatch.setattr(delivery, "RELAY_RETRY_AFTER", 0.05)
    cfg = load_config("/dev/null", env={})
    store, relay = MemoryPresenceStore(), FlakyPublishRelay()
    node = Node(cfg, store, relay, Auth(cfg), "10.0.0.7")
    store.report_node("10.0.0.8:9001")
    stored = node.history.append(Message(101, "s-3", "msg", "kept", "ops"))
    assert stored.offset == 1
    assert node.delivery.push_to_room(stored) == ["10.0.0.8:9001"]
    gevent.sleep(0.2)
    assert relay.publishes == [(["10.0.0.8:9001"], stored)] * 2
    # a message that was not stored is not offered again (nothing to tell a repeat by)
    relay.publishes.clear()  # its first call is not answered
    unstored = Message(101, "s-4", "msg", "live", "ops", room="lobby")
    assert node.delivery.push_to_room(unstored) == ["10.0.0.8:9001"]
    gevent.sleep(0.2)
    assert relay.publishes == [(["10.0.0.8:9001"], unstored)]
