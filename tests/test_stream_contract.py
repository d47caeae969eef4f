"""The StreamStore contract (imserver/cluster/base.py), run against every engine: in memory
and on a real redis-server. Offsets, epochs, trimming, expiry, reads forwards and
backwards, concurrent appends, and the Redis keys' hash tags."""
import json
import time

import gevent
import pytest

from imserver.cluster import MemoryStreamStore, StoreError, inbox_stream, room_stream
from support import FakeClock

LOBBY = room_stream(101, "lobby")


def redis_streams(server):
    from imserver.cluster.redis_store import BoundedRedis, connection_pool
    from imserver.cluster.redis_streams import RedisStreamStore
    return RedisStreamStore(BoundedRedis(connection_pool("", server.addr, "", 0, 8, 1.0), 1.0))


@pytest.fixture(params=["memory", "redis", "redis-cluster", "redis-sentinel"])
def streams(request):
    if request.param == "memory":
        return MemoryStreamStore()
    if request.param in ("redis-cluster", "redis-sentinel"):
        from imserver.cluster.redis_store import BoundedRedis
        from imserver.cluster.redis_streams import RedisStreamStore
        from test_cluster_contract import beyond_one_instance
        # With replicas, appends wait for one (as a node on them does).
        return RedisStreamStore(BoundedRedis(beyond_one_instance(request.param, request), 1.0),
                                wait_replicas=1)
    server = request.getfixturevalue("contract_redis")
    server.client().flushall()
    return redis_streams(server)


def payload(n) -> str:
    return json.dumps({"msg": f"m{n}"})


def offsets(sliced):
    return [e.offset for e in sliced.entries]


def test_a_new_stream_has_an_epoch_and_top_0(streams):
    top, epoch = streams.position(LOBBY, ttl=60)
    assert top == 0 and epoch
    assert streams.position(LOBBY, ttl=60) == (0, epoch)  # made once, kept


def test_a_stream_nobody_made_reads_as_empty(streams):
    assert streams.since(LOBBY, 0, 10) == ([], "", 0)
    assert streams.before(LOBBY, None, 10) == ([], "", 0)


def test_appends_get_the_next_offsets_and_keep_the_epoch(streams):
    _, epoch = streams.position(LOBBY, ttl=60)
    assert [streams.append(LOBBY, payload(i), size=100, ttl=60) for i in range(1, 4)] == [
        (1, epoch), (2, epoch), (3, epoch)]
    sliced = streams.since(LOBBY, 0, 10)
    assert sliced.epoch == epoch and sliced.top == 3
    assert [(e.offset, json.loads(e.payload)["msg"]) for e in sliced.entries] == [
        (1, "m1"), (2, "m2"), (3, "m3")]


def test_streams_are_apart(streams):
    other = room_stream(101, "other")
    streams.append(LOBBY, payload(1), size=10, ttl=60)
    assert streams.append(other, payload(1), size=10, ttl=60)[0] == 1
    assert streams.append(inbox_stream(101, "alice"), payload(1), size=10, ttl=60)[0] == 1
    assert streams.position(room_stream(102, "lobby"), ttl=60)[0] == 0


def test_a_stream_keeps_its_last_size_entries(streams):
    for i in range(1, 11):
        streams.append(LOBBY, payload(i), size=4, ttl=60)
    sliced = streams.since(LOBBY, 0, 100)
    assert offsets(sliced) == [7, 8, 9, 10] and sliced.top == 10


def test_since_reads_forwards_from_an_offset(streams):
    for i in range(1, 8):
        streams.append(LOBBY, payload(i), size=100, ttl=60)
    assert offsets(streams.since(LOBBY, 4, 10)) == [5, 6, 7]
    assert offsets(streams.since(LOBBY, 2, 2)) == [3, 4]
    assert offsets(streams.since(LOBBY, 7, 10)) == []
    assert streams.since(LOBBY, 7, 10).top == 7
    assert offsets(streams.since(LOBBY, 0, 0)) == []


def test_before_pages_backwards(streams):
    for i in range(1, 8):
        streams.append(LOBBY, payload(i), size=100, ttl=60)
    assert offsets(streams.before(LOBBY, None, 3)) == [5, 6, 7]
    assert offsets(streams.before(LOBBY, 5, 3)) == [2, 3, 4]
    assert offsets(streams.before(LOBBY, 2, 3)) == [1]
    assert offsets(streams.before(LOBBY, 1, 3)) == []
    assert streams.before(LOBBY, 1, 3).top == 7


def test_concurrent_appends_get_distinct_contiguous_offsets(streams):
    jobs = [gevent.spawn(streams.append, LOBBY, payload(i), 1000, 60) for i in range(200)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    assert sorted(job.value[0] for job in jobs) == list(range(1, 201))
    assert len({job.value[1] for job in jobs}) == 1


def test_cursors_move_forward_within_an_epoch(streams):
    inbox = inbox_stream(101, "alice")
    assert streams.cursor(inbox, "phone") == (0, "")
    streams.set_cursor(inbox, "phone", 5, "e1", ttl=60)
    streams.set_cursor(inbox, "laptop", 2, "e1", ttl=60)
    assert (streams.cursor(inbox, "phone"), streams.cursor(inbox, "laptop")) == (
        (5, "e1"), (2, "e1"))
    streams.set_cursor(inbox, "phone", 3, "e1", ttl=60)  # an older ack does not go back
    assert streams.cursor(inbox, "phone") == (5, "e1")
    streams.set_cursor(inbox, "phone", 1, "e2", ttl=60)  # a new epoch starts over
    assert streams.cursor(inbox, "phone") == (1, "e2")
    assert streams.cursor(inbox_stream(101, "bob"), "phone") == (0, "")
    assert streams.cursor(inbox, "tablet") == (0, "")


def test_an_expired_stream_is_made_again_with_a_new_epoch_in_memory():
    clock = FakeClock()
    streams = MemoryStreamStore(clock=clock)
    _, first = streams.append(LOBBY, payload(1), size=10, ttl=60)
    clock.advance(59)
    assert streams.append(LOBBY, payload(2), size=10, ttl=60) == (2, first)  # renewed
    clock.advance(61)
    assert streams.since(LOBBY, 0, 10) == ([], "", 0)
    offset, second = streams.append(LOBBY, payload(3), size=10, ttl=60)
    assert offset == 1 and second != first
    clock.advance(61)
    streams.prune()
    assert streams.since(LOBBY, 0, 10) == ([], "", 0)


def test_a_restarted_memory_store_has_new_epochs():
    assert MemoryStreamStore().position(LOBBY, 60)[1] != MemoryStreamStore().position(LOBBY, 60)[1]


# -- Redis only -----------------------------------------------------------------------------------

def test_redis_keys_share_a_hash_tag_and_carry_the_ttl(contract_redis):
    client = contract_redis.client()
    client.flushall()
    streams = redis_streams(contract_redis)
    streams.append(LOBBY, payload(1), size=10, ttl=120)
    streams.append(inbox_stream(101, "alice"), payload(1), size=10, ttl=120)
    streams.set_cursor(inbox_stream(101, "alice"), "phone", 1, "e", ttl=120)
    keys = sorted(client.keys("acc:*"))
    assert keys == ["acc:inbox:{101_alice}", "acc:inbox:{101_alice}:acks",
                    "acc:inbox:{101_alice}:meta", "acc:stream:{101:lobby}",
                    "acc:stream:{101:lobby}:meta"]
    for key in keys:
        assert 115 < client.ttl(key) <= 120, key
    assert client.type("acc:stream:{101:lobby}") == "stream"
    # One slot per stream, by Redis Cluster's rule (CRC16 of the hash tag alone).
    from redis.crc import key_slot
    assert key_slot(keys[3].encode()) == key_slot(keys[4].encode())
    assert key_slot(keys[0].encode()) == key_slot(keys[1].encode()) == key_slot(keys[2].encode())


def test_redis_expiry_gives_a_new_epoch(contract_redis):
    contract_redis.client().flushall()
    streams = redis_streams(contract_redis)
    _, first = streams.append(LOBBY, payload(1), size=10, ttl=0.3)
    time.sleep(0.5)
    assert streams.since(LOBBY, 0, 10) == ([], "", 0)
    offset, second = streams.append(LOBBY, payload(2), size=10, ttl=60)
    assert offset == 1 and second != first


def test_a_lost_meta_voids_the_old_entries(contract_redis):
    # A store that lost the stream's meta (eviction, a partial restore) must not hand out
    # offsets again that old entries still hold.
    client = contract_redis.client()
    client.flushall()
    streams = redis_streams(contract_redis)
    for i in range(3):
        streams.append(LOBBY, payload(i), size=10, ttl=60)
    client.delete("acc:stream:{101:lobby}:meta")
    offset, _ = streams.append(LOBBY, payload(9), size=10, ttl=60)
    assert offset == 1 and offsets(streams.since(LOBBY, 0, 10)) == [1]


def test_redis_restarted_empty_gives_a_new_epoch(tmp_path):
    from cluster_support import RedisProcess
    server = RedisProcess(tmp_path).start()
    try:
        streams = redis_streams(server)
        _, first = streams.append(LOBBY, payload(1), size=10, ttl=60)
        server.stop()
        with pytest.raises(StoreError):
            streams.append(LOBBY, payload(2), size=10, ttl=60)
        server.start()
        time.sleep(1.1)  # past the fail-fast second after the outage
        offset, second = streams.append(LOBBY, payload(3), size=10, ttl=60)
        assert offset == 1 and second != first
    finally:
        server.stop()


# -- the bounds of a Redis call --------------------------------------------------------------------

def test_a_call_that_times_out_while_the_loop_is_busy_does_not_trip_the_breaker(contract_redis):
    """A burst of CPU work holds the event loop past redis.timeout: the call that waited
    fails, but Redis answered in time, so the next call goes to Redis as usual."""
    from imserver.cluster.redis_store import BoundedRedis, connection_pool
    bounded = BoundedRedis(connection_pool("", contract_redis.addr, "", 0, 8, 0.3), 0.3)
    assert bounded.call(bounded.redis.ping) is True

    def busy():
        end = time.monotonic() + 0.6
        while time.monotonic() < end:  # no yield: the loop is stalled
            pass

    stall = gevent.spawn_later(0.05, busy)
    with pytest.raises(StoreError, match="too busy"):
        bounded.call(bounded.redis.blpop, "nothing-here", 1)  # waits until the deadline
    stall.join()
    assert bounded.call(bounded.redis.ping) is True  # not failing fast


def test_a_silent_redis_trips_the_breaker(contract_redis):
    from imserver.cluster.redis_store import BoundedRedis, connection_pool
    bounded = BoundedRedis(connection_pool("", contract_redis.addr, "", 0, 8, 0.3), 0.3)
    with pytest.raises(StoreError, match="no answer within"):
        bounded.call(bounded.redis.blpop, "nothing-here", 1)
    with pytest.raises(StoreError, match="unreachable a moment ago"):
        bounded.call(bounded.redis.ping)


def test_a_call_that_waited_for_a_pooled_connection_does_not_trip_the_breaker(contract_redis):
    """Every pooled connection busy (a burst): the call that found none in time fails, and
    the next call goes to Redis as usual."""
    from imserver.cluster.redis_store import BoundedRedis, connection_pool
    bounded = BoundedRedis(connection_pool("", contract_redis.addr, "", 0, 2, 0.3), 0.3)
    holders = [gevent.spawn(bounded.redis.blpop, f"nothing-{i}", 1) for i in range(2)]
    gevent.sleep(0.05)  # both connections are taken
    with pytest.raises(StoreError, match="redis.poolSize"):
        bounded.call(bounded.redis.ping)
    gevent.joinall(holders, timeout=3)
    assert bounded.call(bounded.redis.ping) is True  # not failing fast
