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
