"""Sessions and presence: a new login replaces the old connection, enter/exit follow
real transitions within one room, the presence bound, and the heartbeat sweep."""
import time

import gevent
import pytest

from support import Clients, compact, push, reply, unique_id, wait_until

ENTER, EXIT = "哈喽~", "用户已经离开~"


@pytest.fixture
def connect():
    with Clients() as clients:
        yield clients


def events_about(frames, user):
    """The presence events among ``frames`` whose subject is ``user`` (the shared node
    has other tests' users coming and going; only our own users count)."""
    return [f for f in frames
            if f.get("cmd") in ("enter", "exit") and f["response"]["data"]["from"] == user]


def expect_event(client, cmd, user, timeout=5):
    """The next ``cmd`` event about ``user``; its envelope must be the exact one."""
    deadline = time.time() + timeout
    while True:
        frame = client.push(cmd, timeout=max(0.01, deadline - time.time()))
        if frame["response"]["data"]["from"] == user:
            break
    assert isinstance(frame["seq"], str) and frame["seq"]
    message = ENTER if cmd == "enter" else EXIT
    # the exact text, key order included (the dict keeps the frame's order)
    assert compact(frame) == compact(push(frame["seq"], cmd, message, user))
    return frame


def user_list(node, app_id):
    return node.get("/user/list", appID=app_id)["data"]


def login(connect, node, user, app_id=101):
    client = connect(node)
    assert client.request("login", {"appID": app_id, "userID": user}, seq="in") == reply("in", "login")
    return client


# -- a new login replaces the old connection ----------------------------------------------

def test_login_elsewhere_replaces_the_old_connection_without_presence_events(node, connect):
    watcher = login(connect, node, unique_id("watch"))
    user = unique_id("moving")
    ids_before = node.connection_ids()
    a = login(connect, node, user)
    (a_id,) = node.connection_ids() - ids_before
    expect_event(watcher, "enter", user)

    b = login(connect, node, user)
    code, reason = a.wait_closed()
    assert code == 4000
    assert "elsewhere" in reason or "login" in reason
    a.close()
    wait_until(lambda: a_id not in node.connection_ids(), what="replaced connection gone")

    # the replacement is no transition: no exit, no second enter
    assert events_about(watcher.flush(), user) == []
    listed = user_list(node, 101)
    assert listed["userList"].count(user) == 1
    assert listed["userCount"] == len(listed["userList"])
    assert node.state(debug=True)["userKeys"].count(f"101_{user}") == 1

    # B is the user now: it beats, and messages to the user reach it
    assert b.request("heartbeat", seq="hb") == reply("hb", "heartbeat")
    msg_id = unique_id("m")
    answer = node.post("/user/sendMessage", appID=101, userID=user, msgID=msg_id, message="to b")
    assert answer["data"] == {"sendResults": True}
    assert b.push("msg") == push(msg_id, "msg", "to b", "")

    # B's leaving is the real transition
    b.close()
    expect_event(watcher, "exit", user)
    assert user not in user_list(node, 101)["userList"]


def test_third_login_replaces_the_second(node, connect):
    user = unique_id()
    a = login(connect, node, user)
    b = login(connect, node, user)
    assert a.wait_closed()[0] == 4000
    c = login(connect, node, user)
    assert b.wait_closed()[0] == 4000
    assert c.request("heartbeat", seq="h") == reply("h", "heartbeat")
    assert user_list(node, 101)["userList"].count(user) == 1


def test_login_in_another_room_replaces_nothing(node, connect):
    user = unique_id()
    a = login(connect, node, user, 101)
    b = login(connect, node, user, 103)
    # neither was closed (flush would raise) nor told anything about the user
    assert events_about(a.flush(), user) == [] and events_about(b.flush(), user) == []
    assert a.request("heartbeat", seq="a") == reply("a", "heartbeat")
    assert b.request("heartbeat", seq="b") == reply("b", "heartbeat")
    assert user in user_list(node, 101)["userList"] and user in user_list(node, 103)["userList"]


# -- presence ----------------------------------------------------------------------------

def test_enter_and_exit_reach_the_room_only(node, connect):
    c_user, x_user, d_user = unique_id("c"), unique_id("x"), unique_id("d")
    c = login(connect, node, c_user, 101)
    x = login(connect, node, x_user, 102)

    d = connect(node)
    d.send_json({"seq": "d-in", "cmd": "login", "data": {"appID": 101, "userID": d_user}})
    assert d.reply("d-in") == reply("d-in", "login")
    enter = expect_event(c, "enter", d_user)
    assert enter["response"]["data"] == {"target": "", "type": "text", "msg": "哈喽~",
                                         "from": d_user, "room": ""}
    assert events_about(d.flush(), d_user) == []  # not told of its own arrival

    d.close()
    exit_event = expect_event(c, "exit", d_user)
    assert exit_event["response"]["data"]["msg"] == "用户已经离开~"
    assert exit_event["seq"] != enter["seq"]
    assert events_about(x.flush(), d_user) == []  # room 102 heard nothing
    assert d_user not in user_list(node, 101)["userList"]


def test_exit_when_the_connection_drops_without_a_close_frame(node, connect):
    watcher = login(connect, node, unique_id("w"), 104)
    user = unique_id("drop")
    d = login(connect, node, user, 104)
    expect_event(watcher, "enter", user)
    d.ws.shutdown()  # the socket goes, no close handshake
    expect_event(watcher, "exit", user)
    assert node.get("/user/online", appID=104, userID=user)["data"]["online"] is False


def test_failed_logins_send_no_presence(node, connect):
    watcher = login(connect, node, unique_id("w"), 101)
    bad = unique_id("bad")
    c = connect(node)
    assert c.request("login", {"appID": 999, "userID": bad}, seq="1")["response"]["code"] == 1003
    c.close()
    assert events_about(watcher.flush(), bad) == []


def test_presence_stops_above_presence_max_room(make_node, connect):
    small = make_node({"app": {"presenceMaxRoom": 2}})
    first = login(connect, small, "first")
    second = login(connect, small, "second")
    expect_event(first, "enter", "second")  # 2 members: events flow
    third = login(connect, small, "third")
    # 3 members: the third arrival is announced to nobody
    assert events_about(first.flush(), "third") == []
    assert events_about(second.flush(), "third") == []
    assert user_list(small, 101)["userCount"] == 3
    third.close()
    wait_until(lambda: user_list(small, 101)["userCount"] == 2, what="third gone")
    first.flush()  # whether the third's exit was announced is not specified
    second.close()
    expect_event(first, "exit", "second")  # small again: events flow


def test_presence_max_room_zero_turns_events_off(make_node, connect):
    quiet = make_node({"app": {"presenceMaxRoom": 0}})
    first = login(connect, quiet, "first")
    second = login(connect, quiet, "second")
    second.close()
    wait_until(lambda: user_list(quiet, 101)["userCount"] == 1, what="second gone")
    assert first.flush() == []


# -- heartbeat sweep ---------------------------------------------------------------------

def test_heartbeat_sweep_closes_idle_connections(make_node, connect):
    swept = make_node({"app": {"heartbeatTimeout": 1, "sweepInterval": 0.2}})
    never = connect(swept)  # never logs in
    beating = login(connect, swept, "beating")
    idle = login(connect, swept, "idle")
    pinging = login(connect, swept, "pinging")  # ping is no heartbeat
    started = time.time()

    def beat():
        codes = []
        while time.time() - started < 3:
            codes.append(beating.request("heartbeat", {})["response"]["code"])
            gevent.sleep(0.3)
        return codes

    def ping():
        answers = 0
        try:
            while time.time() - started < 3:
                assert pinging.request("ping")["response"]["data"] == "pong"
                answers += 1
                gevent.sleep(0.3)
        except ConnectionError:
            return pinging.close_code
        return None

    beats, pings = gevent.spawn(beat), gevent.spawn(ping)
    assert never.wait_closed(timeout=5)[0] == 4001
    assert idle.wait_closed(timeout=5)[0] == 4001
    assert time.time() - started < 5
    assert pings.get(timeout=10) == 4001
    assert beats.get(timeout=10) and set(beats.value) == {200}
    # three seconds on, the beating connection is still served
    assert beating.request("heartbeat", seq="last") == reply("last", "heartbeat")
    expect_event(beating, "exit", "idle")
    expect_event(beating, "exit", "pinging")
    assert user_list(swept, 101) == {"userCount": 1, "userList": ["beating"]}
    wait_until(lambda: swept.state()["connections"] == 1, what="swept connections released")
    assert swept.state()["users"] == 1
