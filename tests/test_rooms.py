"""Rooms, history and recovery on one embedded node (PROTOCOL.md, "Rooms, history and
recovery"): named rooms, offsets and epochs in the pushes, recovery after a reconnect,
history pages, the HTTP routes, and every bad input's answer."""
import gevent
import pytest

from support import unique_id, wait_until


def room_name(prefix="room"):
    return unique_id(prefix)


def joined(node, user, room, **since):
    client = node.client()
    assert client.login(user)["response"]["code"] == 200
    answer = client.request("join", {"room": room, **since})["response"]
    assert answer["code"] == 200, answer
    return client


def data(frame):
    return frame["response"]["data"]


def code(frame):
    return frame["response"]["code"]


def presence(client, cmd, room):
    """The next ``cmd`` (enter, exit) of ``room``, skipping those of other rooms."""
    while True:
        frame = client.push(cmd)
        if data(frame)["room"] == room:
            return frame


def msgs(client):
    """The msg pushes that reached the client so far, in order."""
    return [data(f) for f in client.flush() if f["cmd"] == "msg"]


# -- rooms and pushes ------------------------------------------------------------------------

def test_a_published_message_reaches_the_other_members_with_its_place(node):
    room = room_name()
    ann_id = unique_id("ann")
    ann = joined(node, ann_id, room)
    bob = joined(node, unique_id("bob"), room)
    outsider = node.client()
    outsider.login(unique_id("out"))
    answer = ann.request("publish", {"room": room, "msg": "hello", "msgID": unique_id("m")})
    got = data(answer)
    assert code(answer) == 200 and got["offset"] == 1 and got["epoch"]
    push = bob.push("msg")
    assert push["seq"] == got["msgID"]
    pushed = data(push)
    assert pushed["room"] == room and pushed["msg"] == "hello" and pushed["type"] == "text"
    assert (pushed["offset"], pushed["epoch"], pushed["msgID"]) == (1, got["epoch"], got["msgID"])
    assert pushed["from"] == ann_id and isinstance(pushed["time"], int)
    assert pushed["time"] > 1_700_000_000_000  # unix milliseconds
    assert msgs(ann) == []  # the sending connection does not get its own message
    assert msgs(outsider) == []  # nor anyone outside the room


def test_offsets_arrive_in_order_without_gaps(node):
    room = room_name()
    ann = joined(node, unique_id("ann"), room)
    bob = joined(node, unique_id("bob"), room)
    for i in range(30):
        assert code(ann.request("publish", {"room": room, "msg": f"m{i}"})) == 200
    got = msgs(bob)  # each publish was answered after its delivery here
    assert [m["offset"] for m in got] == list(range(1, 31))
    assert [m["msg"] for m in got] == [f"m{i}" for i in range(30)]


def test_presence_events_carry_the_room(node):
    room = room_name()
    ann_id, bob_id = unique_id("ann"), unique_id("bob")
    ann = joined(node, ann_id, room)
    bob = joined(node, bob_id, room)
    assert data(presence(ann, "enter", room))["from"] == bob_id
    assert code(bob.request("leave", {"room": room})) == 200
    assert data(presence(ann, "exit", room))["from"] == bob_id
    assert code(bob.request("join", {"room": room})) == 200
    assert data(presence(ann, "enter", room))["from"] == bob_id
    bob.close()
    assert data(presence(ann, "exit", room))["from"] == bob_id
    assert not [f for f in bob.pushes if f["cmd"] == "enter" and data(f)["from"] == bob_id]


def test_a_left_room_sends_nothing_more(node):
    room = room_name()
    ann = joined(node, unique_id("ann"), room)
    bob = joined(node, unique_id("bob"), room)
    assert code(bob.request("leave", {"room": room})) == 200
    ann.request("publish", {"room": room, "msg": "after"})
    assert msgs(bob) == []
    publish = bob.request("publish", {"room": room, "msg": "x"})
    assert code(publish) == 1003 and "join" in publish["response"]["detail"]


def test_a_repeated_msg_id_is_stored_and_delivered_once(node):
    room = room_name()
    ann = joined(node, unique_id("ann"), room)
    bob = joined(node, unique_id("bob"), room)
    first = data(ann.request("publish", {"room": room, "msg": "once", "msgID": "dup-1"}))
    again = data(ann.request("publish", {"room": room, "msg": "once", "msgID": "dup-1"}))
    assert first["offset"] == 1 and again == {"msgID": "dup-1", "duplicate": True}
    assert [m["msg"] for m in msgs(bob)] == ["once"]
    history = data(bob.request("history", {"room": room}))
    assert [p["msgID"] for p in history["publications"]] == ["dup-1"]


def test_the_app_room_is_stored_too(make_node):
    node = make_node()
    ann, bob = node.client(), node.client()
    ann.login("ann")
    bob.login("bob")
    answer = node.post("/user/sendMessageAll", appID=101, userID="ops", message="all",
                       msgID="a-1")
    assert answer["data"]["sendResults"] is True and answer["data"]["offset"] == 1
    pushed = data(bob.push("msg"))
    assert (pushed["room"], pushed["offset"], pushed["epoch"]) == ("", 1, answer["data"]["epoch"])
    published = data(ann.request("publish", {"room": "", "msg": "from ann"}))
    assert published["offset"] == 2 and published["epoch"] == answer["data"]["epoch"]
    assert data(bob.push("msg"))["offset"] == 2
    assert [m["msg"] for m in msgs(ann)] == ["all"]  # not its own
    page = node.get("/room/history", appID=101)["data"]
    assert [p["msg"] for p in page["publications"]] == ["all", "from ann"]


# -- recovery --------------------------------------------------------------------------------

def test_join_with_since_recovers_exactly_what_was_missed(node):
    room = room_name()
    ann = joined(node, unique_id("ann"), room)
    bob_id = unique_id("bob")
    bob = joined(node, bob_id, room)
    ann.request("publish", {"room": room, "msg": "seen"})
    seen = msgs(bob)[-1]
    bob.close()
    for i in range(5):
        ann.request("publish", {"room": room, "msg": f"missed {i}"})
    back = node.client()
    back.login(bob_id)
    answer = data(back.request("join", {"room": room, "since": {
        "epoch": seen["epoch"], "offset": seen["offset"]}}))
    assert answer["recovered"] is True and answer["offset"] == seen["offset"] + 5
    assert [p["msg"] for p in answer["publications"]] == [f"missed {i}" for i in range(5)]
    assert [p["offset"] for p in answer["publications"]] == list(range(2, 7))
    assert all(p["room"] == room and p["epoch"] == seen["epoch"] for p in answer["publications"])
    ann.request("publish", {"room": room, "msg": "live"})
    assert [(m["offset"], m["msg"]) for m in msgs(back)] == [(7, "live")]


def test_join_with_since_of_another_epoch_does_not_recover(node):
    room = room_name()
    ann = joined(node, unique_id("ann"), room)
    ann.request("publish", {"room": room, "msg": "x"})
    bob = node.client()
    bob.login(unique_id("bob"))
    answer = data(bob.request("join", {"room": room, "since": {"epoch": "void", "offset": 0}}))
    assert answer["recovered"] is False and answer["publications"] == []
    assert answer["offset"] == 1 and answer["epoch"] != "void"


def test_recovery_is_all_or_nothing(make_node):
    node = make_node({"app": {"historySize": 5, "recoveryMax": 3}})
    ann = joined(node, "ann", "r")
    epoch = data(ann.request("publish", {"room": "r", "msg": "m1"}))["epoch"]
    for i in range(2, 10):
        ann.request("publish", {"room": "r", "msg": f"m{i}"})
    bob = node.client()
    bob.login("bob")
    # Offsets 2..9 are missed but only 5..9 are kept: no partial replay.
    trimmed = data(bob.request("join", {"room": "r", "since": {"epoch": epoch, "offset": 1}}))
    assert (trimmed["recovered"], trimmed["publications"], trimmed["offset"]) == (False, [], 9)
    carol = node.client()
    carol.login("carol")
    # 5 missed and all kept, but more than app.recoveryMax (3).
    too_many = data(carol.request("join", {"room": "r", "since": {"epoch": epoch, "offset": 4}}))
    assert too_many["recovered"] is False and too_many["publications"] == []
    dave = node.client()
    dave.login("dave")
    fits = data(dave.request("join", {"room": "r", "since": {"epoch": epoch, "offset": 6}}))
    assert fits["recovered"] is True
    assert [p["msg"] for p in fits["publications"]] == ["m7", "m8", "m9"]
    erin = node.client()
    erin.login("erin")
    current = data(erin.request("join", {"room": "r", "since": {"epoch": epoch, "offset": 9}}))
    assert current["recovered"] is True and current["publications"] == []


def test_a_restarted_embedded_node_gives_a_new_epoch(make_node):
    node = make_node()
    ann = joined(node, "ann", "r")
    before = data(ann.request("publish", {"room": "r", "msg": "x"}))
    node.stop()
    node.start()
    bob = node.client()
    bob.login("bob")
    answer = data(bob.request("join", {"room": "r", "since": {
        "epoch": before["epoch"], "offset": before["offset"]}}))
    assert answer["recovered"] is False and answer["epoch"] != before["epoch"]
    assert answer["offset"] == 0


def test_the_app_room_recovers_with_join_of_the_empty_room(make_node):
    node = make_node()
    bob = node.client()
    bob.login("bob")
    first = node.post("/user/sendMessageAll", appID=101, userID="ops", message="one")["data"]
    bob.push("msg")
    bob.close()
    for i in range(3):
        node.post("/user/sendMessageAll", appID=101, userID="ops", message=f"missed {i}")
    back = node.client()
    back.login("bob")
    answer = data(back.request("join", {"room": "", "since": {
        "epoch": first["epoch"], "offset": first["offset"]}}))
    assert answer["recovered"] is True
    assert [p["msg"] for p in answer["publications"]] == ["missed 0", "missed 1", "missed 2"]
    node.post("/user/sendMessageAll", appID=101, userID="ops", message="live")
    assert [(m["offset"], m["msg"]) for m in msgs(back)] == [(5, "live")]


def test_messages_published_during_a_join_arrive_once_and_in_order(make_node):
    """A publisher keeps sending while a client joins with recovery: every offset reaches
    the client exactly once, from the reply or live, in order."""
    node = make_node({"app": {"rateLimit": 1000, "rateBurst": 1000}})
    ann = joined(node, "ann", "r")
    start = data(ann.request("publish", {"room": "r", "msg": "m0"}))
    total = 300
    done = []

    def publish():
        for i in range(1, total):
            node.post("/room/publish", appID=101, room="r", userID="ops", message=f"m{i}")
        done.append(True)

    publisher = gevent.spawn(publish)
    wait_until(lambda: data(ann.request("history", {"room": "r", "limit": 1}))["offset"] >= 50,
               what="50 messages stored")
    bob = node.client()
    bob.login("bob")
    answer = data(bob.request("join", {"room": "r", "since": {"epoch": start["epoch"],
                                                              "offset": 10}}))
    assert answer["recovered"] is True
    publisher.join(timeout=120)
    assert done
    # every publish was answered after its delivery here: what bob got is all there is
    live = [m["offset"] for m in msgs(bob)]
    seen = [p["offset"] for p in answer["publications"]]
    assert seen and live
    assert seen + live == list(range(11, total + 1))


# -- history ---------------------------------------------------------------------------------

def test_history_pages_backwards(make_node):
    node = make_node({"app": {"rateLimit": 1000, "rateBurst": 1000}})
    ann = joined(node, "ann", "r")
    for i in range(1, 121):
        ann.request("publish", {"room": "r", "msg": f"m{i}"})
    newest = data(ann.request("history", {"room": "r"}))
    assert newest["offset"] == 120
    assert [p["offset"] for p in newest["publications"]] == list(range(71, 121))
    older = data(ann.request("history", {"room": "r", "before": 71, "limit": 100}))
    # app.historySize (100) keeps offsets 21..120
    assert [p["offset"] for p in older["publications"]] == list(range(21, 71))
    assert data(ann.request("history", {"room": "r", "before": 21}))["publications"] == []
    http = node.get("/room/history", appID=101, room="r", before=30, limit=3)["data"]
    assert [p["msg"] for p in http["publications"]] == ["m27", "m28", "m29"]
    assert http["epoch"] == newest["epoch"]


def test_history_off_keeps_nothing_and_recovers_nothing(make_node):
    node = make_node({"app": {"historySize": 0}})
    ann = joined(node, "ann", "r")
    bob = joined(node, "bob", "r")
    answer = data(ann.request("publish", {"room": "r", "msg": "x"}))
    assert (answer["offset"], answer["epoch"]) == (0, "")
    pushed = data(bob.push("msg"))
    assert "offset" not in pushed and "epoch" not in pushed and pushed["msg"] == "x"
    assert data(bob.request("history", {"room": "r"}))["publications"] == []
    carol = node.client()
    carol.login("carol")
    rejoin = data(carol.request("join", {"room": "r", "since": {"epoch": "", "offset": 0}}))
    assert rejoin["recovered"] is False
    sent = node.post("/user/sendMessageAll", appID=101, userID="ops", message="all")["data"]
    assert sent == {"sendResults": True}


# -- HTTP ------------------------------------------------------------------------------------

def test_room_routes(node):
    room = room_name()
    ann_id = unique_id("ann")
    ann = joined(node, ann_id, room)
    answer = node.post("/room/publish", appID=101, room=room, userID="ops", message="hi",
                       msgID=unique_id("h"), type="emoji")
    assert answer["code"] == 200
    assert answer["data"]["sendResults"] is True and answer["data"]["offset"] == 1
    pushed = data(ann.push("msg"))
    assert (pushed["from"], pushed["type"], pushed["msg"]) == ("ops", "emoji", "hi")
    again = node.post("/room/publish", appID=101, room=room, userID="ops", message="hi",
                      msgID=answer["data"]["msgID"])
    assert again["data"] == {"sendResults": False, "duplicate": True}
    users = node.get("/room/users", appID=101, room=room)["data"]
    assert users == {"userCount": 1, "userList": [ann_id]}
    assert node.get("/room/users", appID=101, room=room_name())["data"]["userCount"] == 0
    assert ann_id in node.get("/room/users", appID=101)["data"]["userList"]


@pytest.mark.parametrize("form, detail", [
    ({"room": "r"}, "appID is required"),
    ({"appID": 101, "userID": "ops", "message": "x"}, "room is required"),
    ({"appID": 101, "room": "x" * 65, "userID": "ops", "message": "x"}, "at most 64"),
    ({"appID": 101, "room": "a\nb", "userID": "ops", "message": "x"}, "control"),
    ({"appID": 101, "room": "r", "message": "x"}, "userID is required"),
    ({"appID": 101, "room": "r", "userID": "ops"}, "message is required"),
    ({"appID": 101, "room": "r", "userID": "ops", "message": "x", "type": "t" * 33},
     "type must be at most"),
])
def test_room_publish_bad_input(node, form, detail):
    answer = node.post("/room/publish", **form)
    assert answer["code"] == 1001 and detail in answer["detail"], answer


@pytest.mark.parametrize("query, detail", [
    ({"appID": 101, "limit": 0}, "limit"),
    ({"appID": 101, "limit": 101}, "limit"),
    ({"appID": 101, "limit": "ten"}, "limit"),
    ({"appID": 101, "before": 0}, "before"),
    ({"appID": 101, "room": "\x07"}, "control"),
])
def test_room_history_bad_input(node, query, detail):
    answer = node.get("/room/history", **query)
    assert answer["code"] == 1001 and detail in answer["detail"], answer


# -- bad input over the WebSocket ------------------------------------------------------------

def test_room_commands_need_a_login(node):
    client = node.client()
    for cmd in ("join", "leave", "publish", "history"):
        answer = client.request(cmd, {"room": "r", "msg": "x"})
        assert code(answer) == 1000, answer
    assert code(client.request("ping")) == 200


@pytest.mark.parametrize("cmd, payload, expected, detail", [
    ("join", {"room": "x" * 65}, 1001, "at most 64"),
    ("join", {"room": "a\u2028b"}, 1001, "control"),
    ("join", {"room": 7}, 1001, "string"),
    ("join", {}, 1001, "room is required"),
    ("join", "lobby", 1001, "object"),
    ("join", {"room": "r", "since": 5}, 1001, "since"),
    ("join", {"room": "r", "since": {"offset": 1}}, 1001, "since.epoch"),
    ("join", {"room": "r", "since": {"epoch": "e", "offset": -1}}, 1001, "since.offset"),
    ("join", {"room": "r", "since": {"epoch": "e", "offset": "3"}}, 1001, "since.offset"),
    ("join", {"room": "r", "since": {"epoch": "e", "offset": True}}, 1001, "since.offset"),
    ("leave", {"room": "never-joined"}, 1001, "not in room"),
    ("leave", {"room": ""}, 1001, "cannot be left"),
    ("publish", {"room": "never-joined", "msg": "x"}, 1003, "join"),
    ("publish", {"room": ""}, 1001, "msg is required"),
    ("publish", {"room": "", "msg": 5}, 1001, "msg must be a string"),
    ("publish", {"room": "", "msg": "x", "type": "t" * 33}, 1001, "type"),
    ("publish", {"room": "", "msg": "x", "msgID": "a\x00b"}, 1001, "control"),
    ("history", {"room": "r", "limit": 0}, 1001, "limit"),
    ("history", {"room": "r", "limit": 101}, 1001, "limit"),
    ("history", {"room": "r", "limit": 2.5}, 1001, "limit"),
    ("history", {"room": "r", "before": 0}, 1001, "before"),
])
def test_bad_room_commands_get_their_code_and_the_connection_stays(node, cmd, payload,
                                                                   expected, detail):
    client = node.client()
    client.login(unique_id("bad"))
    answer = client.request(cmd, payload)["response"]
    assert answer["code"] == expected and detail in answer["detail"], answer
    assert answer["data"] is None
    assert code(client.request("ping")) == 200
    assert code(client.request("join", {"room": room_name()})) == 200


def test_too_many_rooms(make_node):
    node = make_node({"app": {"maxRoomsPerConnection": 2}})
    client = node.client()
    client.login("ann")
    assert code(client.request("join", {"room": "a"})) == 200
    assert code(client.request("join", {"room": "b"})) == 200
    over = client.request("join", {"room": "c"})["response"]
    assert over["code"] == 1009 and "app.maxRoomsPerConnection" in over["detail"]
    # the app room and rooms already joined do not count as more
    assert code(client.request("join", {"room": ""})) == 200
    assert code(client.request("join", {"room": "a"})) == 200
    assert code(client.request("leave", {"room": "a"})) == 200
    assert code(client.request("join", {"room": "c"})) == 200
    assert node.get("/room/users", appID=101, room="c")["data"]["userList"] == ["ann"]


def test_a_message_over_the_length_limit_is_refused(make_node):
    node = make_node({"app": {"maxMessageLength": 10}})
    ann = joined(node, "ann", "r")
    answer = ann.request("publish", {"room": "r", "msg": "x" * 11})["response"]
    assert answer["code"] == 1001 and "more than 10" in answer["detail"]
    assert code(ann.request("publish", {"room": "r", "msg": "x" * 10})) == 200
