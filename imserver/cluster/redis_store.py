"""PresenceStore on Redis, with the original system's key names and value formats
(PROTOCOL.md, "Cluster store"), so that nodes of both can share one Redis.

redis-py works under gevent through the patched socket module. Every call, whatever it
waits for (a pooled connection, a reconnect, the answer, one retry of a broken pooled
connection), answers or fails within ``timeout`` seconds. After a call found Redis
unreachable, calls fail at once for FAIL_FAST seconds instead of each waiting out its own
timeout (the node's report loop tries again every second). Any failure becomes
StoreError, which callers answer with a clear code instead of hanging.
"""
import json
import time
from typing import Optional

import gevent
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..metrics import REDIS_ERRORS
from .base import MSG_ID_TTL, ONLINE_FRESH_SECONDS, USER_RECORD_TTL, PresenceStore, StoreError

SERVERS_KEY = "acc:hash:servers"
USER_KEY_PREFIX = "acc:user:online:"
MSG_ID_KEY_PREFIX = "acc:submit:again:seq:"
ROOM_SIZE_KEY_PREFIX = "acc:hash:room:size:"  # this project's addition: node -> local room size
USER_NODES_KEY = "acc:user:nodes:{{{}_{}}}"  # this project's addition: node -> last record time
FAIL_FAST = 1.0  # seconds calls fail at once after one found Redis unreachable
LAG_TICK = 0.1  # seconds between the ticks that tell a busy event loop from a silent Redis

# A logout replaces the user's record only if the record is still that login's (same node
# and login time); field names are matched as the original's JSON decoding would.
LOGOFF_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' then
    local f = {}
    for k, v in pairs(d) do f[string.lower(k)] = v end
    if tostring(f['accip']) ~= ARGV[2] or tostring(f['accport']) ~= ARGV[3]
        or tonumber(f['logintime']) ~= tonumber(ARGV[4]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
return 1
"""

# Records written by other implementations may spell keys differently (appId, userId).
_CANONICAL = {k.lower(): k for k in (
    "accIp", "accPort", "appID", "userID", "clientIp", "clientPort", "loginTime",
    "heartbeatTime", "logOutTime", "qua", "deviceInfo", "isLogoff")}


def connection_pool(url: str, addr: str, password: str, db: int, pool_size: int,
                    timeout: float) -> redis.BlockingConnectionPool:
    options = dict(max_connections=pool_size, timeout=timeout, socket_timeout=timeout,
                   socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1),
                   health_check_interval=30)
    if url:
        return redis.BlockingConnectionPool.from_url(url, **options)
    host, _, port = addr.rpartition(":")
    if not host:
        host, port = addr, "6379"
    return redis.BlockingConnectionPool(host=host.strip("[]"), port=int(port),
                                        password=password or None, db=db, **options)


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """The pool of a master found through Sentinels that, as the single-instance pool, waits
    (up to its timeout) for a free connection instead of failing when all are taken."""


def _host_port(text: str) -> "tuple[str, int]":
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def redis_client(url: str = "", addr: str = "", password: str = "", db: int = 0,
                 pool_size: int = 30, timeout: float = 1.0, cluster=(), sentinels=(),
                 master_name: str = ""):
    """The client of the configured store through redis-py's own classes: one instance
    (``url`` or ``addr``), a Redis Cluster (``cluster``: seed nodes ``host:port``) or the
    master that ``sentinels`` watch under ``master_name``; each with the single-instance
    pool's timeouts and pool size (with a Cluster: per master)."""
    if cluster:
        first, *rest = [_host_port(n) for n in cluster]
        host = f"[{first[0]}]" if ":" in first[0] else first[0]
        # Given as a URL, RedisCluster makes each master's pool of connection_pool_class:
        # a blocking one, as for one instance.
        return RedisCluster(url=f"redis://{host}:{first[1]}",
                            startup_nodes=[ClusterNode(h, p) for h, p in rest],
                            password=password or None, max_connections=pool_size,
                            connection_pool_class=redis.BlockingConnectionPool, timeout=timeout,
                            socket_timeout=timeout, socket_connect_timeout=timeout,
                            retry=Retry(NoBackoff(), 1))
    if sentinels:
        sentinel = Sentinel([_host_port(s) for s in sentinels], socket_timeout=timeout,
                            socket_connect_timeout=timeout)
        client = sentinel.master_for(
            master_name, connection_pool_class=BlockingSentinelConnectionPool,
            password=password or None, db=db, max_connections=pool_size, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1), health_check_interval=30)
        client.sentinel = sentinel
        return client
    return redis.Redis(connection_pool=connection_pool(url, addr, password, db, pool_size,
                                                       timeout))


def client_from_config(cfg: dict):
    return redis_client(cfg["redis.url"], cfg["redis.addr"], cfg["redis.password"],
                        cfg["redis.DB"], cfg["redis.poolSize"], cfg["redis.timeout"],
                        cfg["redis.cluster"], cfg["redis.sentinels"], cfg["redis.masterName"])


def _as_client(pool_or_client):
    if isinstance(pool_or_client, redis.ConnectionPool):
        return redis.Redis(connection_pool=pool_or_client)
    return pool_or_client


class LoopLag:
    """Tells whether this process's event loop was too busy to run greenlets on time (a
    burst of CPU work) during a span: a call that timed out then says nothing of Redis."""

    def __init__(self, tick: float = LAG_TICK):
        self.tick = tick
        self._last = time.monotonic()
        self._stalls: "list[tuple[float, float]]" = []  # (end, how late) of recent late ticks
        self._ticker = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.tick)
            now = time.monotonic()
            late = now - self._last - self.tick
            if late > self.tick / 10:
                self._stalls = self._stalls[-63:] + [(now, late)]
            self._last = now

    def start(self) -> None:
        if self._ticker is None:
            self._last = time.monotonic()
            self._ticker = gevent.spawn(self._run)

    def stalled(self, since: float, longer_than: float) -> bool:
        """Was the loop late, in all, by more than ``longer_than`` seconds after ``since``
        (one long stall, or many runnable greenlets making every turn slow), counting its
        tick that is overdue now?"""
        late = max(0.0, time.monotonic() - self._last - self.tick)
        late += sum(length for end, length in self._stalls if end > since)
        return late > longer_than


class BoundedRedis:
    """A Redis client whose every call answers or fails within ``timeout``, failing at once
    for FAIL_FAST seconds after one found Redis unreachable. Stores on one Redis share one,
    so that they share what they learn about it. A call that timed out while this
    process's own loop was stalled fails alone: Redis was not the one that was slow."""

    def __init__(self, client, timeout: float = 1.0):
        """``client``: a redis.Redis, a RedisCluster, a Sentinel's master_for client, or a
        connection pool of one instance."""
        self.redis = _as_client(client)
        self.is_cluster = isinstance(self.redis, RedisCluster)
        self.timeout = timeout
        self._down_until = float("-inf")  # time.monotonic() until which calls fail at once
        self._down_reason = ""
        self._lag = LoopLag()

    def call(self, fn, *args, **kwargs):
        if time.monotonic() < self._down_until:
            REDIS_ERRORS.inc()
            raise StoreError(f"redis: unreachable a moment ago ({self._down_reason})")
        self._lag.start()
        started = time.monotonic()
        deadline = gevent.Timeout(self.timeout)
        deadline.start()
        try:
            return fn(*args, **kwargs)
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            if self._lag.stalled(started, self.timeout / 4):
                REDIS_ERRORS.inc()
                raise StoreError(f"redis: no answer within redis.timeout ({self.timeout:g}s) "
                                 "while this process was too busy to read it") from None
            if self._pool_taken():
                raise self._busy() from None
            raise self._unreachable(f"no answer within redis.timeout ({self.timeout:g}s)") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if self._pool_taken():
                raise self._busy() from None
            raise self._unreachable(f"{exc.__class__.__name__}: {exc}") from None
        except redis.RedisError as exc:
            REDIS_ERRORS.inc()
            raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from None
        finally:
            deadline.close()

    def _pool_taken(self) -> bool:
        """Every connection of the pool is in use: a call that waited for one says nothing
        of Redis itself (a burst of logins, not a silent Redis)."""
        for pool in self.pools():
            idle = getattr(pool, "pool", None)  # a blocking pool's queue of free connections
            if idle is not None and idle.empty():
                return True
        return False

    def _busy(self) -> StoreError:
        REDIS_ERRORS.inc()
        return StoreError(f"redis: no pooled connection free within redis.timeout "
                          f"({self.timeout:g}s): redis.poolSize may be too small for this load")

    def pools(self) -> list:
        """The connection pools of the client: one, or each master's of a Cluster."""
        if self.is_cluster:
            return [node.redis_connection.connection_pool
                    for node in self.redis.get_primaries() if node.redis_connection]
        return [self.redis.connection_pool]

    def close(self) -> None:
        if self.is_cluster:
            self.redis.close()
            return
        self.redis.connection_pool.disconnect()
        sentinel = getattr(self.redis, "sentinel", None)
        for client in getattr(sentinel, "sentinels", ()):
            client.connection_pool.disconnect()

    def _unreachable(self, reason: str) -> StoreError:
        REDIS_ERRORS.inc()
        self._down_until = time.monotonic() + FAIL_FAST
        self._down_reason = reason
        return StoreError(f"redis: {reason}")


class RedisPresenceStore(PresenceStore):
    def __init__(self, client, timeout: float = 1.0, clock=time.time):
        """``client``: as BoundedRedis takes it."""
        self.bounded = BoundedRedis(client, timeout)
        self._redis = self.bounded.redis
        self._call = self.bounded.call
        self._clock = clock

    def ping(self) -> None:
        self._call(self._redis.ping)

    def warm_up(self, count: int) -> None:
        """Open ``count`` pooled connections ahead of need (redis.minIdleConns); a store
        that is down now is not an error here."""
        taken = []
        try:
            for pool in self.bounded.pools():
                for _ in range(count):
                    taken.append((pool, pool.get_connection()))
        except redis.RedisError:
            pass
        finally:
            for pool, conn in taken:
                pool.release(conn)

    def set_user(self, record: dict) -> None:
        self.set_users([record])

    def set_users(self, records: "list[dict]") -> None:
        """Write many records in one round trip; a logoff record through a script that
        replaces only the record of the same login."""
        pipe = self._redis.pipeline(transaction=False)
        for record in records:
            key = f"{USER_KEY_PREFIX}{record['appID']}_{record['userID']}"
            value = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            nodes = USER_NODES_KEY.format(record["appID"], record["userID"])
            node = f"{record['accIp']}:{record['accPort']}"
            if record.get("isLogoff"):
                pipe.hdel(nodes, node)
            else:
                pipe.hset(nodes, node, int(record["heartbeatTime"]))
                pipe.expire(nodes, USER_RECORD_TTL)
            if record.get("isLogoff"):
                # EVAL, not a registered script: a Cluster's pipeline does not load scripts
                # on the masters it reaches (logoffs are rare, the script short).
                pipe.execute_command("EVAL", LOGOFF_SCRIPT, 1, key, value, record["accIp"],
                          str(record["accPort"]), int(record["loginTime"]), USER_RECORD_TTL)
            else:
                pipe.set(key, value, ex=USER_RECORD_TTL)
        self._call(pipe.execute)

    def get_user(self, app_id: int, user_id: str) -> Optional[dict]:
        raw = self._call(self._redis.get, f"{USER_KEY_PREFIX}{app_id}_{user_id}")
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return {_CANONICAL.get(str(k).lower(), k): v for k, v in data.items()}

    def user_nodes(self, app_id: int, user_id: str) -> "list[str]":
        nodes = self._call(self._redis.hkeys, USER_NODES_KEY.format(app_id, user_id))
        return sorted(n.decode() for n in nodes)

    def claim_msg_id(self, msg_id: str) -> bool:
        # One atomic SET NX EX: exactly one claimant in the whole cluster wins.
        return bool(self._call(self._redis.set, MSG_ID_KEY_PREFIX + msg_id, "1",
                               nx=True, ex=MSG_ID_TTL))

    def release_msg_id(self, msg_id: str) -> None:
        self._call(self._redis.delete, MSG_ID_KEY_PREFIX + msg_id)

    def report_node(self, addr: str) -> bool:
        return self._call(self._redis.hset, SERVERS_KEY, addr, str(int(self._clock()))) == 1

    def remove_node(self, addr: str) -> None:
        self._call(self._redis.hdel, SERVERS_KEY, addr)

    def live_nodes(self) -> "list[str]":
        entries = self._call(self._redis.hgetall, SERVERS_KEY)
        now = self._clock()
        live = []
        for addr, reported in entries.items():
            try:
                if now - int(reported) < ONLINE_FRESH_SECONDS:
                    live.append(addr.decode())
            except ValueError:
                continue
        return sorted(live)

    def report_room_sizes(self, addr: str, sizes: "dict[int, int]", app_ids) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for app_id in app_ids:
            key = f"{ROOM_SIZE_KEY_PREFIX}{app_id}"
            pipe.hset(key, addr, sizes.get(app_id, 0))
            pipe.expire(key, USER_RECORD_TTL)
        self._call(pipe.execute)

    def room_sizes(self, app_id: int) -> "dict[str, int]":
        entries = self._call(self._redis.hgetall, f"{ROOM_SIZE_KEY_PREFIX}{app_id}")
        return {a.decode(): int(n) for a, n in entries.items() if n.isdigit()}

    def close(self) -> None:
        self.bounded.close()
