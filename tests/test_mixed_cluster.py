"""A cluster with a node of the original system in it (docs/PROTOCOL.md, "Nodes of the
original in the cluster"). The original node is played by a gRPC AccServer in this process
that does what the original's does: it registers in acc:hash:servers, writes its users'
records the original's way, answers the four calls, and never writes the room sizes that
this server's presence bound reads."""
import json
import time

import pytest

from support import Clients, unique_id, wait_until


class OriginalNode:
    """The cluster-facing side of one node of the original, with ``users`` in each room."""

    def __init__(self, redis_client, port, users):
        from imserver.cluster.grpc_relay import enable_gevent
        enable_gevent()  # before any gRPC object exists in this (gevent-patched) process
        from concurrent import futures

        import grpc
        from imserver.cluster.pb import accserver_pb2 as pb
        from imserver.cluster.pb import accserver_pb2_grpc as pb_grpc

        self.addr = f"127.0.0.1:{port}"
        self.users = users  # appID -> [userID]
        self.room_pushes = []  # SendMsgAll requests received
        node = self

        class Servicer(pb_grpc.AccServerServicer):
            def QueryUsersOnline(self, request, context):
                return pb.QueryUsersOnlineRsp(
                    retCode=200, online=request.userID in node.users.get(request.appID, ()))

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
        now = int(time.time())
        redis_client.hset("acc:hash:servers", self.addr, str(now))
        for app_id, user_ids in users.items():
            for user_id in user_ids:
                # The original writes the client's "ip:port" into clientIp, clientPort empty.
                redis_client.set(f"acc:user:online:{app_id}_{user_id}", json.dumps({
                    "accIp": "127.0.0.1", "accPort": str(port), "appID": app_id,
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
    from imserver.cluster.grpc_relay import enable_gevent
    enable_gevent()
    import grpc
    from imserver.cluster.pb import accserver_pb2 as pb
    from imserver.cluster.pb import accserver_pb2_grpc as pb_grpc

    ours = make_cluster_node()
    channel = grpc.insecure_channel(f"127.0.0.1:{ours.rpc_port}")
    try:
        rsp = pb_grpc.AccServerStub(channel).SendMsg(
            pb.SendMsgReq(seq="s-1", appID=101, userID=unique_id("nobody"), cms="msg",
                          type="text", msg="lost"), timeout=5)
    finally:
        channel.close()
    assert rsp.retCode == 1005
