"""The cluster on a bad day, with real processes: Redis restarts empty under nodes that report
only every 30 s, a peer freezes (SIGSTOP) and thaws, Redis freezes. Every wait is a bounded
poll; the timed answers are fail-fast bounds, not benchmarks."""
import os
import signal
import time

import pytest

from support import Clients, unique_id, wait_until
from test_cluster import online_record, wait_push

SERVERS_KEY = "acc:hash:servers"


@pytest.fixture
def connect():
    with Clients() as clients:
        yield lambda node: clients(node, timeout=5)


def login(connect, node, app=101, prefix="u"):
    client = connect(node)
    user = unique_id(prefix)
    assert client.login(user, app)["response"]["code"] == 200
    return client, user


def timed(fn, *args, **kwargs):
    started = time.monotonic()
    answer = fn(*args, **kwargs)
    return answer, time.monotonic() - started


def freeze(node):
    pids = [node.pid] + node.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids):
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


# -- Redis restarted empty ------------------------------------------------------------------------

def test_redis_restarted_empty_loses_no_broadcast_and_no_user(start_cluster_node, redis_server,
                                                              connect):
    slow = {"app": {"reportInterval": 30}}  # the default: no report comes to the rescue
    a_node = start_cluster_node(slow, name="a")
    b_node = start_cluster_node(slow, name="b")
    a1, user_a1 = login(connect, a_node, prefix="a1")
    b1, user_b1 = login(connect, b_node, prefix="b1")
    wait_push(a1, "enter", user_b1)
    redis = redis_server.client()

    redis_server.stop()
    redis_server.start()  # empty: no persistence

    claimed_delivered, online_answers = [], []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        msg_id = unique_id("m")
        answer = a_node.post("/user/sendMessageAll", appID=101, userID=user_a1, msgID=msg_id,
                             message=msg_id)
        data = answer.get("data") or {}
        if answer["code"] == 200 and data.get("sendResults") and not data.get("sendResultsErr"):
            claimed_delivered.append(msg_id)
        answer = a_node.get("/user/online", appID=101, userID=user_b1)
        if answer["code"] == 200:
            online_answers.append(answer["data"]["online"])
        time.sleep(0.3)

    # Whatever a node answered as delivered everywhere reached the other node's user.
    received = set()
    wait_until(lambda: received.update(
        p["response"]["data"]["msg"] for p in b1.flush(timeout=0.5) if p["cmd"] == "msg")
        or set(claimed_delivered) <= received, timeout=10,
        what="every broadcast answered as delivered reached node B")
    assert claimed_delivered, "no broadcast was answered at all"
    # A user who stayed connected was never reported offline.
    assert online_answers and all(online_answers), online_answers
    # Both nodes registered again and rewrote their users without waiting for a report.
    assert {f"127.0.0.1:{a_node.rpc_port}", f"127.0.0.1:{b_node.rpc_port}"} <= set(
        redis.hkeys(SERVERS_KEY))
    assert online_record(redis, 101, user_b1)["accPort"] == str(b_node.rpc_port)


# -- a frozen peer --------------------------------------------------------------------------------

def test_a_frozen_peer_is_skipped_then_probed_back(start_cluster_node, redis_server, connect):
    a_node = start_cluster_node({"app": {"rpcTimeout": 1}}, name="a")
    b_node = start_cluster_node({"app": {"rpcTimeout": 1}}, name="b")
    a1, user_a1 = login(connect, a_node, prefix="a1")
    b1, user_b1 = login(connect, b_node, prefix="b1")
    wait_push(a1, "enter", user_b1)
    b1.flush(timeout=0.3)
    peer_b = f"127.0.0.1:{b_node.rpc_port}"

    pids = freeze(b_node)
    try:
        took = []
        for i in range(6):
            answer, seconds = timed(a_node.post, "/user/sendMessageAll", appID=101,
                                    userID=user_a1, msgID=unique_id("f"), message=f"frozen {i}")
            assert answer["data"]["unreachableNodes"] == [peer_b], answer
            took.append(seconds)
        assert all(t < 0.5 for t in took[3:]), took  # suspect: skipped at once
        assert a_node.state()["suspectNodes"] == [peer_b]
    finally:
        thaw(pids)
    # Thawed, it answers the next probe and is a peer again.
    wait_until(lambda: a_node.post("/user/sendMessageAll", appID=101, userID=user_a1,
                                   msgID=unique_id("t"), message="thawed")["data"].get(
        "unreachableNodes") is None, timeout=10, what="node B reached again")
    assert a_node.state()["suspectNodes"] == []
    wait_until(lambda: any(p["response"]["data"]["msg"] == "thawed"
                           for p in b1.flush(timeout=0.5) if p["cmd"] == "msg"),
               timeout=5, what="the message after the thaw reached node B's user")


# -- a frozen Redis -------------------------------------------------------------------------------

def test_a_frozen_redis_costs_each_call_at_most_its_timeout(start_cluster_node, redis_server,
                                                           connect):
    node = start_cluster_node({"redis": {"timeout": 1}})
    a1, user_a1 = login(connect, node, prefix="a1")
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        calls = {
            "online": lambda: node.get("/user/online", appID=101, userID=unique_id("x")),
            "list": lambda: node.get("/user/list", appID=101),
            "sendMessage": lambda: node.post("/user/sendMessage", appID=101, userID=user_a1,
                                             msgID=unique_id("s"), message="hi"),
            "sendMessageAll": lambda: node.post("/user/sendMessageAll", appID=101,
                                                userID=user_a1, msgID=unique_id("s"),
                                                message="hi"),
            "login": lambda: connect(node).login(unique_id("n"), 101),
        }
        for round_ in range(2):
            for name, call in calls.items():
                answer, seconds = timed(call)
                assert seconds < 1.7, f"{name} (round {round_}) took {seconds:.2f}s: {answer}"
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    wait_until(lambda: node.get("/user/list", appID=101)["code"] == 200, timeout=5,
               what="the store answers again")
