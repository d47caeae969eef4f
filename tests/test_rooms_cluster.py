"""Rooms, history and recovery over a real cluster (docs/PROTOCOL.md, "Rooms, history and
recovery"): two nodes A and B (real gunicorn processes) on one real redis-server, real
WebSocket clients. A room's messages reach its members on both nodes with their place in
the stream, in one order everywhere; a client that lost its node recovers what it missed
from the other; a store that restarts empty starts the room's stream anew under a new
epoch; a store that is down refuses sends rather than delivering what it did not keep."""
import signal
import time

import gevent
import gevent.event
import pytest

from support import Clients, unique_id, wait_until

APP = 101
SERVERS_KEY = "acc:hash:servers"
# Publishers here send far more than a chat user: the rate limit must not be what is tested.
FAST_SENDERS = {"rateLimit": 10000, "rateBurst": 10000}


# -- helpers ---------------------------------------------------------------------------------

def code_of(frame) -> int:
    return frame["response"]["code"]


def data_of(frame):
    return frame["response"]["data"]


def room_name(prefix="room") -> str:
    return unique_id(prefix)


def login(connect, node, prefix="u", user=None, device=None):
    client = connect(node)
    user = user or unique_id(prefix)
    if device is None:
        answer = client.login(user, APP)
    else:
        answer = client.request("login", {"userID": user, "appID": APP, "deviceID": device})
    assert code_of(answer) == 200, answer
    return client, user


def join(client, room, since=None) -> dict:
    data = {"room": room}
    if since is not None:
        data["since"] = since
    answer = client.request("join", data)
    assert code_of(answer) == 200, answer
    return data_of(answer)


def publish(client, room, text, msg_id=None) -> dict:
    data = {"room": room, "msg": text}
    if msg_id is not None:
        data["msgID"] = msg_id
    answer = client.request("publish", data)
    assert code_of(answer) == 200, answer
    return data_of(answer)


def http_publish(node, room, text, sender="backend", **extra) -> dict:
    answer = node.post("/room/publish", appID=APP, room=room, userID=sender, message=text,
                       **extra)
    assert answer["code"] == 200, answer
    assert answer["data"]["sendResults"] is True, answer
    return answer["data"]


def room_msgs(frames, room):
    """The ``msg`` pushes of ``room`` among ``frames``."""
    return [f for f in frames if f.get("cmd") == "msg" and data_of(f).get("room") == room]


def take_msgs(client, room, count, timeout=15.0) -> "list[dict]":
    """The next ``count`` msg pushes of ``room`` to ``client`` (others are kept), as data."""
    deadline = time.time() + timeout
    got = []
    kept = []
    try:
        while len(got) < count:
            frame = client.push("msg", timeout=max(0.01, deadline - time.time()))
            if data_of(frame).get("room") == room:
                got.append(data_of(frame))
            else:
                kept.append(frame)
    except Exception as exc:
        raise AssertionError(f"{len(got)} of {count} messages of {room!r} arrived: "
                             f"{[d.get('offset') for d in got]} ({exc!r})") from None
    finally:
        client.pushes[:0] = kept
    return got


def offsets(datas) -> "list[int]":
    return [d["offset"] for d in datas]


def no_more_msgs(client, room) -> None:
    """Nothing more of ``room`` reached ``client`` (a ping answers after every push)."""
    extra = room_msgs(client.flush(), room)
    assert extra == [], f"unexpected pushes: {[data_of(f) for f in extra]}"


def start_pair(start_cluster_node, redis_server, config=None):
    """Nodes A and B on redis_server, each knowing the other as a live peer."""
    a_node = start_cluster_node(config, name="a")
    b_node = start_cluster_node(config, name="b")
    redis = redis_server.client()
    wait_until(lambda: {a_node.addr, b_node.addr} <= set(redis.hkeys(SERVERS_KEY)),
               timeout=10, what="both nodes registered")
    # A query asks the store afresh: from now on each node relays to the other.
    for node in (a_node, b_node):
        assert node.get("/user/list", appID=APP)["code"] == 200
    return a_node, b_node


@pytest.fixture
def connect():
    with Clients() as clients:
        yield lambda node: clients(node, timeout=10)


# -- 1. a room over two nodes ----------------------------------------------------------------

def test_a_room_reaches_its_members_on_both_nodes(start_cluster_node, redis_server, connect):
    a_node, b_node = start_pair(start_cluster_node, redis_server)
    room = room_name("lobby")
    a1, user_a1 = login(connect, a_node, "a1", device="phone")
    a2, user_a2 = login(connect, a_node, "a2")
    b1, user_b1 = login(connect, b_node, "b1")
    # a1's user also on B (another device), in the room there too: listed once all the same
    a1_on_b, _ = login(connect, b_node, user=user_a1, device="laptop")
    outsider, _ = login(connect, a_node, "out")  # logged in, not in the room
    first = join(a1, room)
    assert first["room"] == room and first["offset"] == 0 and first["epoch"]
    assert first["recovered"] is False and first["publications"] == []
    epoch = first["epoch"]
    for client in (a2, b1, a1_on_b):
        joined = join(client, room)
        assert (joined["epoch"], joined["offset"]) == (epoch, 0), joined

    # A WebSocket publish on A
    before = int(time.time() * 1000)
    msg_id = unique_id("m")
    answer = publish(a1, room, "hello from A", msg_id)
    after = int(time.time() * 1000)
    assert answer == {"msgID": msg_id, "offset": 1, "epoch": epoch}
    for client in (b1, a2, a1_on_b):
        frame = client.push("msg")
        assert frame["seq"] == msg_id, frame
        assert code_of(frame) == 200 and frame["response"]["codeMsg"] == "Ok"
        data = data_of(frame)
        assert before - 5 <= data.pop("time") <= after + 5, frame
        assert data == {"target": "", "type": "text", "msg": "hello from A", "from": user_a1,
                        "room": room, "msgID": msg_id, "offset": 1, "epoch": epoch}

    # /room/publish on B, without a msgID: the server makes one, the frame's seq
    answer = http_publish(b_node, room, "hello from B's back end", sender="backend",
                          type="notice")
    assert (answer["offset"], answer["epoch"]) == (2, epoch) and answer["msgID"], answer
    for client in (a1, a2, b1, a1_on_b):
        frame = client.push("msg")
        data = data_of(frame)
        assert frame["seq"] == answer["msgID"] == data["msgID"], frame
        assert isinstance(data.pop("time"), int)
        assert data == {"target": "", "type": "notice", "msg": "hello from B's back end",
                        "from": "backend", "room": room, "msgID": answer["msgID"],
                        "offset": 2, "epoch": epoch}

    # A WebSocket publish on B without a msgID reaches A
    answer = publish(b1, room, "hello from B")
    assert (answer["offset"], answer["epoch"]) == (3, epoch) and answer["msgID"]
    for client in (a1, a2, a1_on_b):
        data = data_of(client.push("msg"))
        assert (data["offset"], data["msg"], data["from"], data["msgID"]) == (
            3, "hello from B", user_b1, answer["msgID"]), data

    # the senders' connections did not get their own; nobody got anything twice; the
    # user outside the room got nothing of it
    for client in (a1, a2, b1, a1_on_b, outsider):
        no_more_msgs(client, room)

    members = sorted([user_a1, user_a2, user_b1])
    for node in (a_node, b_node):
        listed = node.get("/room/users", appID=APP, room=room)
        assert listed["code"] == 200, listed
        assert listed["data"]["userCount"] == 3, listed
        assert sorted(listed["data"]["userList"]) == members, listed
        assert "unreachableNodes" not in listed["data"], listed

    # history, over HTTP on the other node, holds the three in order
    page = a_node.get("/room/history", appID=APP, room=room)
    assert page["code"] == 200, page
    assert (page["data"]["epoch"], page["data"]["offset"]) == (epoch, 3)
    assert [p["msg"] for p in page["data"]["publications"]] == [
        "hello from A", "hello from B's back end", "hello from B"]

    # one member on A leaves: listed no more; its user's connection on B stays listed
    assert code_of(a2.request("leave", {"room": room})) == 200
    a1.close()
    expected = sorted([user_a1, user_b1])
    for node in (a_node, b_node):
        wait_until(lambda: sorted(node.get("/room/users", appID=APP, room=room)["data"]
                                  ["userList"]) == expected,
                   timeout=5, what=f"members {expected} on {node.name}")


# -- 2. one order over two nodes -------------------------------------------------------------

def test_concurrent_publishers_on_two_nodes_give_every_member_one_order(
        start_cluster_node, redis_server, connect):
    a_node, b_node = start_pair(start_cluster_node, redis_server, {"app": FAST_SENDERS})
    room = room_name("race")
    each = 50
    pub_a, _ = login(connect, a_node, "pa")
    pub_b, _ = login(connect, b_node, "pb")
    recv_a, _ = login(connect, a_node, "ra")
    recv_b, _ = login(connect, b_node, "rb")
    for client in (pub_a, pub_b, recv_a, recv_b):
        join(client, room)

    def send(client, name):
        return [publish(client, room, f"{name}-{i}")["offset"] for i in range(each)]

    jobs = [gevent.spawn(send, pub_a, "a"), gevent.spawn(send, pub_b, "b")]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    sent_a, sent_b = (job.value for job in jobs)
    assert sent_a is not None and sent_b is not None, "the publishers did not finish"
    assert sorted(sent_a + sent_b) == list(range(1, 2 * each + 1))
    assert sent_a == sorted(sent_a) and sent_b == sorted(sent_b)
    # the two really ran at once: their offsets interleave
    assert max(sent_a) > min(sent_b) and max(sent_b) > min(sent_a), (sent_a, sent_b)

    for receiver in (recv_a, recv_b):
        got = take_msgs(receiver, room, 2 * each)
        assert offsets(got) == list(range(1, 2 * each + 1))
        by_offset = {o: f"a-{i}" for i, o in enumerate(sent_a)}
        by_offset.update({o: f"b-{i}" for i, o in enumerate(sent_b)})
        assert [d["msg"] for d in got] == [by_offset[d["offset"]] for d in got]
        assert len({d["epoch"] for d in got}) == 1
        no_more_msgs(receiver, room)
    # each publisher got the other's messages, in order, and none of its own
    for publisher, others in ((pub_a, sent_b), (pub_b, sent_a)):
        got = take_msgs(publisher, room, each)
        assert offsets(got) == others
        no_more_msgs(publisher, room)


# -- 3. recovery on another node after a SIGTERM ---------------------------------------------

def test_a_client_of_a_stopped_node_recovers_what_it_missed_on_the_other(
        start_cluster_node, redis_server, connect):
    a_node, b_node = start_pair(start_cluster_node, redis_server)
    room = room_name("recover")
    client, user = login(connect, a_node, "c")
    sender, user_s = login(connect, b_node, "s")
    joined = join(client, room)
    join(sender, room)
    epoch = joined["epoch"]
    for i in range(1, 4):
        publish(sender, room, f"before-{i}")
    seen = take_msgs(client, room, 3)
    assert offsets(seen) == [1, 2, 3] and {d["epoch"] for d in seen} == {epoch}
    last = seen[-1]["offset"]

    a_node.proc.send_signal(signal.SIGTERM)
    code, _ = client.wait_closed(timeout=10)
    assert code == 1001
    assert a_node.proc.wait(30) == 0

    # while A is gone: over WebSocket and over HTTP, on B
    missed = [publish(sender, room, "while-down-1"),
              http_publish(b_node, room, "while-down-2", sender=user_s),
              publish(sender, room, "while-down-3")]
    assert [m["offset"] for m in missed] == [4, 5, 6]
    assert {m["epoch"] for m in missed} == {epoch}

    again, _ = login(connect, b_node, user=user)
    answer = join(again, room, since={"epoch": epoch, "offset": last})
    assert answer["recovered"] is True, answer
    assert (answer["room"], answer["epoch"], answer["offset"]) == (room, epoch, 6)
    pubs = answer["publications"]
    assert offsets(pubs) == [4, 5, 6]
    assert [p["msg"] for p in pubs] == ["while-down-1", "while-down-2", "while-down-3"]
    assert [p["msgID"] for p in pubs] == [m["msgID"] for m in missed]
    for p in pubs:
        assert (p["room"], p["epoch"], p["from"], p["type"], p["target"]) == (
            room, epoch, user_s, "text", ""), p
        assert isinstance(p["time"], int) and p["time"] > 0

    live = publish(sender, room, "live")
    assert live["offset"] == 7
    got = take_msgs(again, room, 1)
    assert (got[0]["offset"], got[0]["msg"], got[0]["epoch"]) == (7, "live", epoch)
    no_more_msgs(again, room)
    # the sender's connection got none of its own, but the back end's sent in its user's name
    assert [(d["offset"], d["msg"]) for d in take_msgs(sender, room, 1)] == [
        (5, "while-down-2")]
    no_more_msgs(sender, room)


# -- 4. Redis restarted empty ----------------------------------------------------------------

def test_a_store_restarted_empty_starts_the_room_anew_under_a_new_epoch(
        start_cluster_node, redis_server, connect):
    a_node, b_node = start_pair(start_cluster_node, redis_server)
    redis = redis_server.client()
    room = room_name("reborn")
    on_a, user_a = login(connect, a_node, "a")
    on_b, user_b = login(connect, b_node, "b")
    old = join(on_a, room)["epoch"]
    join(on_b, room)
    for i in range(1, 4):
        publish(on_a, room, f"old-{i}")
    assert offsets(take_msgs(on_b, room, 3)) == [1, 2, 3]

    redis_server.stop()
    redis_server.start()
    assert redis.exists(f"acc:stream:{{{APP}:{room}}}:meta") == 0  # empty indeed
    wait_until(lambda: {a_node.addr, b_node.addr} <= set(redis.hkeys(SERVERS_KEY)),
               timeout=10, what="both nodes registered again")
    for node in (a_node, b_node):
        wait_until(lambda: node.state()["storeHealthy"], timeout=10,
                   what=f"{node.name}: store healthy")

    newcomer = connect(b_node)
    user_n = unique_id("n")
    wait_until(lambda: code_of(newcomer.login(user_n, APP)) == 200, timeout=10,
               what="a login after the restart")
    answer = join(newcomer, room, since={"epoch": old, "offset": 3})
    assert answer["recovered"] is False and answer["publications"] == [], answer
    new = answer["epoch"]
    assert new and new != old and answer["offset"] == 0, answer
    # a member already in the room is told the new epoch as well
    again = join(on_a, room, since={"epoch": old, "offset": 3})
    assert (again["recovered"], again["epoch"], again["offset"], again["publications"]) == (
        False, new, 0, []), again

    first = publish(newcomer, room, "new-1")
    assert (first["offset"], first["epoch"]) == (1, new)
    second = http_publish(a_node, room, "new-2")
    assert (second["offset"], second["epoch"]) == (2, new)
    for client, count in ((on_a, 2), (on_b, 2), (newcomer, 1)):
        got = take_msgs(client, room, count)
        assert [(d["offset"], d["epoch"]) for d in got] == [(1, new), (2, new)][2 - count:]
        assert [d["msg"] for d in got] == ["new-1", "new-2"][2 - count:]
        no_more_msgs(client, room)
    page = b_node.get("/room/history", appID=APP, room=room)["data"]
    assert (page["epoch"], page["offset"]) == (new, 2)
    assert [p["msg"] for p in page["publications"]] == ["new-1", "new-2"]


# -- 5. Redis down ---------------------------------------------------------------------------

def test_while_the_store_is_down_sends_are_refused_and_nothing_is_delivered(
        start_cluster_node, redis_server, connect):
    a_node, b_node = start_pair(start_cluster_node, redis_server)
    room = room_name("down")
    a1, user_a1 = login(connect, a_node, "a1")
    a2, _ = login(connect, a_node, "a2")
    b1, _ = login(connect, b_node, "b1")
    for client in (a1, a2, b1):
        join(client, room)
    assert publish(a1, room, "before")["offset"] == 1
    for client in (a2, b1):
        assert offsets(take_msgs(client, room, 1)) == [1]
    for client in (a1, a2, b1):
        client.flush()

    redis_server.stop()

    answer = a1.request("publish", {"room": room, "msg": "lost-ws", "msgID": unique_id("m")})
    assert code_of(answer) == 1004 and answer["response"]["detail"], answer
    answer = a1.request("publish", {"room": "", "msg": "lost-ws-app"})
    assert code_of(answer) == 1004, answer
    answer = b_node.post("/room/publish", appID=APP, room=room, userID="backend",
                         message="lost-http")
    assert answer["code"] == 1004, answer
    answer = b_node.post("/room/publish", appID=APP, room=room, userID="backend",
                         message="lost-http-2", msgID=unique_id("m"))
    assert answer["code"] == 1004, answer
    answer = a_node.post("/user/sendMessageAll", appID=APP, userID=user_a1,
                         message="lost-all", msgID=unique_id("m"))
    assert answer["code"] == 1004, answer

    # a join fails the same way, and leaves the connection usable and out of the room
    other_room = room_name("never")
    answer = a2.request("join", {"room": other_room})
    assert code_of(answer) == 1004 and answer["response"]["detail"], answer
    answer = b1.request("join", {"room": room_name("never"),
                                 "since": {"epoch": "e", "offset": 1}})
    assert code_of(answer) == 1004, answer
    for client in (a1, a2, b1):
        assert data_of(client.request("ping")) == "pong"
        frames = client.flush()
        assert [f for f in frames if f.get("cmd") == "msg"] == [], frames

    redis_server.start()
    back = wait_until(lambda: (r := a1.request("publish", {"room": room, "msg": "back"}))
                      and code_of(r) == 200 and data_of(r), timeout=10,
                      what="a publish once the store is back")
    assert back["offset"] == 1 and back["epoch"]  # the store came back empty: a new stream
    for client in (a2, b1):
        got = take_msgs(client, room, 1)
        assert [(d["offset"], d["epoch"], d["msg"]) for d in got] == [
            (1, back["epoch"], "back")]
    answer = http_publish(b_node, room, "back-http")
    assert (answer["offset"], answer["epoch"]) == (2, back["epoch"])
    for client in (a1, a2, b1):
        assert [d["msg"] for d in take_msgs(client, room, 1)] == ["back-http"]
    answer = wait_until(lambda: (r := a_node.post("/user/sendMessageAll", appID=APP,
                                                  userID=user_a1, message="all-back"))
                        and r["code"] == 200 and r["data"], timeout=10,
                        what="sendMessageAll once the store is back")
    assert answer["offset"] == 1 and answer["epoch"], answer
    for client in (a2, b1):
        got = take_msgs(client, "", 1)
        assert (got[0]["msg"], got[0]["offset"]) == ("all-back", 1)
    no_more_msgs(a1, "")  # its sender's user
    # the join that failed did not join
    answer = a2.request("publish", {"room": other_room, "msg": "not a member"})
    assert code_of(answer) == 1003, answer
    for client in (a1, a2, b1):
        no_more_msgs(client, room)


# -- 6. a join with recovery while the room streams ------------------------------------------

@pytest.mark.parametrize("watched_on", ["a", "b"])
def test_a_join_with_recovery_midstream_sees_every_offset_once(
        start_cluster_node, redis_server, connect, watched_on):
    """The publisher is on B. A watcher in the room from the start, on A (the room is
    known there when the joiner comes) or on B (the join on A is the room's first there),
    tells when the stream is midway."""
    total = 200
    a_node, b_node = start_pair(start_cluster_node, redis_server,
                                {"app": dict(FAST_SENDERS, historySize=500,
                                             presenceMaxRoom=0)})
    room = room_name("stream")
    publisher, _ = login(connect, b_node, "p")
    watcher, _ = login(connect, a_node if watched_on == "a" else b_node, "w")
    joiner_a, _ = login(connect, a_node, "ja")
    joiner_b, _ = login(connect, b_node, "jb")  # on the publisher's own node
    rejoiner_a, _ = login(connect, a_node, "ra")
    rejoiner_b, _ = login(connect, b_node, "rb")
    epoch = join(watcher, room)["epoch"]
    join(publisher, room)
    since = 10
    for i in range(1, since + 1):
        publish(publisher, room, f"m-{i}")

    def stream():
        # every frame at once, then the replies: as fast as the node takes them
        seqs = [f"s-{i}" for i in range(since + 1, total + 1)]
        for i, seq in zip(range(since + 1, total + 1), seqs):
            publisher.send_json({"seq": seq, "cmd": "publish",
                                 "data": {"room": room, "msg": f"m-{i}"}})
        return [data_of(publisher.reply(seq, timeout=20))["offset"] for seq in seqs]

    streaming = gevent.spawn(stream)
    # midway: once the watcher has seen a few of the stream
    seen = take_msgs(watcher, room, since + 20)
    replies = {}

    def join_at(name, client):
        replies[name] = join(client, room, since={"epoch": epoch, "offset": since})

    def rejoin_over_and_over(client):
        """Join with since the last offset seen, leave, again, until the end of the
        stream: as a client that keeps losing its connection. What it saw, in order."""
        got, last, rounds = [], since, 0
        deadline = time.monotonic() + 20
        while last < total:
            rounds += 1
            assert time.monotonic() < deadline, f"stuck at {last} after {rounds} rounds"
            answer = join(client, room, since={"epoch": epoch, "offset": last})
            assert answer["recovered"] is True, answer
            got += answer["publications"]
            if answer["offset"] < total:
                # in the room until a live message came, then off again
                until = time.monotonic() + 10
                while not room_msgs(client.pushes, room):
                    frame = client.recv_frame(max(0.01, until - time.monotonic()))
                    assert frame is not None, f"closed with {client.close_code}"
                    client.pushes.append(frame)
            assert code_of(client.request("leave", {"room": room})) == 200
            # every push sent before the leave's reply came before it
            got += [data_of(f) for f in room_msgs(client.pushes, room)]
            client.pushes = [f for f in client.pushes if not room_msgs([f], room)]
            last = got[-1]["offset"] if got else last
        return got, rounds

    joins = [gevent.spawn(join_at, "a", joiner_a), gevent.spawn(join_at, "b", joiner_b)]
    cyclers = [gevent.spawn(rejoin_over_and_over, rejoiner_a),
               gevent.spawn(rejoin_over_and_over, rejoiner_b)]
    gevent.joinall(joins, timeout=10, raise_error=True)
    sent = streaming.get(timeout=25)
    assert sent == list(range(since + 1, total + 1))
    gevent.joinall(cyclers, timeout=20, raise_error=True)
    for name, cycler in zip("ab", cyclers):
        got, rounds = cycler.get(timeout=0)
        assert rounds > 1, f"rejoiner {name} joined once only"
        assert offsets(got) == list(range(since + 1, total + 1)), f"rejoiner {name}"
        assert [d["msg"] for d in got] == [f"m-{o}" for o in range(since + 1, total + 1)]

    seen += take_msgs(watcher, room, total - len(seen))
    assert offsets(seen) == list(range(1, total + 1))
    no_more_msgs(watcher, room)
    for name, client in (("a", joiner_a), ("b", joiner_b)):
        answer = replies[name]
        assert answer["recovered"] is True and answer["epoch"] == epoch, answer
        top = answer["offset"]
        assert since + 20 <= top < total, f"joiner {name}: the join was not midstream ({top})"
        recovered = answer["publications"]
        assert offsets(recovered) == list(range(since + 1, top + 1)), name
        live = take_msgs(client, room, total - top)
        everything = recovered + live
        assert offsets(everything) == list(range(since + 1, total + 1)), name
        assert [d["msg"] for d in everything] == [f"m-{o}" for o in range(since + 1, total + 1)]
        no_more_msgs(client, room)


def test_after_the_store_restarted_empty_concurrent_publishers_still_give_one_order(
        start_cluster_node, redis_server, connect):
    """The nodes follow the room's old stream when the new one starts: its first messages
    may reach a node out of order (7 and 8 of the spec, here 1 and 2) and are still
    delivered to its members, each once, in order."""
    a_node, b_node = start_pair(start_cluster_node, redis_server, {"app": FAST_SENDERS})
    redis = redis_server.client()
    room = room_name("reborn-race")
    each, per_node = 10, 4
    publishers = [login(connect, node, "p")[0] for node in (a_node, b_node)
                  for _ in range(per_node)]
    receivers = [login(connect, node, "r")[0] for node in (a_node, b_node)]
    old = join(receivers[0], room)["epoch"]
    for client in publishers + receivers[1:]:
        join(client, room)
    for i in range(3):
        publish(publishers[0], room, f"old-{i}")
    for client in receivers:
        assert offsets(take_msgs(client, room, 3)) == [1, 2, 3]

    redis_server.stop()
    redis_server.start()
    wait_until(lambda: {a_node.addr, b_node.addr} <= set(redis.hkeys(SERVERS_KEY)),
               timeout=10, what="both nodes registered again")
    for node in (a_node, b_node):
        wait_until(lambda: node.state()["storeHealthy"], timeout=10,
                   what=f"{node.name}: store healthy")

    start = gevent.event.Event()

    def send(client, name):
        start.wait()
        return [publish(client, room, f"{name}-{i}") for i in range(each)]

    jobs = [gevent.spawn(send, client, f"p{n}") for n, client in enumerate(publishers)]
    gevent.sleep(0)  # every publisher waits at the start line
    start.set()
    gevent.joinall(jobs, timeout=20, raise_error=True)
    answers = [a for job in jobs for a in job.value]
    total = each * len(publishers)
    assert sorted(a["offset"] for a in answers) == list(range(1, total + 1))
    new = answers[0]["epoch"]
    assert new != old and {a["epoch"] for a in answers} == {new}
    for client in receivers:
        got = take_msgs(client, room, total, timeout=10)
        assert [(d["offset"], d["epoch"]) for d in got] == [
            (o, new) for o in range(1, total + 1)]
        no_more_msgs(client, room)


def test_a_join_after_the_store_restarted_empty_does_not_skip_the_new_streams_start(
        start_cluster_node, redis_server, connect):
    """A node where a join had answered offset 5 of the old stream, and where a join of the
    new stream answers 0: the new stream's 1, 2, 3 reach its members all the same."""
    a_node, b_node = start_pair(start_cluster_node, redis_server)
    redis = redis_server.client()
    room = room_name("reborn-join")
    member_a, _ = login(connect, a_node, "ma")
    member_b, _ = login(connect, b_node, "mb")
    late_a, _ = login(connect, a_node, "la")
    old = join(member_a, room)["epoch"]
    join(member_b, room)
    for i in range(5):
        publish(member_b, room, f"old-{i}")
    assert offsets(take_msgs(member_a, room, 5)) == [1, 2, 3, 4, 5]
    assert join(late_a, room)["offset"] == 5

    redis_server.stop()
    redis_server.start()
    wait_until(lambda: {a_node.addr, b_node.addr} <= set(redis.hkeys(SERVERS_KEY)),
               timeout=10, what="both nodes registered again")
    for node in (a_node, b_node):
        wait_until(lambda: node.state()["storeHealthy"], timeout=10,
                   what=f"{node.name}: store healthy")

    newcomer, user_n = connect(a_node), unique_id("n")
    wait_until(lambda: code_of(newcomer.login(user_n, APP)) == 200, timeout=10,
               what="a login after the restart")
    answer = join(newcomer, room, since={"epoch": old, "offset": 5})
    assert (answer["recovered"], answer["offset"]) == (False, 0) and answer["epoch"] != old
    new = answer["epoch"]
    # A quiet moment, longer than a node waits for a message that is late (0.2 s).
    gevent.sleep(0.5)
    for i in range(3):
        assert publish(member_b, room, f"new-{i}")["offset"] == i + 1
    for client in (member_a, late_a, newcomer):
        got = take_msgs(client, room, 3, timeout=5)
        assert [(d["offset"], d["epoch"], d["msg"]) for d in got] == [
            (i + 1, new, f"new-{i}") for i in range(3)]
        no_more_msgs(client, room)
