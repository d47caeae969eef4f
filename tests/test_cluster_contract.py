"""The PresenceStore contract (imserver.cluster.base), run against every implementation.

Add an implementation by adding a param to the ``store`` fixture: the class below then runs
against it unchanged. Times come from an injected clock (``clock``), which each store takes
as ``clock=``; tests that need a TTL to run out by the clock ask for ``clock_ttl`` and are
skipped for stores whose expiry the server keeps by real time (Redis TTLs).
"""
import pytest

from imserver.cluster import MemoryPresenceStore, NoPeersRelay, record_is_online, user_record
from imserver.protocol import Message
from imserver.cluster.base import MSG_ID_TTL, ONLINE_FRESH_SECONDS, USER_RECORD_TTL
from support import FakeClock

T0 = 1_700_000_000.0  # whole seconds: stores may keep report times as whole seconds

# Stores whose entries expire when the injected clock passes their TTL.
CLOCK_DRIVEN_TTL = {"memory"}


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture(params=["memory", "redis", "redis-cluster", "redis-sentinel"])
def store_kind(request):
    return request.param


@pytest.fixture
def store(store_kind, clock, request):
    if store_kind == "memory":
        s = MemoryPresenceStore(clock=clock)
    elif store_kind == "redis":
        from imserver.cluster.redis_store import RedisPresenceStore, connection_pool
        server = request.getfixturevalue("contract_redis")
        server.client().flushall()
        s = RedisPresenceStore(connection_pool("", server.addr, "", 0, 4, 1.0), clock=clock)
    elif store_kind in ("redis-cluster", "redis-sentinel"):
        from imserver.cluster.redis_store import RedisPresenceStore
        s = RedisPresenceStore(beyond_one_instance(store_kind, request), clock=clock)
    else:  # pragma: no cover - a new param needs its constructor here
        raise AssertionError(f"no constructor for store {store_kind}")
    yield s
    s.close()


def beyond_one_instance(kind, request):
    """A client of a real Redis Cluster or Sentinel-watched master, emptied first."""
    from imserver.cluster.redis_store import redis_client
    if kind == "redis-cluster":
        group = request.getfixturevalue("contract_redis_cluster")
        group.flushall()
        return redis_client(cluster=group.seeds, pool_size=4)
    group = request.getfixturevalue("contract_redis_sentinel")
    group.current_master().client().flushall()
    return redis_client(sentinels=group.sentinel_addrs, master_name=group.master_name,
                        pool_size=4)


@pytest.fixture
def clock_ttl(store_kind, clock):
    """The clock, for tests in which TTLs must run out by it: those tests run only for
    the stores in CLOCK_DRIVEN_TTL (``clock_driven``); Redis TTLs are checked as set
    values in test_redis_keys_carry_the_protocol_ttls."""
    assert store_kind in CLOCK_DRIVEN_TTL, "mark the test with @clock_driven"
    return clock


clock_driven = pytest.mark.parametrize("store_kind", sorted(CLOCK_DRIVEN_TTL))


def record(app_id=101, user_id="alice", at=T0, node_ip="10.0.0.1", rpc_port=9001, **kw):
    return user_record(node_ip, rpc_port, app_id, user_id, "192.168.1.20", 53000, at, at, **kw)


def test_constants_follow_the_protocol():
    assert ONLINE_FRESH_SECONDS == 180
    assert USER_RECORD_TTL == 24 * 3600
    assert MSG_ID_TTL == 12 * 3600


def test_user_record_has_the_original_field_names_and_types():
    assert user_record("10.0.0.1", 9001, 101, "alice", "192.168.1.20", 53000,
                       1000.7, 1010.2) == {
        "accIp": "10.0.0.1", "accPort": "9001", "appID": 101, "userID": "alice",
        "clientIp": "192.168.1.20", "clientPort": "53000", "loginTime": 1000,
        "heartbeatTime": 1010, "logOutTime": 0, "qua": "", "deviceInfo": "", "isLogoff": False}


def test_user_record_logoff():
    rec = user_record("10.0.0.1", 9001, 101, "alice", "c", 1, 1000, 1010, logout_time=1020.9,
                      is_logoff=True)
    assert (rec["logOutTime"], rec["isLogoff"]) == (1020, True)


class TestRecordIsOnline:
    def test_none_and_empty_are_offline(self):
        assert record_is_online(None, T0) is False
        assert record_is_online({}, T0) is False

    def test_fresh_record_is_online(self):
        assert record_is_online(record(at=T0), T0) is True
        assert record_is_online(record(at=T0), T0 + 179.9) is True

    def test_record_180_seconds_old_is_offline(self):
        assert record_is_online(record(at=T0), T0 + 180) is False
        assert record_is_online(record(at=T0), T0 + 10_000) is False

    def test_logoff_record_is_offline(self):
        assert record_is_online(record(at=T0, is_logoff=True), T0) is False

    def test_missing_heartbeat_is_offline(self):
        rec = record(at=T0)
        del rec["heartbeatTime"]
        assert record_is_online(rec, T0) is False


class TestPresenceStoreContract:
    # -- user records ---------------------------------------------------------------------

    def test_unknown_user_is_none(self, store):
        assert store.get_user(101, "nobody") is None

    def test_set_user_get_user_roundtrip(self, store):
        rec = record(101, "alice")
        store.set_user(rec)
        assert store.get_user(101, "alice") == rec

    def test_non_ascii_user_roundtrip(self, store):
        rec = record(102, "张三-😀")
        store.set_user(rec)
        assert store.get_user(102, "张三-😀") == rec

    def test_users_are_keyed_by_app_id_and_user_id(self, store):
        a = record(101, "alice", node_ip="10.0.0.1")
        b = record(102, "alice", node_ip="10.0.0.2")
        store.set_user(a)
        assert store.get_user(102, "alice") is None
        assert store.get_user(101, "Alice") is None
        store.set_user(b)
        assert store.get_user(101, "alice") == a
        assert store.get_user(102, "alice") == b

    def test_set_user_overwrites(self, store, clock):
        store.set_user(record(at=T0))
        newer = record(at=T0 + 60, node_ip="10.0.0.9")
        store.set_user(newer)
        assert store.get_user(101, "alice") == newer

    def test_get_user_returns_a_copy(self, store):
        rec = record()
        store.set_user(rec)
        got = store.get_user(101, "alice")
        got["isLogoff"] = True
        rec["userID"] = "changed"
        assert store.get_user(101, "alice") == record()

    def test_logoff_record_reads_as_absent_or_logged_off(self, store):
        store.set_user(record(at=T0))
        store.set_user(record(at=T0, logout_time=T0 + 5, is_logoff=True))
        got = store.get_user(101, "alice")
        assert got is None or got["isLogoff"] is True
        assert record_is_online(got, T0 + 5) is False

    def test_user_nodes_follow_the_records_of_each_node(self, store):
        assert store.user_nodes(101, "alice") == []
        store.set_user(record(node_ip="10.0.0.1"))
        store.set_users([record(node_ip="10.0.0.2", at=T0 + 1), record(102, "alice")])
        assert store.user_nodes(101, "alice") == ["10.0.0.1:9001", "10.0.0.2:9001"]
        # a logoff takes its node out even when the stored record is another node's login
        store.set_user(record(node_ip="10.0.0.1", logout_time=T0 + 5, is_logoff=True))
        assert store.user_nodes(101, "alice") == ["10.0.0.2:9001"]
        assert store.user_nodes(102, "alice") == ["10.0.0.1:9001"]
        store.set_user(record(node_ip="10.0.0.2", at=T0 + 1, logout_time=T0 + 6,
                              is_logoff=True))
        assert store.user_nodes(101, "alice") == []

    def test_set_users_writes_each_record(self, store):
        recs = [record(101, "a"), record(101, "b"), record(103, "a")]
        store.set_users(recs)
        assert [store.get_user(r["appID"], r["userID"]) for r in recs] == recs

    def test_online_freshness_is_180_seconds(self, store, clock):
        store.set_user(record(at=clock()))
        clock.advance(179)
        assert record_is_online(store.get_user(101, "alice"), clock()) is True
        clock.advance(1)
        assert record_is_online(store.get_user(101, "alice"), clock()) is False

    def test_heartbeat_rewrite_keeps_a_user_online(self, store, clock):
        store.set_user(record(at=clock()))
        clock.advance(170)
        store.set_user(record(at=clock()))
        clock.advance(170)
        assert record_is_online(store.get_user(101, "alice"), clock()) is True

    @clock_driven
    def test_user_record_expires_after_24_hours(self, store, clock_ttl):
        store.set_user(record(at=clock_ttl()))
        clock_ttl.advance(USER_RECORD_TTL - 1)
        assert store.get_user(101, "alice") == record(at=T0)
        clock_ttl.advance(1)
        assert store.get_user(101, "alice") is None

    @clock_driven
    def test_rewrite_restarts_the_24_hour_life(self, store, clock_ttl):
        store.set_user(record(at=clock_ttl()))
        clock_ttl.advance(USER_RECORD_TTL - 10)
        store.set_user(record(at=clock_ttl()))
        clock_ttl.advance(100)
        assert store.get_user(101, "alice") is not None

    # -- msgIDs -------------------------------------------------------------------------------

    def test_claim_msg_id_first_true_then_false(self, store):
        assert store.claim_msg_id("m-1") is True
        assert store.claim_msg_id("m-1") is False
        assert store.claim_msg_id("m-1") is False

    def test_claims_are_per_msg_id(self, store):
        assert store.claim_msg_id("m-1") is True
        assert store.claim_msg_id("m-2") is True
        assert store.claim_msg_id("M-1") is True

    def test_release_allows_reclaim(self, store):
        assert store.claim_msg_id("m-1") is True
        store.release_msg_id("m-1")
        assert store.claim_msg_id("m-1") is True
        assert store.claim_msg_id("m-1") is False

    def test_release_of_unknown_msg_id_is_harmless(self, store):
        store.release_msg_id("never-claimed")
        assert store.claim_msg_id("never-claimed") is True

    @clock_driven
    def test_claim_expires_after_12_hours(self, store, clock_ttl):
        assert store.claim_msg_id("m-1") is True
        clock_ttl.advance(MSG_ID_TTL - 1)
        assert store.claim_msg_id("m-1") is False
        clock_ttl.advance(1)
        assert store.claim_msg_id("m-1") is True
        clock_ttl.advance(MSG_ID_TTL - 1)
        assert store.claim_msg_id("m-1") is False

    # -- nodes ----------------------------------------------------------------------------------

    def test_no_nodes_at_first(self, store):
        assert list(store.live_nodes()) == []

    def test_report_node_and_live_nodes(self, store):
        store.report_node("10.0.0.1:9001")
        store.report_node("10.0.0.2:9001")
        store.report_node("10.0.0.1:9001")
        assert sorted(store.live_nodes()) == ["10.0.0.1:9001", "10.0.0.2:9001"]

    def test_remove_node(self, store):
        store.report_node("10.0.0.1:9001")
        store.report_node("10.0.0.2:9001")
        store.remove_node("10.0.0.1:9001")
        assert sorted(store.live_nodes()) == ["10.0.0.2:9001"]
        store.remove_node("10.0.0.9:9001")  # unknown: harmless
        assert sorted(store.live_nodes()) == ["10.0.0.2:9001"]

    def test_removed_node_comes_back_with_its_next_report(self, store):
        store.report_node("10.0.0.1:9001")
        store.remove_node("10.0.0.1:9001")
        assert list(store.live_nodes()) == []
        store.report_node("10.0.0.1:9001")
        assert list(store.live_nodes()) == ["10.0.0.1:9001"]

    def test_node_is_stale_after_180_seconds(self, store, clock):
        store.report_node("10.0.0.1:9001")
        clock.advance(60)
        store.report_node("10.0.0.2:9001")
        clock.advance(119)
        assert sorted(store.live_nodes()) == ["10.0.0.1:9001", "10.0.0.2:9001"]
        clock.advance(1)  # 180 s since node 1's report, 120 s since node 2's
        assert sorted(store.live_nodes()) == ["10.0.0.2:9001"]
        clock.advance(60)
        assert list(store.live_nodes()) == []

    def test_report_refreshes_a_node(self, store, clock):
        store.report_node("10.0.0.1:9001")
        clock.advance(170)
        store.report_node("10.0.0.1:9001")
        clock.advance(170)
        assert list(store.live_nodes()) == ["10.0.0.1:9001"]

    def test_stale_node_is_live_again_after_a_report(self, store, clock):
        store.report_node("10.0.0.1:9001")
        clock.advance(500)
        assert list(store.live_nodes()) == []
        store.report_node("10.0.0.1:9001")
        assert list(store.live_nodes()) == ["10.0.0.1:9001"]

    # -- room sizes -----------------------------------------------------------------------------

    def test_room_sizes_are_published_per_node(self, store):
        assert store.room_sizes(101) == {}
        store.report_room_sizes("10.0.0.1:9001", {101: 3}, [101, 102])
        store.report_room_sizes("10.0.0.2:9001", {101: 5, 102: 1}, [101, 102])
        assert store.room_sizes(101) == {"10.0.0.1:9001": 3, "10.0.0.2:9001": 5}
        assert store.room_sizes(102) == {"10.0.0.1:9001": 0, "10.0.0.2:9001": 1}
        assert store.room_sizes(103) == {}

    def test_room_size_report_replaces_the_previous_one(self, store):
        store.report_room_sizes("10.0.0.1:9001", {101: 3}, [101])
        store.report_room_sizes("10.0.0.1:9001", {}, [101])
        assert store.room_sizes(101) == {"10.0.0.1:9001": 0}

    # -- prune ----------------------------------------------------------------------------------

    def test_prune_keeps_what_has_not_expired(self, store, clock):
        store.set_user(record(at=clock()))
        store.claim_msg_id("m-1")
        store.report_node("10.0.0.1:9001")
        clock.advance(60)
        store.prune()
        assert store.get_user(101, "alice") == record(at=T0)
        assert store.claim_msg_id("m-1") is False
        assert list(store.live_nodes()) == ["10.0.0.1:9001"]

    @clock_driven
    def test_prune_drops_expired(self, store, clock_ttl):
        hour = 3600
        store.set_user(record(101, "old", at=clock_ttl()))        # T0, expires T0+24h
        clock_ttl.advance(13 * hour)
        store.claim_msg_id("m-old")                                # T0+13h, expires T0+25h
        clock_ttl.advance(10 * hour)
        store.claim_msg_id("m-new")                                # T0+23h, expires T0+35h
        store.set_user(record(101, "new", at=clock_ttl()))
        clock_ttl.advance(2 * hour)                                # T0+25h
        store.prune()
        assert store.get_user(101, "old") is None
        assert store.get_user(101, "new") == record(101, "new", at=T0 + 23 * hour)
        assert store.claim_msg_id("m-new") is False
        assert store.claim_msg_id("m-old") is True


# -- memory specifics ------------------------------------------------------------------------------

def test_memory_prune_frees_expired_entries():
    clock = FakeClock()
    store = MemoryPresenceStore(clock=clock)
    for i in range(5):
        store.set_user(record(101, f"u{i}", at=clock()))
        store.claim_msg_id(f"m{i}")
    clock.advance(MSG_ID_TTL)
    store.claim_msg_id("fresh")
    store.set_user(record(101, "fresh", at=clock()))
    store.prune()
    assert list(store._msg_ids) == ["fresh"]
    assert len(store._users) == 6
    clock.advance(USER_RECORD_TTL - MSG_ID_TTL)
    store.prune()
    assert sorted(store._users) == ["101_fresh"]


def test_memory_store_drops_logoff_records():
    store = MemoryPresenceStore(clock=FakeClock())
    store.set_user(record())
    store.set_user(record(is_logoff=True))
    assert store.get_user(101, "alice") is None
    assert store._users == {}


def test_memory_reclaim_after_expiry_restarts_the_12_hours():
    clock = FakeClock()
    store = MemoryPresenceStore(clock=clock)
    store.claim_msg_id("m")
    clock.advance(MSG_ID_TTL)
    assert store.claim_msg_id("m") is True
    store.claim_msg_id("other")
    clock.advance(MSG_ID_TTL - 1)
    store.prune()
    assert list(store._msg_ids) == ["m", "other"]
    assert store.claim_msg_id("m") is False


# -- NoPeersRelay ----------------------------------------------------------------------------------

def test_no_peers_relay_reaches_no_one():
    relay = NoPeersRelay()
    message = Message(101, "s", "msg", "hi", "alice")
    assert relay.send_to_user("10.0.0.2:9001", "bob", message) is False
    failures = relay.broadcast(["10.0.0.2:9001", "10.0.0.3:9001"], message)
    assert [(f.peer, f.unreachable) for f in failures] == [("10.0.0.2:9001", True),
                                                           ("10.0.0.3:9001", True)]
    assert relay.broadcast([], message) == []
    users, failures = relay.user_lists(["10.0.0.2:9001"], 101)
    assert users == [] and [f.peer for f in failures] == ["10.0.0.2:9001"]
    assert relay.query_online("10.0.0.2:9001", 101, "bob") is False
    relay.close()


def test_redis_keys_carry_the_protocol_ttls(contract_redis):
    from imserver.cluster.redis_store import RedisPresenceStore, connection_pool
    client = contract_redis.client()
    client.flushall()
    store = RedisPresenceStore(connection_pool("", contract_redis.addr, "", 0, 2, 1.0))
    try:
        store.set_user(record())
        store.claim_msg_id("m-ttl")
        assert USER_RECORD_TTL - 5 < client.ttl("acc:user:online:101_alice") <= USER_RECORD_TTL
        assert MSG_ID_TTL - 5 < client.ttl("acc:submit:again:seq:m-ttl") <= MSG_ID_TTL
        assert client.get("acc:submit:again:seq:m-ttl") == "1"
    finally:
        store.close()


class TestLogoffOfAnotherLogin:
    """A logout must not take offline a user who has logged in again on another node."""

    def test_logoff_of_an_older_login_leaves_the_newer_one(self, store):
        older = record(at=T0, node_ip="10.0.0.1")
        newer = record(at=T0 + 5, node_ip="10.0.0.2")
        store.set_user(older)
        store.set_user(newer)
        store.set_users([dict(older, isLogoff=True, logOutTime=int(T0 + 6))])
        assert store.get_user(101, "alice") == newer

    def test_logoff_of_the_same_login_takes_effect(self, store):
        rec = record(at=T0, node_ip="10.0.0.1")
        store.set_user(rec)
        store.set_users([dict(rec, isLogoff=True, logOutTime=int(T0 + 6))])
        assert not record_is_online(store.get_user(101, "alice"), T0 + 7)
