"""A cluster with a node of the original system in it (docs/PROTOCOL.md, "Nodes of the
original in the cluster"). The original node is played by a gRPC AccServer in this process
that does what the original's does: it registers in acc:hash:servers, writes its users'
records the original's way, answers the four calls (QueryUsersOnline with retCode 0: its
server writes the code into the request), and never writes the room sizes that this
server's presence bound reads. Our nodes are real processes on a real redis-server."""
import json
import time

import pytest

from support import Clients, grpc_api, unique_id, wait_until


class OriginalNode:
    """The cluster-facing side of one node of the original, with ``users`` in each room."""

    def __init__(self, redis_client, port, users):
        from concurrent import futures

        grpc, pb, pb_grpc = grpc_api()

        self.addr = f"127.0.0.1:{port}"
        self.users = users  # appID -> [userID]
        self.room_pushes = []  # SendMsgAll requests received
        node = self

        class Servicer(pb_grpc.AccServerServicer):
            def QueryUsersOnline(self, request, context):
                return pb.QueryUsersOnlineRsp(
                    retCode=0, online=request.userID in node.users.get(request.appID, ()))

            def SendMsg(self, request, context):
                if request.userID in node.users.get(request.appID, ()):
                    return pb.SendMsgRsp(retCode=200, sendMsgID=request.seq)
                return pb.SendMsgRsp(retCode=1004, errMsg="系统错误")  # the original's answer

            def SendMsgAll(self, request, context):
                node.room_pushes.append(request)
                return pb.SendMsgAllRsp(retCode=200, sendMsgID=request.seq)

            def GetUserList(self, request, context):
                return pb.GetUserListRsp(retCode=200, userID=node.users.get(request.appID, []))

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_AccServerServicer_to_server(Servicer(), self.server)
        assert self.server.add_insecure_port(self.addr)
        self.server.start()
        self.redis = redis_client
        self.port = port
        redis_client.hset("acc:hash:servers", self.addr, str(int(time.time())))
        for app_id, user_ids in users.items():
            for user_id in user_ids:
                self.write_record(app_id, user_id)

    def write_record(self, app_id, user_id):
        # The original writes the client's "ip:port" into clientIp, clientPort empty.
        now = int(time.time())
        self.redis.set(f"acc:user:online:{app_id}_{user_id}", json.dumps({
            "accIp": "127.0.0.1", "accPort": str(self.port), "appID": app_id,
            "userID": user_id, "clientIp": "127.0.0.1:50000", "clientPort": "",
            "loginTime": now, "heartbeatTime": now, "logOutTime": 0, "qua": "",
            "deviceInfo": "", "isLogoff": False}), ex=86400)

    def stop(self):
        self.server.stop(grace=0)


@pytest.fixture
def original_node(redis_server, free_rpc_ports):
    users = {101: [unique_id("orig") for _ in range(3)]}
    node = OriginalNode(redis_server.client(), free_rpc_ports(1), users)
    yield node
    node.stop()


def test_presence_bound_counts_only_the_users_of_this_servers_nodes(
        make_cluster_node, redis_server, original_node):
    ours = make_cluster_node({"app": {"presenceMaxRoom": 2}})
    with Clients() as connect:
        a, b, c = connect(ours), connect(ours), connect(ours)
        user_a, user_b, user_c = unique_id("a"), unique_id("b"), unique_id("c")
        assert a.login(user_a)["response"]["code"] == 200
        assert b.login(user_b)["response"]["code"] == 200
        listed = wait_until(lambda: (d := ours.get("/user/list", appID=101)["data"])
                            and d["userCount"] == 5 and d, timeout=10,
                            what="the original node's users in /user/list")
        assert set(listed["userList"]) == {user_a, user_b, *original_node.users[101]}

        # Five in the room, but the bound counts 2 (this server's nodes only): b's enter
        # went out, to a and to the original node.
        enter = a.push("enter")
        assert enter["response"]["data"]["from"] == user_b
        wait_until(lambda: any(r.cms == "enter" and r.userID == user_b
                               for r in original_node.room_pushes),
                   timeout=10, what="b's enter relayed to the original node")
        assert not redis_server.client().hexists("acc:hash:room:size:101", original_node.addr)

        # A third user of ours passes the bound: no enter any more.
        assert c.login(user_c)["response"]["code"] == 200
        assert [f for f in a.flush() if f["cmd"] == "enter"] == []


def test_send_msg_to_a_user_not_on_the_called_node_answers_1005(make_cluster_node):
    """docs/PROTOCOL.md, deliberate differences: the original answers 1004 here."""
    grpc, pb, pb_grpc = grpc_api()

    ours = make_cluster_node()
    channel = grpc.insecure_channel(f"127.0.0.1:{ours.rpc_port}")
    try:
        rsp = pb_grpc.AccServerStub(channel).SendMsg(
            pb.SendMsgReq(seq="s-1", appID=101, userID=unique_id("nobody"), cms="msg",
                          type="text", msg="lost"), timeout=5)
    finally:
        channel.close()
    assert rsp.retCode == 1005


# -- what our nodes make of the original's answers ------------------------------------------------

def test_a_user_on_an_original_node_is_online(make_cluster_node, original_node):
    ours = make_cluster_node()
    user = original_node.users[101][0]
    assert ours.get("/user/online", appID=101, userID=user)["data"]["online"] is True
    assert ours.get("/user/online", userID=user)["data"]["online"] is True
    assert ours.get("/user/online", appID=101, userID=unique_id("nobody"))["data"]["online"] is False


def test_a_user_who_left_an_original_node_is_offline(make_cluster_node, original_node):
    ours = make_cluster_node()
    user = original_node.users[101].pop()  # gone from the node, its record not yet rewritten
    assert ours.get("/user/online", appID=101, userID=user)["data"]["online"] is False


def test_a_message_an_original_node_relays_is_pushed_as_text(make_cluster_node, redis_server):
    grpc, pb, pb_grpc = grpc_api()

    ours = make_cluster_node()
    with Clients() as connect:
        client = connect(ours)
        user = unique_id("ours")
        assert client.login(user, 101)["response"]["code"] == 200
        with grpc.insecure_channel(f"127.0.0.1:{ours.rpc_port}") as channel:
            stub = pb_grpc.AccServerStub(channel)
            # The original's client fills ``type`` with "msg"; its server pushes "text".
            rsp = stub.SendMsg(pb.SendMsgReq(seq="o-1", appID=101, userID=user, cms="msg",
                                             type="msg", msg="from the original"), timeout=5)
            assert rsp.retCode == 200
            data = client.push("msg")["response"]["data"]
            assert (data["type"], data["msg"]) == ("text", "from the original")
            rsp = stub.SendMsgAll(pb.SendMsgAllReq(seq="o-2", appID=101, userID="someone",
                                                   cms="msg", type="", msg="to all"), timeout=5)
            assert rsp.retCode == 200
            data = client.push("msg")["response"]["data"]
            assert (data["type"], data["msg"]) == ("text", "to all")


# -- rooms in a mixed cluster (docs/PROTOCOL.md, "Rooms, history and recovery": a node of the
# original answers UNIMPLEMENTED to Publish and RoomUsers) ---------------------------------------

def _our_users_known(ours, original_node, count):
    """Wait until our node lists the original node's users and ``count`` of its own."""
    want = count + len(original_node.users[101])
    wait_until(lambda: ours.get("/user/list", appID=101)["data"]["userCount"] == want,
               timeout=10, what="the original node's users in /user/list")


def _room_users(node, room):
    answer = node.get("/room/users", appID=101, room=room)
    assert answer["code"] == 200, answer
    assert "unreachableNodes" not in answer["data"], answer
    assert answer["data"]["userCount"] == len(answer["data"]["userList"]), answer
    return sorted(answer["data"]["userList"])


def _msg_data(client, text):
    """The next pushed msg's data, which must be ``text``."""
    data = client.push("msg")["response"]["data"]
    assert data["msg"] == text, data
    return data


def _relayed(original_node, text):
    return [r for r in original_node.room_pushes if r.msg == text]


@pytest.mark.parametrize("first", ["named room", "app room"])
def test_a_named_rooms_messages_never_reach_an_original_node_its_app_room_does(
        make_cluster_node, original_node, first):
    """Whichever kind of message first finds out that the peer is an original node."""
    ours = make_cluster_node()
    room = unique_id("named")
    with Clients() as connect:
        c1, c2 = connect(ours), connect(ours)
        user1, user2 = unique_id("c1"), unique_id("c2")
        assert c1.login(user1)["response"]["code"] == 200
        assert c2.login(user2)["response"]["code"] == 200
        _our_users_known(ours, original_node, 2)
        wait_until(lambda: {r.userID for r in original_node.room_pushes if r.cms == "enter"}
                   >= {user1, user2}, timeout=10, what="our logins' enter at the original")
        for client in (c1, c2):
            answer = client.request("join", {"room": room})
            assert answer["response"]["code"] == 200, answer

        def named():
            answer = c1.request("publish", {"room": room, "msg": "named over ws"})
            assert answer["response"]["code"] == 200, answer
            assert answer["response"]["data"]["offset"] == 1
            _msg_data(c2, "named over ws")
            answer = ours.post("/room/publish", appID=101, room=room, userID="backend",
                               message="named over http")
            assert answer["code"] == 200 and answer["data"]["offset"] == 2, answer
            assert "unreachableNodes" not in answer["data"], answer
            assert "sendResultsErr" not in answer["data"], answer
            for client in (c1, c2):
                _msg_data(client, "named over http")

        def app_room():
            answer = ours.post("/user/sendMessageAll", appID=101, userID=user1,
                               message="to everyone", msgID=unique_id("m"))
            assert answer["code"] == 200, answer
            assert answer["data"]["sendResults"] is True, answer
            assert "sendResultsErr" not in answer["data"], answer
            offset, epoch = answer["data"]["offset"], answer["data"]["epoch"]
            assert offset >= 1 and epoch, answer
            # the original node got it as the original's call, once
            relayed = _relayed(original_node, "to everyone")
            assert len(relayed) == 1, relayed
            assert (relayed[0].appID, relayed[0].userID, relayed[0].cms) == (101, user1, "msg")
            data = _msg_data(c2, "to everyone")  # c1 is its sender's user
            assert (data["room"], data["offset"], data["epoch"]) == ("", offset, epoch)
            # the app room published over WebSocket reaches it as well
            answer = c2.request("publish", {"room": "", "msg": "app room over ws"})
            assert answer["response"]["code"] == 200, answer
            assert answer["response"]["data"]["offset"] == offset + 1
            relayed = _relayed(original_node, "app room over ws")
            assert [(r.userID, r.cms) for r in relayed] == [(user2, "msg")]
            _msg_data(c1, "app room over ws")

        # /room/users before and after the peer is known as an original node
        assert _room_users(ours, room) == sorted([user1, user2])
        for step in ((named, app_room) if first == "named room" else (app_room, named)):
            step()
        assert _room_users(ours, room) == sorted([user1, user2])
        assert _room_users(ours, "") == sorted([user1, user2, *original_node.users[101]])

        # nothing of the named room went to the original node: neither its messages nor
        # the enters of its joins (one enter per user: the login's, in the app room)
        assert _relayed(original_node, "named over ws") == []
        assert _relayed(original_node, "named over http") == []
        enters = [r.userID for r in original_node.room_pushes if r.cms == "enter"]
        assert sorted(enters) == sorted([user1, user2]), enters
        for client in (c1, c2):
            assert [f for f in client.flush() if f.get("cmd") == "msg"] == []
