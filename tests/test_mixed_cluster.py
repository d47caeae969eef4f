"""A cluster shared with nodes of the original system (gowebsocket). No original node runs
here, so a peer in this process answers gRPC exactly as one does: its QueryUsersOnline
replies keep retCode 0 (its server writes the code into the request), its user records use
its own key spelling, and the messages it relays with SendMsg carry the "msg" its client
puts in ``type``. Our node is a real process on a real redis-server."""
import json
import time
from concurrent import futures

import pytest

from support import free_port, unique_id, wait_until


class OriginalNode:
    """An original node as its peers see it: registered in Redis, its users' records
    there, and its gRPC AccServer on a loopback port."""

    def __init__(self, redis_client):
        from imserver.cluster.grpc_relay import enable_gevent
        enable_gevent()  # before any gRPC object exists in this (gevent-patched) process
        import grpc
        from imserver.cluster.pb import accserver_pb2 as pb
        from imserver.cluster.pb import accserver_pb2_grpc as pb_grpc

        self.redis = redis_client
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.users = set()
        users = self.users

        class Servicer(pb_grpc.AccServerServicer):
            def QueryUsersOnline(self, request, context):
                return pb.QueryUsersOnlineRsp(
                    retCode=0, online=(request.appID, request.userID) in users)

            def GetUserList(self, request, context):
                return pb.GetUserListRsp(retCode=200, userID=sorted(
                    u for a, u in users if a == request.appID))

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_AccServerServicer_to_server(Servicer(), self.server)
        assert self.server.add_insecure_port(self.addr)
        self.server.start()
        self.redis.hset("acc:hash:servers", self.addr, str(int(time.time())))

    def log_in(self, app_id: int, user_id: str) -> None:
        now = int(time.time())
        record = {"accIp": "127.0.0.1", "accPort": str(self.port), "appId": app_id,
                  "userId": user_id, "clientIp": "127.0.0.1", "clientPort": "50000",
                  "loginTime": now, "heartbeatTime": now, "logOutTime": 0, "qua": "",
                  "deviceInfo": "", "isLogoff": False}
        self.redis.set(f"acc:user:online:{app_id}_{user_id}", json.dumps(record), ex=86400)
        self.users.add((app_id, user_id))

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def original(redis_server):
    node = OriginalNode(redis_server.client())
    yield node
    node.stop()


@pytest.fixture
def ours(start_cluster_node, original):
    return start_cluster_node()


def test_a_user_on_an_original_node_is_online(ours, original):
    user = unique_id("orig")
    original.log_in(101, user)
    assert ours.get("/user/online", appID=101, userID=user)["data"]["online"] is True
    assert ours.get("/user/online", userID=user)["data"]["online"] is True
    assert ours.get("/user/online", appID=101, userID=unique_id("nobody"))["data"]["online"] is False
    assert user in ours.get("/user/list", appID=101)["data"]["userList"]


def test_a_user_who_left_an_original_node_is_offline(ours, original):
    user = unique_id("orig")
    original.log_in(101, user)
    original.users.discard((101, user))  # gone from the node, its record not yet rewritten
    assert ours.get("/user/online", appID=101, userID=user)["data"]["online"] is False


def test_a_message_an_original_node_relays_is_pushed_as_text(ours, original):
    import grpc
    from imserver.cluster.pb import accserver_pb2 as pb
    from imserver.cluster.pb import accserver_pb2_grpc as pb_grpc

    client = ours.client(timeout=5)
    try:
        user = unique_id("ours")
        assert client.login(user, 101)["response"]["code"] == 200
        record = wait_until(lambda: original.redis.get(f"acc:user:online:101_{user}"),
                            what="our user's record")
        port = int(json.loads(record)["accPort"])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AccServerStub(channel)
            # The original's client fills ``type`` with "msg"; its server pushes "text".
            rsp = stub.SendMsg(pb.SendMsgReq(seq="o-1", appID=101, userID=user, cms="msg",
                                             type="msg", msg="from the original"), timeout=5)
            assert rsp.retCode == 200
            frame = client.push("msg")
            assert frame["response"]["data"]["type"] == "text"
            assert frame["response"]["data"]["msg"] == "from the original"
            rsp = stub.SendMsgAll(pb.SendMsgAllReq(seq="o-2", appID=101, userID="someone",
                                                   cms="msg", type="", msg="to all"), timeout=5)
            assert rsp.retCode == 200
            frame = client.push("msg")
            assert (frame["response"]["data"]["type"], frame["response"]["data"]["msg"]) == (
                "text", "to all")
    finally:
        client.close()
