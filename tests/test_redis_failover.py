"""A node on Redis beyond one instance keeps serving through a failover: a real gunicorn
node on a master watched by Sentinels (or on a Redis Cluster with replicas) takes messages
while the master is killed; writes may be refused with 1004 until a replica is promoted,
and every message answered 200, before and after, is in the history afterwards."""
import signal
import time

import pytest

from imserver.bench.harness import wait_until

APP = 101
ROOM = "failover"


def publish(node, n) -> int:
    answer = node.post("/room/publish", appID=APP, room=ROOM, userID="backend",
                       message=f"m{n}", msgID=f"failover-{n}")
    if answer["code"] == 200:
        assert answer["data"]["sendResults"] is True, answer
    else:
        assert answer["code"] == 1004, answer  # the store failed: nothing taken
    return answer["code"]


def history(node) -> "list[str]":
    """Every message kept in the room's history, oldest first (paged backwards)."""
    texts, before = [], None
    while True:
        params = {"appID": APP, "room": ROOM, "limit": 100}
        if before is not None:
            params["before"] = before
        page = node.get("/room/history", **params)
        assert page["code"] == 200, page
        pubs = page["data"]["publications"]
        texts = [p["msg"] for p in pubs] + texts
        if len(pubs) < 100 or pubs[0]["offset"] <= 1:
            return texts
        before = pubs[0]["offset"]


def run_through_failover(node, kill, deadline=60.0, after=30):
    """Publish before, during and after ``kill()``; the seconds from the kill to the first
    message taken again, and the messages answered 200."""
    accepted, refused, n = [], 0, 0
    started = time.monotonic()
    while time.monotonic() - started < 1.0 or len(accepted) < 20:  # traffic before
        n += 1
        if publish(node, n) == 200:
            accepted.append(f"m{n}")
        time.sleep(0.01)
        assert time.monotonic() - started < 15, "no traffic before the kill"
    killed = time.monotonic()
    kill()
    back = None
    taken_after = 0
    while taken_after < after:
        assert time.monotonic() - killed < deadline, (
            f"the node took no message {deadline:g}s after the kill ({refused} refused)")
        n += 1
        code = publish(node, n)
        if code == 200:
            accepted.append(f"m{n}")
            back = back if back is not None else time.monotonic() - killed
            taken_after += 1
        else:
            refused += 1
        time.sleep(0.02)
    return back, accepted, refused


def check_history(node, accepted):
    kept = history(node)
    missing = [m for m in accepted if m not in kept]
    assert not missing, f"accepted but lost: {missing}"
    assert len(kept) == len(set(kept))


def test_a_node_on_sentinels_keeps_serving_through_a_failover(redis_sentinel, make_node):
    group = redis_sentinel
    node = make_node({"app": {"advertiseAddr": "127.0.0.1", "reportInterval": 1,
                              "historySize": 100000},
                      "redis": {"sentinels": group.sentinel_addrs,
                                "masterName": group.master_name}})
    old = group.current_master()
    back, accepted, refused = run_through_failover(
        node, lambda: old.stop(signal.SIGKILL, timeout=5))
    new = group.current_master()
    assert new is not None and new is not old
    check_history(node, accepted)
    print(f"\nsentinel failover: writes taken again {back:.2f}s after the master was killed "
          f"(down-after-milliseconds 1000); {len(accepted)} taken, {refused} refused")
    assert node.state()  # still serving


def test_a_node_on_a_redis_cluster_keeps_serving_through_a_master_failover(redis_cluster,
                                                                            make_node):
    from redis.crc import key_slot
    group = redis_cluster
    node = make_node({"app": {"advertiseAddr": "127.0.0.1", "reportInterval": 1,
                              "historySize": 100000},
                      "redis": {"cluster": group.seeds[:2]}})
    slot = key_slot(f"acc:stream:{{{APP}:{ROOM}}}".encode())
    holder = group.client().get_node_from_key(f"acc:stream:{{{APP}:{ROOM}}}")
    victim = next(n for n in group.nodes if n.port == holder.port)
    assert group.role(victim) == "master"
    back, accepted, refused = run_through_failover(
        node, lambda: victim.stop(signal.SIGKILL, timeout=5))
    promoted = wait_until(lambda: next((n for n in group.master_nodes()
                                        if slot_owned(n, slot)), None), timeout=30,
                          what="a replica owns the slot")
    assert promoted is not victim
    check_history(node, accepted)
    print(f"\ncluster failover: writes taken again {back:.2f}s after the master was killed "
          f"(cluster-node-timeout 1000); {len(accepted)} taken, {refused} refused")
    assert node.state()


def slot_owned(node, slot) -> bool:
    try:
        ranges = node.client().cluster("slots")
    except Exception:
        return False
    me = node.port
    return any(r[0] <= slot <= r[1] and int(r[2][1]) == me for r in ranges)
