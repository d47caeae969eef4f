"""Devices, private messages and the inbox over a real cluster: two nodes (A and B) on one
real redis-server. A user's devices live side by side on both nodes, a login of the same
device on the other node replaces the older one (4000, no ``exit``), a device that was away
gets what it missed from its last ``ack`` on whichever node it comes back to, a node that
dies keeps nothing from the inbox, and a Redis outage refuses private messages (1004)
instead of losing them (PROTOCOL.md, "Devices, private messages and the inbox")."""
import time

import gevent
import pytest

from support import Clients, unique_id, wait_until

APP = 101
FAST = 5.0  # seconds: a send to a dead node or without the store must answer within this


@pytest.fixture
def connect():
    with Clients() as clients:
        yield lambda node: clients(node, timeout=5)


@pytest.fixture
def cluster(start_cluster_node, redis_server):
    """Nodes A and B on one redis-server, each registered and seeing the other."""
    a = start_cluster_node(name="a")
    b = start_cluster_node(name="b")
    redis = redis_server.client()
    wait_until(lambda: {field(a), field(b)} <= set(redis.hkeys("acc:hash:servers")),
               timeout=10, what="both nodes registered")
    return a, b, redis


def field(node) -> str:
    return f"127.0.0.1:{node.rpc_port}"


def user_nodes(redis, user, app=APP) -> "set[str]":
    """The nodes acc:user:nodes:{<appID>_<userID>} lists for the user."""
    return set(redis.hkeys(f"acc:user:nodes:{{{app}_{user}}}"))


def login(connect, node, user, device=None, app=APP):
    """A connection of ``user`` on ``node`` (with ``device`` when given): (client, reply
    data)."""
    client = connect(node)
    data = {"userID": user, "appID": app}
    if device is not None:
        data["deviceID"] = device
    answer = client.request("login", data)
    assert answer["response"]["code"] == 200, answer
    return client, answer["response"]["data"]


def send(client, to, text, msg_id=None) -> dict:
    """A ``send`` that must be answered 200: its reply data."""
    data = {"to": to, "msg": text}
    if msg_id is not None:
        data["msgID"] = msg_id
    answer = client.request("send", data)
    assert answer["response"]["code"] == 200, answer
    return answer["response"]["data"]


def next_msg(client, timeout=5) -> dict:
    """The data of the next pushed ``msg``."""
    return client.push("msg", timeout=timeout)["response"]["data"]


def msgs(frames) -> "list[dict]":
    return [f["response"]["data"] for f in frames if f.get("cmd") == "msg"]


def online(node, user, app=APP) -> bool:
    answer = node.get("/user/online", appID=app, userID=user)
    assert answer["code"] == 200, answer
    return answer["data"]["online"]


def listed(node, app=APP) -> "list[str]":
    answer = node.get("/user/list", appID=app)
    assert answer["code"] == 200, answer
    assert "unreachableNodes" not in answer["data"], answer
    return answer["data"]["userList"]


def timed(fn, *args, **kwargs):
    started = time.monotonic()
    answer = fn(*args, **kwargs)
    took = time.monotonic() - started
    assert took < FAST, f"{fn.__name__}{args} took {took:.2f}s: {answer}"
    return answer


def check_private(data, msg_id, text, sender, receiver, offset=None, epoch=None):
    """A pushed private message: its keys and values, at its place in an inbox."""
    assert data["msgID"] == msg_id, data
    assert data["msg"] == text and data["from"] == sender and data["target"] == receiver, data
    assert data["room"] == "" and data["type"] == "text", data
    assert isinstance(data["offset"], int) and data["offset"] > 0, data
    assert isinstance(data["epoch"], str) and data["epoch"], data
    if offset is not None:
        assert data["offset"] == offset, data
    if epoch is not None:
        assert data["epoch"] == epoch, data


# -- 1. one user, a device on each node ---------------------------------------------------------

def test_devices_on_two_nodes_live_side_by_side_and_both_get_private_messages(cluster, connect):
    a, b, redis = cluster
    user, sender = unique_id("x"), unique_id("s")
    phone, phone_inbox = login(connect, a, user, "phone")
    laptop, laptop_inbox = login(connect, b, user, "laptop")
    assert phone_inbox == {"inbox": {"epoch": phone_inbox["inbox"]["epoch"], "offset": 0,
                                      "unacked": 0}}, phone_inbox
    assert laptop_inbox == phone_inbox, (phone_inbox, laptop_inbox)  # one inbox, one epoch
    epoch = phone_inbox["inbox"]["epoch"]
    assert user_nodes(redis, user) == {field(a), field(b)}

    # online on both nodes, listed once by either
    for node in (a, b):
        assert online(node, user) is True
        assert listed(node).count(user) == 1, listed(node)

    # the sender has a device on each node as well
    desk, desk_inbox = login(connect, a, sender, "desk")
    mobile, _ = login(connect, b, sender, "mobile")
    sender_epoch = desk_inbox["inbox"]["epoch"]

    offset = 0
    for origin, other, where in ((desk, mobile, "A"), (mobile, desk, "B")):
        offset += 1
        msg_id, text = unique_id("m"), f"hello from {where} 你好"
        answer = send(origin, user, text, msg_id)
        assert answer == {"msgID": msg_id, "offset": offset, "epoch": sender_epoch,
                          "delivered": True}, answer
        # both devices of the receiver: the same message at the same place of its inbox
        for device in (phone, laptop):
            check_private(next_msg(device), msg_id, text, sender, user, offset, epoch)
        # the sender's other device: the copy at its place in the sender's inbox
        check_private(next_msg(other), msg_id, text, sender, user, offset, sender_epoch)
        # and the sending connection gets nothing
        assert msgs(origin.flush()) == []

    # a push from the back end, through either node, reaches both devices too
    for node in (a, b):
        offset += 1
        msg_id = unique_id("h")
        answer = node.post("/user/sendMessage", appID=APP, userID=user, msgID=msg_id,
                           message="from the back end", **{"from": "ops"})
        assert answer["code"] == 200, answer
        assert answer["data"] == {"sendResults": True, "stored": True, "offset": offset,
                                  "epoch": epoch}, answer
        for device in (phone, laptop):
            check_private(next_msg(device), msg_id, "from the back end", "ops", user,
                          offset, epoch)

    # nothing else reached anyone, and both devices are still connected
    for client in (phone, laptop, desk, mobile):
        assert msgs(client.flush()) == []
    assert user_nodes(redis, user) == {field(a), field(b)}

    # the laptop leaves: the user stays online through the phone on A, reached from B
    laptop.close()
    wait_until(lambda: user_nodes(redis, user) == {field(a)}, timeout=5,
               what="only node A holds the user")
    for node in (a, b):
        assert online(node, user) is True
        assert listed(node).count(user) == 1, listed(node)
    offset += 1
    msg_id = unique_id("m")
    answer = send(mobile, user, "still there", msg_id)
    assert answer["delivered"] is True, answer
    check_private(next_msg(phone), msg_id, "still there", sender, user, offset, epoch)


def test_concurrent_senders_on_both_nodes_reach_every_device_in_offset_order(
        cluster, connect):
    """Messages stored by two nodes at once may cross on their way: every device gets each
    offset once, in order."""
    a, b, _ = cluster
    user = unique_id("x")
    phone, reply = login(connect, a, user, "phone")
    laptop, _ = login(connect, b, user, "laptop")
    senders = [login(connect, node, unique_id("s"))[0] for node in (a, b, a, b)]
    per_sender = 10

    def burst(client, i):
        for n in range(per_sender):
            send(client, user, f"{i}-{n}")

    gevent.joinall([gevent.spawn(burst, c, i) for i, c in enumerate(senders)], raise_error=True)
    total = per_sender * len(senders)
    for device in (phone, laptop):
        got = [next_msg(device) for _ in range(total)]
        assert [m["offset"] for m in got] == list(range(1, total + 1)), got
        assert {m["epoch"] for m in got} == {reply["inbox"]["epoch"]}
        # each sender's messages in the order it sent them
        for i in range(len(senders)):
            assert [m["msg"] for m in got if m["msg"].startswith(f"{i}-")] == [
                f"{i}-{n}" for n in range(per_sender)]
        assert msgs(device.flush()) == []


# -- 2. a device logs in again on the other node -----------------------------------------------

@pytest.mark.parametrize("device", ["phone", None], ids=["deviceID", "no-deviceID"])
def test_a_login_of_the_same_device_on_the_other_node_replaces_the_older_one(
        cluster, connect, device):
    a, b, redis = cluster
    user = unique_id("x")
    watch_a, _ = login(connect, a, unique_id("watch"))
    watch_b, _ = login(connect, b, unique_id("watch"))
    old, _ = login(connect, a, user, device)

    new, _ = login(connect, b, user, device)
    code, _ = old.wait_closed(timeout=5)
    assert code == 4000
    # node A takes itself out of the user's nodes; B stays
    wait_until(lambda: user_nodes(redis, user) == {field(b)}, timeout=5,
               what="only node B holds the user")
    # and writes no record of a user without a userID
    assert redis.keys(f"acc:user:*{APP}_") == [] and redis.keys("acc:user:nodes:{*_}") == []

    # still online everywhere, listed once
    for node in (a, b):
        assert online(node, user) is True
        assert listed(node).count(user) == 1, listed(node)
    # the observers saw no exit of the user: a room message from each node comes after
    # anything the replacement could have sent them
    for node in (a, b):
        answer = node.post("/user/sendMessageAll", appID=APP, userID=unique_id("ops"),
                           msgID=unique_id("all"), message="marker")
        assert answer["code"] == 200, answer
    for watcher in (watch_a, watch_b, new):
        for _ in range(2):
            assert next_msg(watcher)["msg"] == "marker"
        seen = watcher.pushes + watcher.flush()
        exits = [f for f in seen if f.get("cmd") == "exit"
                 and f["response"]["data"]["from"] == user]
        assert exits == [], seen

    # the new connection is the user's: a private message through A reaches it on B
    msg_id = unique_id("h")
    answer = a.post("/user/sendMessage", appID=APP, userID=user, msgID=msg_id, message="hi")
    assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
    got = next_msg(new)
    assert got["msgID"] == msg_id and got["target"] == user, got
    assert new.request("heartbeat", {})["response"]["code"] == 200
    if device:
        assert new.request("ack", {"offset": got["offset"]})["response"]["code"] == 200

    # and back to A: the login there takes the device from B in turn (and its cursor:
    # nothing unacknowledged)
    again, reply = login(connect, a, user, device)
    if device:
        assert reply["inbox"]["unacked"] == 0 and reply["inbox"]["offset"] == 1, reply
    else:
        assert reply is None
    assert new.wait_closed(timeout=5)[0] == 4000
    wait_until(lambda: user_nodes(redis, user) == {field(a)}, timeout=5,
               what="only node A holds the user")
    for node in (a, b):
        assert online(node, user) is True
    msg_id = unique_id("h")
    answer = b.post("/user/sendMessage", appID=APP, userID=user, msgID=msg_id, message="hi")
    assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
    assert next_msg(again)["msgID"] == msg_id
    for watcher in (watch_a, watch_b):
        seen = watcher.pushes + watcher.flush()
        assert [f for f in seen if f.get("cmd") == "exit"] == [], seen


def test_other_devices_of_the_user_stay_when_one_device_is_replaced(cluster, connect):
    a, b, redis = cluster
    user = unique_id("x")
    laptop, _ = login(connect, a, user, "laptop")
    old_phone, _ = login(connect, a, user, "phone")
    new_phone, _ = login(connect, b, user, "phone")
    assert old_phone.wait_closed(timeout=5)[0] == 4000
    # the laptop stays on A, so A still holds the user
    assert user_nodes(redis, user) == {field(a), field(b)}
    msg_id = unique_id("h")
    answer = b.post("/user/sendMessage", appID=APP, userID=user, msgID=msg_id, message="hi")
    assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
    for client in (laptop, new_phone):
        assert next_msg(client)["msgID"] == msg_id
        assert msgs(client.flush()) == []


# -- 3. a device that was away gets what it missed, on either node -----------------------------

@pytest.mark.parametrize("back_on", ["a", "b"])
def test_a_device_back_on_any_node_gets_exactly_what_it_missed(cluster, connect, back_on):
    a, b, redis = cluster
    user, sender = unique_id("x"), unique_id("s")
    phone, reply = login(connect, a, user, "phone")
    epoch = reply["inbox"]["epoch"]
    other, _ = login(connect, b, sender, "desk")

    sent = []  # (msgID, text, from) in inbox order
    for i in range(3):
        msg_id = unique_id("m")
        assert send(other, user, f"live {i}", msg_id)["delivered"] is True
        check_private(next_msg(phone), msg_id, f"live {i}", sender, user, i + 1, epoch)
        sent.append((msg_id, f"live {i}", sender))
    assert phone.request("ack", {"offset": 2})["response"]["code"] == 200
    phone.close()
    wait_until(lambda: not user_nodes(redis, user), timeout=5, what="the user has no node")
    assert online(b, user) is False

    # meanwhile, through node B: a send of another user and pushes of the back end
    for i in range(2):
        msg_id = unique_id("m")
        answer = send(other, user, f"missed {i}", msg_id)
        assert answer["delivered"] is False, answer
        sent.append((msg_id, f"missed {i}", sender))
        msg_id = unique_id("h")
        answer = b.post("/user/sendMessage", appID=APP, userID=user, msgID=msg_id,
                        message=f"backend {i}", **{"from": "ops"})
        assert answer["code"] == 200, answer
        assert answer["data"] == {
            "sendResults": False, "stored": True, "offset": len(sent) + 1, "epoch": epoch,
            "sendResultsErr": "user is not online: the message waits in the inbox"}, answer
        sent.append((msg_id, f"backend {i}", "ops"))

    node = a if back_on == "a" else b
    phone, reply = login(connect, node, user, "phone")
    top = len(sent)
    assert reply == {"inbox": {"epoch": epoch, "offset": top, "unacked": top - 2}}, reply
    got = msgs(phone.flush())
    assert [m["offset"] for m in got] == list(range(3, top + 1)), got
    for m, (msg_id, text, frm) in zip(got, sent[2:]):
        check_private(m, msg_id, text, frm, user, epoch=epoch)

    # then live ones, at the next offset, once
    msg_id = unique_id("m")
    assert send(other, user, "live again", msg_id)["delivered"] is True
    check_private(next_msg(phone), msg_id, "live again", sender, user, top + 1, epoch)
    sent.append((msg_id, "live again", sender))
    assert msgs(phone.flush()) == []

    # a device never seen before gets everything kept, oldest first
    tablet, reply = login(connect, b if back_on == "a" else a, user, "tablet")
    assert reply == {"inbox": {"epoch": epoch, "offset": len(sent), "unacked": len(sent)}}
    got = msgs(tablet.flush())
    assert [m["offset"] for m in got] == list(range(1, len(sent) + 1)), got
    for m, (msg_id, text, frm) in zip(got, sent):
        check_private(m, msg_id, text, frm, user, epoch=epoch)
    assert msgs(phone.flush()) == []


def test_a_device_back_beside_another_device_gets_what_it_missed_and_what_was_sent(
        cluster, connect):
    """The inbox holds the user's conversation: a device that was away gets the messages
    the user received and those the user sent from another device meanwhile, also on a
    node where another device of the user stayed connected all along."""
    a, b, redis = cluster
    user, peer = unique_id("x"), unique_id("p")
    phone, reply = login(connect, a, user, "phone")
    epoch = reply["inbox"]["epoch"]
    laptop, _ = login(connect, a, user, "laptop")
    friend, _ = login(connect, b, peer, "desk")

    msg_id = unique_id("m")
    send(friend, user, "before", msg_id)
    for device in (phone, laptop):
        check_private(next_msg(device), msg_id, "before", peer, user, 1, epoch)
    assert phone.request("ack", {"offset": 1})["response"]["code"] == 200
    phone.close()

    expected = []
    for i in range(2):
        msg_id = unique_id("m")
        answer = send(friend, user, f"in {i}", msg_id)
        assert answer["delivered"] is True, answer  # the laptop got it
        check_private(next_msg(laptop), msg_id, f"in {i}", peer, user, len(expected) + 2)
        expected.append((msg_id, f"in {i}", peer, user))
        msg_id = unique_id("m")
        answer = send(laptop, peer, f"out {i}", msg_id)
        assert answer["delivered"] is True and answer["offset"] == len(expected) + 2, answer
        check_private(next_msg(friend), msg_id, f"out {i}", user, peer)
        expected.append((msg_id, f"out {i}", user, peer))

    phone, reply = login(connect, a, user, "phone")
    assert reply == {"inbox": {"epoch": epoch, "offset": 5, "unacked": 4}}, reply
    got = msgs(phone.flush())
    assert [m["offset"] for m in got] == [2, 3, 4, 5], got
    for m, (mid, text, frm, to) in zip(got, expected):
        check_private(m, mid, text, frm, to, epoch=epoch)
    # live again, on both devices, once
    msg_id = unique_id("m")
    send(friend, user, "after", msg_id)
    for device in (phone, laptop):
        check_private(next_msg(device), msg_id, "after", peer, user, 6, epoch)
        assert msgs(device.flush()) == []
    # the user's own history of the inbox lists the conversation
    answer = phone.request("history", {"inbox": True})
    assert answer["response"]["code"] == 200, answer
    page = answer["response"]["data"]
    assert page["inbox"] is True and page["epoch"] == epoch and page["offset"] == 6, page
    assert [p["offset"] for p in page["publications"]] == [1, 2, 3, 4, 5, 6], page


# -- 4. the node of a device dies --------------------------------------------------------------

def test_a_message_to_a_device_on_a_killed_node_waits_for_its_next_login(
        start_cluster_node, redis_server, connect):
    a = start_cluster_node(name="a")
    b = start_cluster_node(name="b")
    redis = redis_server.client()
    wait_until(lambda: {field(a), field(b)} <= set(redis.hkeys("acc:hash:servers")),
               timeout=10, what="both nodes registered")
    user, sender = unique_id("x"), unique_id("s")
    phone, reply = login(connect, a, user, "phone")
    epoch = reply["inbox"]["epoch"]
    other, _ = login(connect, b, sender, "desk")
    assert user_nodes(redis, user) == {field(a)}
    # B's relay of the sender's enter has reached A (else that relay, not the send below,
    # would be the first to find A dead)
    assert phone.push("enter")["response"]["data"]["from"] == sender

    killed = a.kill()  # SIGKILL, the master first: nobody restarts its worker
    assert a.pid in killed

    # through B: stored, and the answer names the dead node
    msg_id = unique_id("h")
    answer = timed(b.post, "/user/sendMessage", appID=APP, userID=user, msgID=msg_id,
                   message="are you there?")
    assert answer["code"] == 200, answer
    data = answer["data"]
    assert data["stored"] is True and data["offset"] == 1 and data["epoch"] == epoch, data
    assert data["sendResults"] is False, data
    # the dead node is named, unless another call found it dead first and took it out
    assert data.get("unreachableNodes", [field(a)]) == [field(a)], data
    sent = [(msg_id, "are you there?", "")]
    started = time.monotonic()
    msg_id2 = unique_id("m")
    answer = send(other, user, "hello?", msg_id2)
    assert time.monotonic() - started < FAST
    assert answer["delivered"] is False, answer
    sent.append((msg_id2, "hello?", sender))
    assert online(b, user) is False

    # the device comes back on the surviving node: both are waiting for it
    phone, reply = login(connect, b, user, "phone")
    assert reply == {"inbox": {"epoch": epoch, "offset": 2, "unacked": 2}}, reply
    got = msgs(phone.flush())
    assert [m["offset"] for m in got] == [1, 2], got
    for m, (mid, text, frm) in zip(got, sent):
        check_private(m, mid, text, frm, user, epoch=epoch)
    assert online(b, user) is True
    msg_id = unique_id("m")
    assert send(other, user, "there you are", msg_id)["delivered"] is True
    check_private(next_msg(phone), msg_id, "there you are", sender, user, 3, epoch)


# -- 5. acks across reconnects and nodes -------------------------------------------------------

def test_acks_hold_across_reconnects_and_nodes(cluster, connect):
    a, b, redis = cluster
    user, sender = unique_id("x"), unique_id("s")
    phone, reply = login(connect, a, user, "phone")
    epoch = reply["inbox"]["epoch"]
    other, _ = login(connect, b, sender)  # a sender without a device: live messages only
    ids = []
    for i in range(4):
        msg_id = unique_id("m")
        send(other, user, f"m{i}", msg_id)
        assert next_msg(phone)["offset"] == i + 1
        ids.append(msg_id)

    # an ack above the top is refused; one on A holds on B
    answer = phone.request("ack", {"offset": 5})
    assert answer["response"]["code"] == 1001, answer
    assert phone.request("ack", {"offset": 3})["response"]["code"] == 200
    phone.close()
    phone, reply = login(connect, b, user, "phone")
    assert reply == {"inbox": {"epoch": epoch, "offset": 4, "unacked": 1}}, reply
    got = msgs(phone.flush())
    assert [(m["offset"], m["msgID"]) for m in got] == [(4, ids[3])], got

    # an ack on B, then a lower one that changes nothing; back on A: nothing unacked
    assert phone.request("ack", {"offset": 4})["response"]["code"] == 200
    assert phone.request("ack", {"offset": 1})["response"]["code"] == 200
    phone.close()
    phone, reply = login(connect, a, user, "phone")
    assert reply == {"inbox": {"epoch": epoch, "offset": 4, "unacked": 0}}, reply
    assert msgs(phone.flush()) == []

    # a live message on A; ack it there, and the next login on B finds nothing either
    msg_id = unique_id("m")
    send(other, user, "m4", msg_id)
    check_private(next_msg(phone), msg_id, "m4", sender, user, 5, epoch)
    assert phone.request("ack", {"offset": 5})["response"]["code"] == 200
    phone.close()
    phone, reply = login(connect, b, user, "phone")
    assert reply == {"inbox": {"epoch": epoch, "offset": 5, "unacked": 0}}, reply
    assert msgs(phone.flush()) == []

    # the acks were the phone's: another device of the user still has everything
    laptop, reply = login(connect, a, user, "laptop")
    assert reply == {"inbox": {"epoch": epoch, "offset": 5, "unacked": 5}}, reply
    assert [m["offset"] for m in msgs(laptop.flush())] == [1, 2, 3, 4, 5]
    # and a login without deviceID cannot ack
    bare, reply = login(connect, b, unique_id("y"))
    assert reply is None
    answer = bare.request("ack", {"offset": 0})
    assert answer["response"]["code"] == 1001, answer


# -- 6. Redis goes away ------------------------------------------------------------------------

def test_without_redis_private_messages_are_refused_then_work_again(
        cluster, connect, redis_server):
    a, b, redis = cluster
    user, sender = unique_id("x"), unique_id("s")
    phone, reply = login(connect, a, user, "phone")
    old_epoch = reply["inbox"]["epoch"]
    other, _ = login(connect, b, sender, "desk")
    mobile, _ = login(connect, a, sender, "mobile")  # the sender's other device

    redis_server.stop()

    for msg_id in (unique_id("m"), None):
        started = time.monotonic()
        data = {"to": user, "msg": "not now"}
        if msg_id:
            data["msgID"] = msg_id
        answer = other.request("send", data)
        assert time.monotonic() - started < FAST
        assert answer["response"]["code"] == 1004, answer
        assert "store" in answer["response"]["detail"], answer
    kept_id = msg_id = unique_id("h")
    for node in (a, b):
        answer = timed(node.post, "/user/sendMessage", appID=APP, userID=user, msgID=msg_id,
                       message="not now")
        assert answer["code"] == 1004, answer
    for client in (phone, other, mobile):
        assert msgs(client.flush()) == []
    # the connections stay
    assert phone.request("heartbeat", {})["response"]["code"] == 200

    redis_server.start()
    wait_until(lambda: {field(a), field(b)} <= set(redis.hkeys("acc:hash:servers")),
               timeout=10, what="both nodes registered again")
    wait_until(lambda: user_nodes(redis, user) == {field(a)}
               and user_nodes(redis, sender) == {field(a), field(b)},
               timeout=10, what="the users' nodes written again")
    wait_until(lambda: a.state()["storeHealthy"] and b.state()["storeHealthy"], timeout=10,
               what="both stores healthy")

    # the store was restarted empty: a new inbox, a new epoch, from offset 1
    msg_id = unique_id("m")
    answer = send(other, user, "now", msg_id)
    assert answer["delivered"] is True and answer["offset"] == 1, answer
    got = next_msg(phone)
    check_private(got, msg_id, "now", sender, user, 1)
    assert got["epoch"] != old_epoch, got
    check_private(next_msg(mobile), msg_id, "now", sender, user, 1, answer["epoch"])
    # the refused push was never accepted: its msgID may be sent again, through either node
    answer = b.post("/user/sendMessage", appID=APP, userID=user, msgID=kept_id,
                    message="now too")
    assert answer["code"] == 200, answer
    assert answer["data"] == {"sendResults": True, "stored": True, "offset": 2,
                              "epoch": got["epoch"]}, answer
    check_private(next_msg(phone), kept_id, "now too", "", user, 2, got["epoch"])
    for client in (phone, other, mobile):
        assert msgs(client.flush()) == []
