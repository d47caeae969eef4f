"""Devices, private messages and the inbox on one embedded node (PROTOCOL.md, "Devices,
private messages and the inbox"): devices side by side, replacement per device, send and
its copies, offline delivery from the last ack, inbox history, and every bad input's
answer."""
import pytest

from support import unique_id, wait_until


def data(frame):
    return frame["response"]["data"]


def code(frame):
    return frame["response"]["code"]


def device(node, user, device_id, app_id=101):
    """A connection of ``user`` logged in with ``device_id``: (client, login reply data)."""
    client = node.client()
    answer = client.request("login", {"userID": user, "appID": app_id, "deviceID": device_id})
    assert code(answer) == 200, answer
    return client, data(answer)


def plain(node, user, app_id=101):
    client = node.client()
    assert code(client.login(user, app_id)) == 200
    return client


def msgs(client):
    return [data(f) for f in client.flush() if f["cmd"] == "msg"]


def test_devices_live_side_by_side_and_each_gets_private_messages(node):
    ann, bob = unique_id("ann"), unique_id("bob")
    phone, first = device(node, bob, "phone")
    laptop, _ = device(node, bob, "laptop")
    assert first == {"inbox": {"epoch": first["inbox"]["epoch"], "offset": 0, "unacked": 0}}
    sender = plain(node, ann)
    answer = data(sender.request("send", {"to": bob, "msg": "hi bob", "msgID": unique_id("p")}))
    assert answer["delivered"] is True and answer["offset"] == 1
    for client in (phone, laptop):
        pushed = data(client.push("msg"))
        assert (pushed["target"], pushed["from"], pushed["msg"], pushed["room"]) == (
            bob, ann, "hi bob", "")
        assert (pushed["offset"], pushed["epoch"]) == (1, first["inbox"]["epoch"])
        assert pushed["msgID"] == answer["msgID"]
    assert node.get("/user/online", appID=101, userID=bob)["data"]["online"] is True
    assert node.get("/user/list", appID=101)["data"]["userList"].count(bob) == 1
    phone.close()
    wait_until(lambda: node.get("/user/online", appID=101, userID=bob)["data"]["online"],
               what="still online with the laptop")
    laptop.close()
    wait_until(lambda: not node.get("/user/online", appID=101, userID=bob)["data"]["online"],
               what="offline with no device left")


def test_the_same_device_replaces_its_older_connection_only(node):
    bob = unique_id("bob")
    observer = plain(node, unique_id("obs"))
    old_phone, _ = device(node, bob, "phone")
    laptop, _ = device(node, bob, "laptop")
    new_phone, _ = device(node, bob, "phone")
    assert old_phone.wait_closed()[0] == 4000
    assert code(laptop.request("ping")) == 200  # the other device stays
    node.post("/user/sendMessage", appID=101, userID=bob, message="to both", msgID=unique_id("s"))
    assert data(new_phone.push("msg"))["msg"] == "to both"
    assert data(laptop.push("msg"))["msg"] == "to both"
    # one enter for the user, no exit for the replacement
    events = [(f["cmd"], data(f)["from"]) for f in observer.flush()
              if f["cmd"] in ("enter", "exit")]
    assert events == [("enter", bob)]


def test_the_sender_s_other_devices_get_a_copy_and_the_sender_s_history_lists_it(node):
    ann, bob = unique_id("ann"), unique_id("bob")
    ann_phone, _ = device(node, ann, "phone")
    ann_laptop, ann_login = device(node, ann, "laptop")
    bob_phone, _ = device(node, bob, "phone")
    answer = data(ann_phone.request("send", {"to": bob, "msg": "copy me"}))
    assert (answer["offset"], answer["epoch"]) == (1, ann_login["inbox"]["epoch"])
    copy = data(ann_laptop.push("msg"))
    assert (copy["target"], copy["from"], copy["offset"]) == (bob, ann, 1)
    assert data(bob_phone.push("msg"))["msg"] == "copy me"
    assert msgs(ann_phone) == []  # not to the sending connection
    history = data(ann_phone.request("history", {"inbox": True}))
    assert [(p["from"], p["target"], p["msg"]) for p in history["publications"]] == [
        (ann, bob, "copy me")]
    reply = data(bob_phone.request("send", {"to": ann, "msg": "got it"}))
    assert reply["delivered"] is True
    history = data(bob_phone.request("history", {"inbox": True}))
    assert [p["msg"] for p in history["publications"]] == ["copy me", "got it"]
    assert history["inbox"] is True and history["offset"] == 2


def test_a_device_gets_what_it_missed_after_its_last_ack_then_live_ones(node):
    ann, bob = unique_id("ann"), unique_id("bob")
    sender = plain(node, ann)
    phone, _ = device(node, bob, "phone")
    for i in range(3):
        sender.request("send", {"to": bob, "msg": f"seen {i}"})
    assert [m["offset"] for m in msgs(phone)] == [1, 2, 3]
    assert code(phone.request("ack", {"offset": 2})) == 200
    phone.close()
    for i in range(4):
        sender.request("send", {"to": bob, "msg": f"missed {i}"})
    node.post("/user/sendMessage", appID=101, userID=bob, message="from the back end",
              msgID=unique_id("b"))
    back, login = device(node, bob, "phone")
    assert login["inbox"]["unacked"] == 6 and login["inbox"]["offset"] == 8
    got = [(m["offset"], m["msg"]) for m in msgs(back)]
    assert got == [(3, "seen 2")] + [(4 + i, f"missed {i}") for i in range(4)] + [
        (8, "from the back end")]
    sender.request("send", {"to": bob, "msg": "live"})
    assert [(m["offset"], m["msg"]) for m in msgs(back)] == [(9, "live")]
    # a new device gets all that is kept
    tablet, login = device(node, bob, "tablet")
    assert login["inbox"]["unacked"] == 9
    assert [m["offset"] for m in msgs(tablet)] == list(range(1, 10))


def test_an_older_ack_changes_nothing(node):
    bob = unique_id("bob")
    phone, _ = device(node, bob, "phone")
    for i in range(3):
        node.post("/user/sendMessage", appID=101, userID=bob, message=f"m{i}", msgID=unique_id())
    msgs(phone)
    assert code(phone.request("ack", {"offset": 3})) == 200
    assert code(phone.request("ack", {"offset": 1})) == 200
    phone.close()
    again, login = device(node, bob, "phone")
    assert login["inbox"]["unacked"] == 0 and msgs(again) == []


def test_messages_sent_during_a_device_login_arrive_once_and_in_order(make_node):
    node = make_node({"app": {"rateLimit": 1000, "rateBurst": 1000}})
    ann = plain(node, "ann")
    for i in range(40):
        ann.request("send", {"to": "bob", "msg": f"before {i}"})
    import gevent

    def keep_sending():
        for i in range(60):
            node.post("/user/sendMessage", appID=101, userID="bob", message=f"during {i}")

    sending = gevent.spawn(keep_sending)
    wait_until(lambda: data(ann.request("history", {"inbox": True, "limit": 1}))["offset"] >= 1,
               what="the sender's inbox")
    gevent.sleep(0.05)
    phone, _ = device(node, "bob", "phone")
    sending.join(timeout=60)
    offsets = [m["offset"] for m in msgs(phone)]
    assert offsets == list(range(1, 101))


def test_a_login_without_a_device_gets_live_private_messages_only(node):
    bob = unique_id("bob")
    node.post("/user/sendMessage", appID=101, userID=bob, message="while away", msgID=unique_id())
    client = node.client()
    assert client.login(bob)["response"]["data"] is None
    assert msgs(client) == []
    node.post("/user/sendMessage", appID=101, userID=bob, message="now", msgID=unique_id())
    assert [m["msg"] for m in msgs(client)] == ["now"]
    ack = client.request("ack", {"offset": 1})["response"]
    assert ack["code"] == 1001 and "deviceID" in ack["detail"]


def test_a_send_to_an_offline_user_is_kept(node):
    ann, bob = unique_id("ann"), unique_id("bob")
    sender = plain(node, ann)
    answer = data(sender.request("send", {"to": bob, "msg": "later"}))
    assert answer["delivered"] is False and answer["offset"] == 1
    phone, login = device(node, bob, "phone")
    assert login["inbox"]["unacked"] == 1
    assert [m["msg"] for m in msgs(phone)] == ["later"]


def test_a_repeated_msg_id_is_sent_once(node):
    ann, bob = unique_id("ann"), unique_id("bob")
    sender = plain(node, ann)
    phone, _ = device(node, bob, "phone")
    first = data(sender.request("send", {"to": bob, "msg": "once", "msgID": "same"}))
    again = data(sender.request("send", {"to": bob, "msg": "once", "msgID": "same"}))
    assert first["offset"] == 1 and again == {"msgID": "same", "duplicate": True}
    assert [m["msg"] for m in msgs(phone)] == ["once"]


def test_with_the_inbox_off_private_messages_are_live_only(make_node):
    node = make_node({"app": {"inboxSize": 0}})
    phone, login = device(node, "bob", "phone")
    assert login == {"inbox": {"epoch": "", "offset": 0, "unacked": 0}}
    ann = plain(node, "ann")
    answer = data(ann.request("send", {"to": "bob", "msg": "live"}))
    assert (answer["offset"], answer["delivered"]) == (0, True)
    pushed = msgs(phone)[0]
    assert "offset" not in pushed and pushed["msg"] == "live"
    sent = node.post("/user/sendMessage", appID=101, userID="bob", message="x", msgID="k1")
    assert sent["data"] == {"sendResults": True}


@pytest.mark.parametrize("payload, detail", [
    ({"msg": "x"}, "to must be"),
    ({"to": "", "msg": "x"}, "to must be"),
    ({"to": "x" * 65, "msg": "x"}, "to must be"),
    ({"to": "a\nb", "msg": "x"}, "to must be"),
    ({"to": 7, "msg": "x"}, "to must be"),
    ({"to": "SELF", "msg": "x"}, "another user"),
    ({"to": "someone"}, "msg is required"),
    ({"to": "someone", "msg": 3}, "msg must be a string"),
    ({"to": "someone", "msg": "x", "type": "t" * 33}, "type"),
])
def test_bad_sends(node, payload, detail):
    me = unique_id("me")
    client = plain(node, me)
    if payload.get("to") == "SELF":
        payload = dict(payload, to=me)
    answer = client.request("send", payload)["response"]
    assert answer["code"] == 1001 and detail in answer["detail"], answer
    assert code(client.request("ping")) == 200


@pytest.mark.parametrize("payload, detail", [
    ({"offset": 5}, "above"),
    ({"offset": -1}, "offset"),
    ({"offset": "1"}, "offset"),
    ({"offset": 1.5}, "offset"),
    ({}, "offset"),
])
def test_bad_acks(node, payload, detail):
    phone, _ = device(node, unique_id("bob"), "phone")
    answer = phone.request("ack", payload)["response"]
    assert answer["code"] == 1001 and detail in answer["detail"], answer
    assert code(phone.request("ping")) == 200


@pytest.mark.parametrize("device_id", ["", "d" * 65, "a\tb", 5])
def test_bad_device_ids(node, device_id):
    client = node.client()
    answer = client.request("login", {"userID": unique_id("u"), "appID": 101,
                                      "deviceID": device_id})["response"]
    assert answer["code"] == 1001 and "deviceID" in answer["detail"], answer
    assert code(client.login(unique_id("u"))) == 200  # the connection stays usable


def test_commands_need_a_login(node):
    client = node.client()
    for cmd, payload in (("send", {"to": "x", "msg": "y"}), ("ack", {"offset": 0})):
        assert code(client.request(cmd, payload)) == 1000
    bad = client.request("history", {"inbox": "yes"})
    assert code(bad) == 1000
    client.login(unique_id("u"))
    bad = client.request("history", {"inbox": "yes"})["response"]
    assert bad["code"] == 1001 and "inbox" in bad["detail"]
