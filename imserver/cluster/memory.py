"""In-process implementations: a cluster of one node, with no other service."""
import time
from collections import OrderedDict, deque
from typing import Optional

from .base import (MSG_ID_TTL, ONLINE_FRESH_SECONDS, USER_RECORD_TTL, PresenceStore, Relay,
                   RelayError, StreamEntry, StreamSlice, StreamStore, new_epoch, same_login)

MAX_MSG_IDS = 1_000_000  # bound on remembered msgIDs; the oldest are forgotten first


class MemoryPresenceStore(PresenceStore):
    def __init__(self, clock=time.time):
        self._clock = clock
        self._users: "dict[str, tuple[float, dict]]" = {}
        self._msg_ids: "OrderedDict[str, float]" = OrderedDict()
        self._nodes: "dict[str, float]" = {}
        self._room_sizes: "dict[int, dict[str, int]]" = {}

    def set_user(self, record: dict) -> None:
        key = f"{record['appID']}_{record['userID']}"
        if record.get("isLogoff"):
            current = self._users.get(key)
            if current is not None and not same_login(current[1], record):
                return  # the user has logged in again elsewhere
            # Offline and absent mean the same; dropping it keeps memory bounded.
            self._users.pop(key, None)
        else:
            self._users[key] = (self._clock() + USER_RECORD_TTL, dict(record))

    def get_user(self, app_id: int, user_id: str) -> Optional[dict]:
        entry = self._users.get(f"{app_id}_{user_id}")
        if entry is None or entry[0] <= self._clock():
            return None
        return dict(entry[1])

    def claim_msg_id(self, msg_id: str) -> bool:
        now = self._clock()
        expiry = self._msg_ids.get(msg_id)
        if expiry is not None and expiry > now:
            return False
        self._msg_ids[msg_id] = now + MSG_ID_TTL
        self._msg_ids.move_to_end(msg_id)
        while len(self._msg_ids) > MAX_MSG_IDS:
            self._msg_ids.popitem(last=False)
        return True

    def release_msg_id(self, msg_id: str) -> None:
        self._msg_ids.pop(msg_id, None)

    def report_node(self, addr: str) -> bool:
        new = addr not in self._nodes
        self._nodes[addr] = self._clock()
        return new

    def remove_node(self, addr: str) -> None:
        self._nodes.pop(addr, None)

    def live_nodes(self) -> "list[str]":
        now = self._clock()
        return [a for a, t in self._nodes.items() if now - t < ONLINE_FRESH_SECONDS]

    def report_room_sizes(self, addr: str, sizes: "dict[int, int]", app_ids) -> None:
        for app_id in app_ids:
            self._room_sizes.setdefault(app_id, {})[addr] = sizes.get(app_id, 0)

    def room_sizes(self, app_id: int) -> "dict[str, int]":
        return dict(self._room_sizes.get(app_id, {}))

    def prune(self) -> None:
        now = self._clock()
        while self._msg_ids:
            msg_id, expiry = next(iter(self._msg_ids.items()))
            if expiry > now:
                break
            del self._msg_ids[msg_id]
        for key in [k for k, (exp, _) in self._users.items() if exp <= now]:
            del self._users[key]


class NoPeersRelay(Relay):
    """The relay of a node that has no peers: there is never anyone to relay to."""

    def send_to_user(self, peer, user_id, message) -> bool:
        return False

    def query_online(self, peer, app_id, user_id) -> bool:
        return False

    def broadcast(self, peers, message, timeout=None):
        return [RelayError(p, f"{p}: no relay in the embedded mode", True) for p in peers]

    def user_lists(self, peers, app_id):
        return [], [RelayError(p, f"{p}: no relay in the embedded mode", True) for p in peers]

    def publish(self, peers, message, timeout=None):
        return {}, [RelayError(p, f"{p}: no relay in the embedded mode", True) for p in peers]

    def room_users(self, peers, app_id, room):
        return [], [RelayError(p, f"{p}: no relay in the embedded mode", True) for p in peers]


class _Stream:
    __slots__ = ("epoch", "top", "entries", "expires")

    def __init__(self, expires: float):
        self.epoch = new_epoch()  # a new one at each start of the process too
        self.top = 0
        self.entries: "deque[StreamEntry]" = deque()
        self.expires = expires


class MemoryStreamStore(StreamStore):
    """Streams in this process, for the embedded node: lost at a restart, which the new
    epochs say."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._streams: "dict[str, _Stream]" = {}

    def _live(self, stream: str) -> "_Stream | None":
        found = self._streams.get(stream)
        if found is not None and found.expires <= self._clock():
            del self._streams[stream]
            return None
        return found

    def _made(self, stream: str, ttl: float) -> _Stream:
        found = self._live(stream)
        if found is None:
            found = self._streams[stream] = _Stream(self._clock() + ttl)
        return found

    def append(self, stream, payload, size, ttl):
        found = self._made(stream, ttl)
        found.top += 1
        found.entries.append(StreamEntry(found.top, payload))
        while len(found.entries) > max(1, size):
            found.entries.popleft()
        found.expires = self._clock() + ttl
        return found.top, found.epoch

    def position(self, stream, ttl):
        found = self._made(stream, ttl)
        return found.top, found.epoch

    def since(self, stream, offset, limit):
        found = self._live(stream)
        if found is None:
            return StreamSlice([], "", 0)
        entries = [e for e in found.entries if e.offset > offset][:max(0, limit)]
        return StreamSlice(entries, found.epoch, found.top)

    def before(self, stream, offset, limit):
        found = self._live(stream)
        if found is None:
            return StreamSlice([], "", 0)
        older = [e for e in found.entries if offset is None or e.offset < offset]
        return StreamSlice(older[-limit:] if limit > 0 else [], found.epoch, found.top)

    def prune(self) -> None:
        """Drop the streams whose TTL has run out."""
        now = self._clock()
        for stream in [s for s, found in self._streams.items() if found.expires <= now]:
            del self._streams[stream]
