"""A real cluster, end to end: one redis-server, a gunicorn of two workers (two nodes, rpc
ports rpcPort and rpcPort + 1) and a separate node, all started by the tests on free
loopback ports. Users on different nodes see each other's presence and messages, the HTTP
API answers for the whole cluster, Redis holds what PROTOCOL.md ("Cluster store") says, and
the gRPC service answers a plain grpcio client by its full method names."""
import json
import os
import subprocess
import sys
import time

import pytest
import websocket

from cluster_support import RedisProcess
from support import ROOT, NodeProcess, grpc_api, push, unique_id, wait_until

SERVERS_KEY = "acc:hash:servers"
RECORD_FIELDS = {"accIp", "accPort", "appID", "userID", "clientIp", "clientPort", "loginTime",
                 "heartbeatTime", "logOutTime", "qua", "deviceInfo", "isLogoff"}
ENTER, EXIT = "哈喽~", "用户已经离开~"
DAY, HALF_DAY = 24 * 3600, 12 * 3600


def online_record(redis_client, app_id, user_id):
    """The user's record in Redis (acc:user:online:<appID>_<userID>) as a dict, or None."""
    raw = redis_client.get(f"acc:user:online:{app_id}_{user_id}")
    return None if raw is None else json.loads(raw)


class Cluster:
    def __init__(self, redis_proc, duo, solo):
        self.redis_proc = redis_proc
        self.redis = redis_proc.client()
        self.duo = duo  # two gunicorn workers: nodes on duo.rpc_port and duo.rpc_port + 1
        self.solo = solo
        self.clients = []

    @property
    def node_fields(self):
        return {f"127.0.0.1:{p}" for p in (self.duo.rpc_port, self.duo.rpc_port + 1,
                                            self.solo.rpc_port)}

    def record(self, app_id, user_id):
        return online_record(self.redis, app_id, user_id)

    def connect(self, node):
        client = node.client(timeout=5)
        self.clients.append(client)
        return client

    def login(self, node, app_id, prefix="u"):
        """A new user logged in on ``node``: (client, userID, rpc port of its node)."""
        client = self.connect(node)
        user = unique_id(prefix)
        assert client.login(user, app_id)["response"]["code"] == 200
        return client, user, int(self.record(app_id, user)["accPort"])

    def on_both_workers(self, app_id, attempts=40):
        """Users logged in on the two-worker node until one sits on each worker:
        {rpc port: (client, userID)} in the order of the logins. Surplus users leave again."""
        found = {}
        for _ in range(attempts):
            client, user, port = self.login(self.duo, app_id, "w")
            if port in found:
                client.close()
                continue
            found[port] = (client, user)
            if len(found) == 2:
                assert set(found) == {self.duo.rpc_port, self.duo.rpc_port + 1}
                return found
        pytest.fail(f"{attempts} connections to the two-worker node all landed on rpc port(s) "
                    f"{sorted(found)}")

    def close_clients(self):
        for client in self.clients:
            client.close()
        self.clients.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, free_rpc_ports):
    workdir = tmp_path_factory.mktemp("cluster")
    redis_proc = RedisProcess(workdir).start()
    base = {"advertiseAddr": "127.0.0.1", "reportInterval": 1}
    nodes = []
    try:
        rpc = free_rpc_ports(2)
        duo = NodeProcess(workdir, {"app": dict(base, workers=2, rpcPort=rpc),
                                    "redis": {"addr": redis_proc.addr}}, name="duo")
        duo.rpc_port = rpc
        nodes.append(duo.start())
        rpc = free_rpc_ports(1)
        solo = NodeProcess(workdir, {"app": dict(base, rpcPort=rpc),
                                     "redis": {"addr": redis_proc.addr}}, name="solo")
        solo.rpc_port = rpc
        nodes.append(solo.start())
        c = Cluster(redis_proc, duo, solo)
        wait_until(lambda: set(c.redis.hkeys(SERVERS_KEY)) >= c.node_fields, timeout=15,
                   what="all three nodes registered")
        yield c
    finally:
        for proc in nodes:
            proc.stop()
        redis_proc.stop()


@pytest.fixture
def cl(cluster):
    """The module's cluster; the clients a test opens are closed after it."""
    yield cluster
    cluster.close_clients()


def wait_push(client, cmd, sender, timeout=5.0):
    """The next pushed frame with this cmd from this sender (others are kept)."""
    deadline = time.time() + timeout
    while True:
        for i, frame in enumerate(client.pushes):
            if frame.get("cmd") == cmd and frame["response"]["data"]["from"] == sender:
                return client.pushes.pop(i)
        left = deadline - time.time()
        if left <= 0:
            raise AssertionError(f"no {cmd!r} from {sender!r} within {timeout}s; "
                                 f"pushes seen: {client.pushes}")
        try:
            frame = client.recv_frame(left)
        except websocket.WebSocketTimeoutException:
            continue
        if frame is None:
            raise AssertionError(f"closed with {client.close_code} while waiting for {cmd!r}")
        client.pushes.append(frame)


def no_push_from(client, sender, wait=0.5):
    """True if nothing from ``sender`` arrives within ``wait`` seconds."""
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            frame = client.recv_frame(max(0.01, deadline - time.time()))
        except websocket.WebSocketTimeoutException:
            break
        if frame is None:
            break
        client.pushes.append(frame)
    return not any(f["response"]["data"].get("from") == sender for f in client.pushes
                   if f.get("cmd") in ("msg", "enter", "exit"))


# -- registry ------------------------------------------------------------------------------

def test_every_node_reports_in_the_servers_hash(cl):
    servers = cl.redis.hgetall(SERVERS_KEY)
    assert set(servers) >= cl.node_fields, servers
    now = time.time()
    for field in cl.node_fields:
        assert servers[field].isdigit(), servers  # unix seconds, a whole number
        assert abs(int(servers[field]) - now) < 5, servers


# -- users on three nodes --------------------------------------------------------------------

def test_presence_and_messages_cross_every_node(cl):
    app = 102
    # in the order of their logins: a first, on one worker, then b on the other
    (port_a, (a, user_a)), (port_b, (b, user_b)) = cl.on_both_workers(app).items()
    c, user_c, port_c = cl.login(cl.solo, app, "c")
    assert len({port_a, port_b, port_c}) == 3

    # enter: the earlier users hear of the later ones, across both workers and nodes
    wait_push(a, "enter", user_b)
    for client in (a, b):
        frame = wait_push(client, "enter", user_c)
        assert frame["response"]["data"]["msg"] == ENTER

    # a room message from each node reaches the users of the others, not its sender
    for sender_client, sender, node in ((a, user_a, cl.duo), (c, user_c, cl.solo)):
        text = f"from {sender} 你好"
        answer = node.post("/user/sendMessageAll", appID=app, userID=sender,
                           msgID=unique_id("all"), message=text)
        assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
        for client, user in ((a, user_a), (b, user_b), (c, user_c)):
            if user == sender:
                continue
            frame = wait_push(client, "msg", sender)
            assert frame["response"]["data"]["msg"] == text
        assert no_push_from(sender_client, sender, wait=0.3)

    # exit: the user of worker b leaves; the others on worker a and the other node hear it
    b.close()
    for client in (a, c):
        assert wait_push(client, "exit", user_b)["response"]["data"]["msg"] == EXIT


def test_user_list_on_any_node_lists_every_user_once(cl):
    app = 103
    users = [user for _, user in cl.on_both_workers(app).values()]
    users.append(cl.login(cl.solo, app, "c")[1])
    # HTTP requests to the two-worker node land on either worker: ask a few times
    for node in (cl.duo, cl.duo, cl.duo, cl.duo, cl.solo):
        answer = node.get("/user/list", appID=app)
        assert answer["code"] == 200, answer
        assert sorted(answer["data"]["userList"]) == sorted(users), answer
        assert answer["data"]["userCount"] == len(users)


def test_send_message_reaches_a_user_on_another_node(cl):
    app = 104
    workers = cl.on_both_workers(app)
    c, user_c, _ = cl.login(cl.solo, app, "c")
    # from the separate node to each worker, and from the two-worker node to the separate one
    targets = [(cl.solo, client, user) for client, user in workers.values()]
    targets.append((cl.duo, c, user_c))
    for node, client, user in targets:
        msg_id = unique_id("m")
        answer = node.post("/user/sendMessage", appID=app, userID=user, msgID=msg_id,
                           message="just for you", **{"from": "backend"})
        assert answer == {"code": 200, "msg": "Success", "data": {"sendResults": True}}
        frame = wait_push(client, "msg", "backend")
        assert frame["seq"] == msg_id
        assert frame == push(msg_id, "msg", "just for you", "backend")


def test_a_repeated_msg_id_is_delivered_once_in_the_cluster(cl):
    app = 101
    c, user_c, _ = cl.login(cl.solo, app, "c")
    msg_id = unique_id("dup")
    first = cl.duo.post("/user/sendMessage", appID=app, userID=user_c, msgID=msg_id,
                        message="once", **{"from": "backend"})
    assert first["code"] == 200 and first["data"]["sendResults"] is True, first
    second = cl.solo.post("/user/sendMessage", appID=app, userID=user_c, msgID=msg_id,
                          message="once", **{"from": "backend"})
    assert second["code"] == 200 and second["data"].get("duplicate") is True, second
    assert wait_push(c, "msg", "backend")["seq"] == msg_id
    assert no_push_from(c, "backend", wait=0.5), c.pushes

    key = f"acc:submit:again:seq:{msg_id}"
    assert cl.redis.get(key) == "1"
    assert HALF_DAY - 400 < cl.redis.ttl(key) <= HALF_DAY


def test_online_answers_for_users_on_other_nodes(cl):
    app = 101
    workers = cl.on_both_workers(app)
    _, user_c, _ = cl.login(cl.solo, app, "c")
    for _, user in workers.values():
        for params in ({"appID": app}, {}):  # without appID: every allowed room
            answer = cl.solo.get("/user/online", userID=user, **params)
            assert answer["data"] == {"online": True, "userID": user}, answer
    for _ in range(3):  # either worker answers
        assert cl.duo.get("/user/online", appID=app, userID=user_c)["data"]["online"] is True
    assert cl.duo.get("/user/online", appID=102, userID=user_c)["data"]["online"] is False
    nobody = unique_id("nobody")
    assert cl.solo.get("/user/online", appID=app, userID=nobody)["data"] == {
        "online": False, "userID": nobody}


# -- what Redis holds ------------------------------------------------------------------------

def test_user_record_follows_the_protocol(cl):
    app = 103
    before = int(time.time())
    client, user, _ = cl.login(cl.solo, app, "r")
    key = f"acc:user:online:{app}_{user}"
    rec = cl.record(app, user)
    assert set(rec) == RECORD_FIELDS, rec
    assert rec["accIp"] == "127.0.0.1"
    assert rec["accPort"] == str(cl.solo.rpc_port)  # a string, as the original writes it
    assert rec["appID"] == app and rec["userID"] == user
    assert rec["clientIp"] == "127.0.0.1" and str(rec["clientPort"]).isdigit()
    assert before <= rec["loginTime"] <= time.time() + 1
    assert rec["heartbeatTime"] == rec["loginTime"]
    assert rec["logOutTime"] == 0 and rec["isLogoff"] is False
    assert rec["qua"] == "" and rec["deviceInfo"] == ""
    assert DAY - 400 < cl.redis.ttl(key) <= DAY

    # a heartbeat writes the record again: a fresh heartbeatTime and a fresh 24 h life
    stale = dict(rec, heartbeatTime=rec["heartbeatTime"] - 100)
    cl.redis.set(key, json.dumps(stale))  # no TTL now
    assert client.request("heartbeat", {})["response"]["code"] == 200
    rec = wait_until(lambda: (r := cl.record(app, user)) and r["heartbeatTime"] >= before and r,
                     timeout=3, what="heartbeatTime rewritten")
    assert rec["heartbeatTime"] <= time.time() + 1 and rec["isLogoff"] is False
    assert DAY - 400 < cl.redis.ttl(key) <= DAY

    # logout: the record stays, marked logged off, with the time of the logout
    client.close()
    rec = wait_until(lambda: (r := cl.record(app, user)) and r["isLogoff"] and r,
                     timeout=5, what="isLogoff true after the logout")
    assert set(rec) == RECORD_FIELDS
    assert before <= rec["logOutTime"] <= time.time() + 1
    assert DAY - 400 < cl.redis.ttl(key) <= DAY


# -- gRPC, as another implementation would call it ---------------------------------------------

def test_acc_server_answers_grpc_calls_by_full_method_names(cl):
    grpc, pb, _ = grpc_api()

    app = 104
    a, user_a, _ = cl.login(cl.solo, app, "g")
    b, user_b, _ = cl.login(cl.solo, app, "g")
    wait_push(a, "enter", user_b)
    channel = grpc.insecure_channel(f"127.0.0.1:{cl.solo.rpc_port}")

    def call(method, request, reply_type):
        rpc = channel.unary_unary(f"/protobuf.AccServer/{method}",
                                  request_serializer=type(request).SerializeToString,
                                  response_deserializer=reply_type.FromString)
        return rpc(request, timeout=5)

    try:
        rsp = call("GetUserList", pb.GetUserListReq(appID=app), pb.GetUserListRsp)
        assert rsp.retCode == 200 and sorted(rsp.userID) == sorted([user_a, user_b])

        rsp = call("QueryUsersOnline", pb.QueryUsersOnlineReq(appID=app, userID=user_a),
                   pb.QueryUsersOnlineRsp)
        assert rsp.retCode == 200 and rsp.online is True
        rsp = call("QueryUsersOnline", pb.QueryUsersOnlineReq(appID=app, userID="nobody"),
                   pb.QueryUsersOnlineRsp)
        assert rsp.online is False

        rsp = call("SendMsg", pb.SendMsgReq(seq="rpc-1", appID=app, userID=user_a, cms="msg",
                                            type="text", msg="over grpc"), pb.SendMsgRsp)
        assert rsp.retCode == 200 and rsp.sendMsgID == "rpc-1"
        frame = wait_push(a, "msg", "")
        assert frame["seq"] == "rpc-1" and frame["response"]["data"]["msg"] == "over grpc"
        # cms is the pushed frame's cmd
        rsp = call("SendMsg", pb.SendMsgReq(seq="rpc-2", appID=app, userID=user_a, cms="enter",
                                            type="text", msg=ENTER), pb.SendMsgRsp)
        assert rsp.retCode == 200
        frame = wait_push(a, "enter", "")
        assert frame["seq"] == "rpc-2" and frame["cmd"] == "enter"
        rsp = call("SendMsg", pb.SendMsgReq(seq="rpc-3", appID=app, userID="nobody", cms="msg",
                                            type="text", msg="lost"), pb.SendMsgRsp)
        assert rsp.retCode != 200

        rsp = call("SendMsgAll", pb.SendMsgAllReq(seq="rpc-4", appID=app, userID=user_a,
                                                  cms="msg", type="text", msg="to the room"),
                   pb.SendMsgAllRsp)
        assert rsp.retCode == 200 and rsp.sendMsgID == "rpc-4"
        frame = wait_push(b, "msg", user_a)
        assert frame["seq"] == "rpc-4" and frame["response"]["data"]["msg"] == "to the room"
        assert no_push_from(a, user_a, wait=0.3)  # the sender is left out
    finally:
        channel.close()


# -- the embedded mode ----------------------------------------------------------------------

def test_embedded_mode_refuses_several_workers(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    check = [sys.executable, "-m", "imserver", "--check", "--config", str(config)]

    proc = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env=dict(env, IMSERVER_APP_WORKERS="2"))
    assert proc.returncode == 2, proc
    assert "app.workers > 1 needs cluster mode (set redis.addr)" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    # with a Redis configured the same setting is fine (--check does not connect)
    proc = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env=dict(env, IMSERVER_APP_WORKERS="2",
                                   IMSERVER_REDIS_ADDR="127.0.0.1:6379"))
    assert proc.returncode == 0, proc
    assert "app.workers: 2" in proc.stdout
