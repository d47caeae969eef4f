"""StreamStore on Redis: each stream is a Redis Stream of its entries (entry ID
``<offset>-0``) and a hash holding its epoch and top offset, under one hash tag
(``acc:stream:{101:lobby}`` and ``acc:stream:{101:lobby}:meta``; an inbox also has ``…:acks``, its devices' cursors), so
that the keys live in one slot of a Redis Cluster. One script per append assigns the offset, adds the
entry, trims the stream to its size and renews the TTL; reads take entries and meta in
one transaction.

With replicas (Sentinel, Redis Cluster) an append is answered once a replica has it too
(``WAIT`` on the connection that wrote it, up to a quarter of the store's timeout): a master
that dies at once after taking a message does not take it along, as the replica it
replicated to is the one a failover promotes. A master without a replica answering in time
still takes the message (it cannot be lost to a failover that has no replica to promote)."""
import gevent
import redis

from .base import StreamEntry, StreamSlice, StreamStore, new_epoch
from .redis_store import BoundedRedis

KEY_PREFIX = "acc:"

# KEYS: stream, meta. ARGV: payload, size, ttl (ms), an epoch for a stream made now.
# A meta hash that is gone (expired, evicted, a store that lost its data) makes a new
# stream: old entries, if any survived, are dropped, as their offsets are void.
APPEND_SCRIPT = """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 'top', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0', 'p', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {offset, epoch}
"""

# KEYS: meta. ARGV: ttl (ms), an epoch for a stream made now.
POSITION_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {tonumber(redis.call('HGET', KEYS[1], 'top')), epoch}
"""


# KEYS: acks hash. ARGV: name, offset, epoch, ttl (ms). Forward only within one epoch.
CURSOR_SCRIPT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sep = string.find(cur, ' ', 1, true)
  if sep and string.sub(cur, 1, sep - 1) == ARGV[3]
      and tonumber(string.sub(cur, sep + 1)) >= tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def _keys(stream: str) -> "tuple[str, str]":
    key = KEY_PREFIX + stream
    return key, key + ":meta"


def _fields(fields) -> dict:
    # A Cluster's transaction answers an entry's fields as the flat list Redis sends.
    return dict(zip(fields[::2], fields[1::2])) if isinstance(fields, list) else fields


def _entries(raw) -> "list[StreamEntry]":
    return [StreamEntry(int(entry_id.split(b"-", 1)[0]), _fields(fields)[b"p"].decode("utf-8"))
            for entry_id, fields in raw]


class RedisStreamStore(StreamStore):
    def __init__(self, bounded: BoundedRedis, wait_replicas: int = 0):
        """``wait_replicas``: replicas an append waits for (0: none, one instance)."""
        self._bounded = bounded
        self._redis: redis.Redis = bounded.redis
        self._wait_replicas = wait_replicas
        self._wait_ms = max(1, int(bounded.timeout * 250))
        self._append = self._redis.register_script(APPEND_SCRIPT)
        self._position = self._redis.register_script(POSITION_SCRIPT)
        self._cursor = self._redis.register_script(CURSOR_SCRIPT)

    def append(self, stream, payload, size, ttl):
        keys = list(_keys(stream))
        args = [payload, max(1, int(size)), max(1, int(ttl * 1000)), new_epoch()]
        if not self._wait_replicas:
            offset, epoch = self._bounded.call(self._append, keys=keys, args=args)
        else:
            offset, epoch = self._append_replicated(keys, args)
        return int(offset), epoch.decode()

    def _append_replicated(self, keys, args):
        """The append and a WAIT on one connection: that of the master holding the keys."""
        client = self._redis
        if self._bounded.is_cluster:
            client = self._redis.get_node_from_key(keys[0]).redis_connection
        pipe = client.pipeline(transaction=False)
        self._append(keys=keys, args=args, client=pipe)
        pipe.wait(self._wait_replicas, self._wait_ms)
        try:
            return self._bounded.call(pipe.execute)[0]
        except Exception:
            if self._bounded.is_cluster:
                # Past the Cluster client's own routing: a dead or demoted master here
                # is news to it. Learn the masters again, off this call's time.
                gevent.spawn(self._refresh_cluster)
            raise

    def _refresh_cluster(self) -> None:
        with gevent.Timeout(self._bounded.timeout * 2, False):
            try:
                self._redis.nodes_manager.initialize()
            except redis.RedisError:
                pass

    def position(self, stream, ttl):
        top, epoch = self._bounded.call(self._position, keys=[_keys(stream)[1]],
                                        args=[max(1, int(ttl * 1000)), new_epoch()])
        return int(top), epoch.decode()

    def _read(self, stream: str, add_read=None) -> StreamSlice:
        """Meta and, with ``add_read(pipe, key)``, entries, in one transaction."""
        key, meta = _keys(stream)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(meta, "epoch", "top")
        if add_read is not None:
            add_read(pipe, key)
        answers = self._bounded.call(pipe.execute)
        epoch, top = answers[0]
        if epoch is None:
            return StreamSlice([], "", 0)
        raw = answers[1] if add_read is not None else []
        return StreamSlice(_entries(raw), epoch.decode(), int(top))

    def since(self, stream, offset, limit):
        if limit <= 0:
            return self._read(stream)
        return self._read(stream, lambda pipe, key: pipe.xrange(
            key, min=f"{max(0, offset) + 1}-0", max="+", count=limit))

    def before(self, stream, offset, limit):
        if offset is not None and offset <= 1 or limit <= 0:
            return self._read(stream)  # nothing is below offset 1
        newest = "+" if offset is None else f"{offset - 1}-0"
        sliced = self._read(stream, lambda pipe, key: pipe.xrevrange(
            key, max=newest, min="-", count=limit))
        return StreamSlice(sliced.entries[::-1], sliced.epoch, sliced.top)

    def set_cursor(self, stream, name, offset, epoch, ttl):
        self._bounded.call(self._cursor, keys=[_keys(stream)[0] + ":acks"],
                           args=[name, int(offset), epoch, max(1, int(ttl * 1000))])

    def cursor(self, stream, name):
        raw = self._bounded.call(self._redis.hget, _keys(stream)[0] + ":acks", name)
        if raw is None:
            return 0, ""
        epoch, _, offset = raw.decode().partition(" ")
        return (int(offset), epoch) if offset.isdigit() else (0, "")
