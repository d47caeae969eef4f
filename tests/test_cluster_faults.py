"""The cluster when parts of it fail: Redis goes away and comes back, a peer node dies
without a word (SIGKILL), a node leaves on purpose (SIGTERM), a gunicorn worker dies and is
replaced. Every test starts its own redis-server and nodes; every wait is a bounded poll,
and answers that must come quickly are timed (a fail-fast bound, not a benchmark)."""
import os
import signal
import time

import pytest

from support import Clients, unique_id, wait_until
from test_cluster import online_record, wait_push

SERVERS_KEY = "acc:hash:servers"
FAST = 3.0  # seconds: a failing cluster-wide call must answer within this


def field(node, port=None):
    return f"127.0.0.1:{node.rpc_port if port is None else port}"


def timed(fn, *args, **kwargs):
    """fn's answer, asserting that it came within FAST seconds."""
    started = time.monotonic()
    answer = fn(*args, **kwargs)
    took = time.monotonic() - started
    assert took < FAST, f"{fn.__name__}{args} took {took:.2f}s: {answer}"
    return answer


def process_gone(pid) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def listening_ports(pid) -> "set[int]":
    """TCP ports that process ``pid`` listens on, read from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def login(connect, node, app_id, prefix="u"):
    client = connect(node)
    user = unique_id(prefix)
    assert client.login(user, app_id)["response"]["code"] == 200
    return client, user


@pytest.fixture
def connect():
    with Clients() as clients:
        yield lambda node: clients(node, timeout=5)


# -- Redis ----------------------------------------------------------------------------------

def test_redis_outage_keeps_local_chat_and_fails_fast_then_recovers(
        start_cluster_node, redis_server, connect):
    app = 101
    a_node = start_cluster_node(name="a")
    b_node = start_cluster_node(name="b")
    a1, user_a1 = login(connect, a_node, app, "a1")
    a2, user_a2 = login(connect, a_node, app, "a2")
    b1, user_b1 = login(connect, b_node, app, "b1")
    wait_push(a1, "enter", user_b1)
    redis = redis_server.client()

    redis_server.stop()

    # a message to the room cannot be stored: 1004 at once, and nobody gets it (it was not
    # accepted); the connections stay
    answer = timed(a_node.post, "/user/sendMessageAll", appID=app, userID=user_a1,
                   msgID=unique_id("m"), message="not stored")
    assert answer["code"] == 1004 and "store" in answer["detail"], answer
    assert [f for f in a2.flush() if f["cmd"] == "msg"] == []
    assert a1.request("heartbeat", {})["response"]["code"] == 200
    assert a1.request("ping", {})["response"]["data"] == "pong"

    # calls that need the whole cluster answer 1004 at once
    answer = timed(a_node.get, "/user/list", appID=app)
    assert answer["code"] == 1004, answer
    answer = timed(a_node.get, "/user/online", appID=app, userID=user_b1)
    assert answer["code"] == 1004, answer
    newcomer = connect(a_node)
    user_new = unique_id("new")
    started = time.monotonic()
    answer = newcomer.login(user_new, app)
    assert time.monotonic() - started < FAST
    assert answer["response"]["code"] == 1004, answer
    # the node's state says so from its next report on (reportInterval is 1 s)
    wait_until(lambda: timed(a_node.state)["storeHealthy"] is False, timeout=3,
               what="storeHealthy false")

    # Redis is back, empty (no persistence): the nodes register again and write their
    # users' records again, without a restart
    redis_server.start()
    wait_until(lambda: {field(a_node), field(b_node)} <= set(redis.hkeys(SERVERS_KEY)),
               timeout=5, what="both nodes registered again")
    for user, node in ((user_a1, a_node), (user_a2, a_node), (user_b1, b_node)):
        rec = wait_until(lambda: online_record(redis, app, user), timeout=5,
                         what=f"record of {user} written again")
        assert rec["accPort"] == str(node.rpc_port) and rec["isLogoff"] is False, rec
    wait_until(lambda: a_node.state()["storeHealthy"], timeout=5, what="store healthy again")
    answer = a_node.get("/user/list", appID=app)
    assert answer["code"] == 200, answer
    assert sorted(answer["data"]["userList"]) == sorted([user_a1, user_a2, user_b1])
    assert a_node.get("/user/online", appID=app, userID=user_b1)["data"]["online"] is True
    assert newcomer.login(user_new, app)["response"]["code"] == 200
    wait_push(b1, "enter", user_new)


def test_with_history_off_a_redis_outage_keeps_local_chat(start_cluster_node, redis_server,
                                                          connect):
    """Nothing to store: users of one node keep chatting while Redis is away, and the
    answer says the message stayed on this node."""
    app = 103
    a_node = start_cluster_node({"app": {"historySize": 0}}, name="a")
    a1, user_a1 = login(connect, a_node, app, "a1")
    a2, _ = login(connect, a_node, app, "a2")
    redis_server.stop()
    answer = timed(a_node.post, "/user/sendMessageAll", appID=app, userID=user_a1,
                   msgID=unique_id("m"), message="still here")
    assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
    assert "store" in answer["data"]["sendResultsErr"], answer
    assert "offset" not in answer["data"]
    assert wait_push(a2, "msg", user_a1)["response"]["data"]["msg"] == "still here"


# -- a peer dies ------------------------------------------------------------------------------

def test_a_killed_peer_fails_fast_and_drops_out(start_cluster_node, redis_server, connect):
    app = 102
    a_node = start_cluster_node(name="a")
    dead = start_cluster_node(name="dead")
    c_node = start_cluster_node(name="c")
    a1, user_a1 = login(connect, a_node, app, "a1")
    _, user_d1 = login(connect, dead, app, "d1")
    c1, user_c1 = login(connect, c_node, app, "c1")
    wait_push(a1, "enter", user_c1)
    redis = redis_server.client()
    assert field(dead) in redis.hkeys(SERVERS_KEY)

    workers = dead.worker_pids()
    assert workers, "the node's gunicorn has no worker"
    for pid in [dead.pid] + workers:  # the master first: nobody may restart the worker
        os.kill(pid, signal.SIGKILL)
    dead.proc.wait(5)
    wait_until(lambda: all(process_gone(p) for p in workers), timeout=5, what="worker gone")

    # a message to the dead node's user: 1100, quickly
    answer = timed(a_node.post, "/user/sendMessage", appID=app, userID=user_d1,
                   msgID=unique_id("m"), message="are you there?")
    assert answer["code"] == 1100, answer
    assert answer["data"]["sendResults"] is False, answer

    # a room broadcast from a surviving node still reaches the other surviving node
    answer = timed(a_node.post, "/user/sendMessageAll", appID=app, userID=user_a1,
                   msgID=unique_id("m"), message="to everyone left")
    assert answer["code"] == 200, answer
    assert wait_push(c1, "msg", user_a1)["response"]["data"]["msg"] == "to everyone left"
    answer = timed(c_node.post, "/user/sendMessageAll", appID=app, userID=user_c1,
                   msgID=unique_id("m"), message="me too")
    assert answer["code"] == 200, answer
    assert wait_push(a1, "msg", user_c1)["response"]["data"]["msg"] == "me too"

    # the dead node leaves the registry
    wait_until(lambda: field(dead) not in redis.hkeys(SERVERS_KEY), timeout=5,
               what="the dead node out of acc:hash:servers")
    assert {field(a_node), field(c_node)} <= set(redis.hkeys(SERVERS_KEY))
    # and its users are no longer online, though their records look fresh
    answer = timed(a_node.get, "/user/online", appID=app, userID=user_d1)
    assert answer["data"]["online"] is False, answer

    # the list works, without the dead node's users
    for node in (a_node, c_node):
        answer = timed(node.get, "/user/list", appID=app)
        assert answer["code"] == 200, answer
        assert sorted(answer["data"]["userList"]) == sorted([user_a1, user_c1]), answer

    # failed calls leave nothing behind on the survivor
    before = a_node.state(debug=True)["greenlets"]
    for _ in range(5):
        answer = timed(a_node.post, "/user/sendMessage", appID=app, userID=user_d1,
                       msgID=unique_id("m"), message="still there?")
        assert answer["code"] in (200, 1100), answer
        assert answer["data"]["sendResults"] is False, answer
        assert timed(a_node.get, "/user/list", appID=app)["code"] == 200
    state = a_node.state(debug=True)
    after = state["greenlets"]
    assert state["storeHealthy"] is True and state["connections"] == 1, state
    assert after["readers"] == before["readers"] == 1 and after["writers"] == 0, (before, after)
    assert after["total"] <= before["total"] + 2, (before, after)


# -- a node leaves on purpose -------------------------------------------------------------------

def test_sigterm_unregisters_at_once_and_closes_clients_with_1001(
        start_cluster_node, redis_server, connect):
    drain_window = 1  # closes are spread over it; gunicorn waits drainWindow + 10 s at most
    node = start_cluster_node({"app": {"drainWindow": drain_window}}, name="leaving")
    client, user = login(connect, node, 101)
    redis = redis_server.client()
    assert field(node) in redis.hkeys(SERVERS_KEY)

    node.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: field(node) not in redis.hkeys(SERVERS_KEY), timeout=2,
               what="the node out of acc:hash:servers")
    code, _ = client.wait_closed(timeout=drain_window + 3)
    assert code == 1001
    assert node.proc.wait(drain_window + 10) == 0
    assert online_record(redis, 101, user)["isLogoff"] is True


# -- a worker dies inside a gunicorn -----------------------------------------------------------

def test_a_killed_worker_comes_back_on_its_rpc_port(start_cluster_node, redis_server, connect):
    node = start_cluster_node(workers=2, name="duo")
    rpc = node.rpc_port
    redis = redis_server.client()
    fields = {field(node, rpc), field(node, rpc + 1)}
    wait_until(lambda: fields <= set(redis.hkeys(SERVERS_KEY)), timeout=10,
               what="both workers registered")
    workers = wait_until(lambda: len(node.worker_pids()) == 2 and node.worker_pids(),
                         timeout=5, what="two workers")
    victim = workers[0]
    port = (listening_ports(victim) & {rpc, rpc + 1}).pop()

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in node.worker_pids(), timeout=5, what="worker gone")
    redis.hdel(SERVERS_KEY, field(node, port))  # what a peer does when it cannot reach it
    # gunicorn starts a new worker, which takes the same rpc port and address
    wait_until(lambda: field(node, port) in redis.hkeys(SERVERS_KEY), timeout=15,
               what=f"127.0.0.1:{port} registered again")
    assert set(redis.hkeys(SERVERS_KEY)) == fields
    fresh = [p for p in node.worker_pids() if p not in workers]
    assert len(fresh) == 1 and port in listening_ports(fresh[0])

    # and both nodes of the gunicorn serve users again
    seen = set()
    for _ in range(40):
        client, user = login(connect, node, 103, "w")
        seen.add(int(online_record(redis, 103, user)["accPort"]))
        if seen == {rpc, rpc + 1}:
            break
    assert seen == {rpc, rpc + 1}
