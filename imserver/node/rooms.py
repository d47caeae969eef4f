"""Rooms on this node: who is in which named room, and the delivery of a room's messages in
offset order, each once, also to a connection whose ``join`` with recovery is being answered.

A room's stored messages may reach this node out of order: two nodes append 7 and 8, and 8
arrives first. The node delivers a room's messages strictly by offset: one that comes ahead
of a gap is held for GAP_WAIT seconds, then the missing ones are read from the store (they
were stored before they were sent). A joining connection gets nothing live until its reply
is written; what came meanwhile follows the reply, without what the reply already held.
"""
import logging
from typing import Optional

import gevent

from .. import metrics
from ..cluster import StoreError
from ..connection import Connection, send_to_all
from ..hub import Hub
from ..protocol import Message
from .history import History

log = logging.getLogger("imserver.node")

GAP_WAIT = 0.2  # seconds a message ahead of a gap waits for the missing ones to arrive
MAX_EARLY = 1000  # messages held ahead of a gap per room; past it the gap is filled at once


class Joining:
    """A connection whose ``join`` is under way: live messages are ``held`` until its reply
    is written; then those above ``top`` (the offset the reply gave) go out."""
    __slots__ = ("top", "held")

    def __init__(self):
        self.top: "int | None" = None
        self.held: "list[Message]" = []


class LocalRoom:
    """One room on this node. The app's room ("") has its members in the hub (every
    logged-in connection of the appID); a named room has its own."""
    __slots__ = ("app_id", "name", "members", "joining", "epoch", "top", "want", "early",
                 "gap", "peer_members")

    def __init__(self, app_id: int, name: str):
        self.app_id = app_id
        self.name = name
        self.members: "dict[Connection, None]" = {}
        self.joining: "dict[Connection, Joining]" = {}
        self.epoch: "str | None" = None  # of the stream, as the last message or join said
        self.top = 0  # the highest offset delivered here
        self.want = 0  # an offset a join's reply gave: the node must deliver up to it
        self.early: "dict[int, tuple[Message, Optional[Connection]]]" = {}
        self.gap: "gevent.Greenlet | None" = None
        self.peer_members: "dict[str, int]" = {}  # peer -> members there, as it last said


class Rooms:
    def __init__(self, hub: Hub, history: History, max_per_connection: int):
        self.hub = hub
        self.history = history
        self.max_per_connection = max_per_connection
        self._rooms: "dict[tuple[int, str], LocalRoom]" = {}

    # -- who is where --------------------------------------------------------------------

    def get(self, app_id: int, name: str) -> "LocalRoom | None":
        return self._rooms.get((app_id, name))

    def _room(self, app_id: int, name: str) -> LocalRoom:
        room = self._rooms.get((app_id, name))
        if room is None:
            room = self._rooms[(app_id, name)] = LocalRoom(app_id, name)
        return room

    def joined(self, conn: Connection, name: str) -> bool:
        return not name or bool(conn.rooms and name in conn.rooms)

    def is_full(self, conn: Connection) -> bool:
        return bool(conn.rooms) and len(conn.rooms) >= self.max_per_connection

    def connections(self, room: LocalRoom) -> "list[Connection]":
        """The room's connections here, joining ones included."""
        if room.name:
            return list(room.members) + list(room.joining)
        users = self.hub.rooms.get(room.app_id)
        return list(users.values()) if users else []

    def users(self, app_id: int, name: str) -> "list[str]":
        """Users of the room here, each once."""
        if not name:
            return self.hub.user_ids(app_id)
        room = self._rooms.get((app_id, name))
        if room is None:
            return []
        return list(dict.fromkeys(c.user_id for c in self.connections(room) if c.user_id))

    def size(self, app_id: int, name: str) -> int:
        if not name:
            return self.hub.room_size(app_id)
        room = self._rooms.get((app_id, name))
        return len(room.members) + len(room.joining) if room else 0

    # -- joining and leaving -------------------------------------------------------------

    def begin_join(self, conn: Connection, app_id: int, name: str) -> LocalRoom:
        """Hold the room's live messages for ``conn`` until ``finish_join``."""
        room = self._room(app_id, name)
        if name:
            if conn.rooms is None:
                conn.rooms = set()
            conn.rooms.add(name)
        room.joining[conn] = Joining()
        return room

    def abort_join(self, conn: Connection, room: LocalRoom) -> None:
        """The join failed (the store did not answer): as if it never began."""
        room.joining.pop(conn, None)
        if room.name and conn.rooms:
            conn.rooms.discard(room.name)
        self._drop_if_empty(room)

    def finish_join(self, conn: Connection, room: LocalRoom, top: int, epoch: str) -> None:
        """After the join's reply (which gave ``top`` of ``epoch``) was written: send what
        was held above ``top``; the connection becomes a member once the node has delivered
        up to ``top`` itself."""
        joining = room.joining.get(conn)
        if joining is None:
            return  # the connection closed meanwhile
        if epoch and room.epoch != epoch:
            # The first join of the room here, or the stream was made anew since the node
            # last delivered from it: the reply's view holds.
            room.epoch, room.top = epoch, top
            room.early = {o: held for o, held in room.early.items()
                          if o > top and held[0].epoch == epoch}
        joining.top = top
        room.want = max(room.want, top)
        held, joining.held = joining.held, []
        for message in held:
            if not message.offset or (message.epoch == epoch and message.offset > top):
                conn.send(message.frame)
        self._release(room)
        if room.top < room.want:
            self._schedule_gap_fill(room)
        self._promote(room)

    def leave(self, conn: Connection, app_id: int, name: str) -> bool:
        """Take ``conn`` out of a named room; False when it was not in it."""
        if not conn.rooms or name not in conn.rooms:
            return False
        conn.rooms.discard(name)
        room = self._rooms.get((app_id, name))
        if room is not None:
            room.members.pop(conn, None)
            room.joining.pop(conn, None)
            self._drop_if_empty(room)
        return True

    def drop_connection(self, conn: Connection) -> "list[str]":
        """A connection that ends leaves its rooms: the named rooms it was in."""
        app_room = self._rooms.get((conn.app_id, ""))
        if app_room is not None:
            app_room.joining.pop(conn, None)
        left = sorted(conn.rooms) if conn.rooms else []
        for name in left:
            self.leave(conn, conn.app_id, name)
        return left

    def _drop_if_empty(self, room: LocalRoom) -> None:
        if room.name and not room.members and not room.joining:
            if room.gap is not None:
                room.gap.kill(block=False)
            self._rooms.pop((room.app_id, room.name), None)

    # -- delivering ----------------------------------------------------------------------

    def deliver(self, message: Message, skip: "Connection | None" = None) -> int:
        """Write the message to the room's connections here (but ``skip``, the sending
        connection; in the app's room, the sending user), in offset order."""
        room = self._rooms.get((message.app_id, message.room))
        if room is None:
            if message.room:
                return 0  # nobody here
            room = self._room(message.app_id, "")
        offset = message.offset
        if not offset:
            return self._emit(room, message, skip)
        if room.epoch != message.epoch:
            if room.epoch is None and room.joining:
                # The first join's reply will say where the stream stands.
                self._hold(room, message, skip)
                return 0
            room.epoch, room.top, room.early = message.epoch, offset - 1, {}
        if offset <= room.top:
            return 0  # delivered already (read from the store to fill a gap)
        if offset > room.top + 1:
            self._hold(room, message, skip)
            return 0
        delivered = self._emit(room, message, skip)
        room.top = offset
        delivered += self._release(room)
        self._promote(room)
        return delivered

    def _emit(self, room: LocalRoom, message: Message, skip: "Connection | None") -> int:
        frame = message.frame
        if room.name:
            conns = list(room.members)
            if skip is not None and skip in room.members:
                conns.remove(skip)
            skip_user = ""
        else:
            users = self.hub.rooms.get(room.app_id)
            conns = tuple(users.values()) if users else ()
            if room.joining:
                conns = [c for c in conns if c not in room.joining]
            skip_user = message.sender
        delivered = send_to_all(conns, frame, skip_user) if conns else 0
        for conn, joining in room.joining.items():
            if conn is skip or (skip_user and conn.user_id == skip_user):
                continue
            if joining.top is None:
                joining.held.append(message)
            elif (not message.offset or message.offset > joining.top) and conn.send(frame):
                delivered += 1
        metrics.DELIVERIES.inc(delivered)
        return delivered

    def _hold(self, room: LocalRoom, message: Message, skip) -> None:
        room.early[message.offset] = (message, skip)
        if len(room.early) > MAX_EARLY:
            self._fill_gap(room)
        else:
            self._schedule_gap_fill(room)

    def _release(self, room: LocalRoom) -> int:
        """Deliver the held messages that follow the top without a gap."""
        delivered = 0
        early = room.early
        while early and room.top + 1 in early:
            message, skip = early.pop(room.top + 1)
            delivered += self._emit(room, message, skip)
            room.top += 1
        return delivered

    def _promote(self, room: LocalRoom) -> None:
        if not room.joining:
            return
        for conn, joining in list(room.joining.items()):
            if joining.top is not None and room.top >= joining.top:
                del room.joining[conn]
                if room.name:
                    room.members[conn] = None

    def _schedule_gap_fill(self, room: LocalRoom) -> None:
        if room.gap is None:
            room.gap = gevent.spawn_later(GAP_WAIT, self._fill_gap, room)

    def _fill_gap(self, room: LocalRoom) -> None:
        """Read the messages that did not arrive from the store and deliver them; skip
        those it no longer keeps (they are lost to this node's members)."""
        room.gap = None
        if room.epoch is None:
            return
        target = (min(room.early) - 1) if room.early else room.want
        if target > room.top:
            try:
                page = self.history.missing(room.app_id, room.name, room.top, target - room.top)
            except StoreError as exc:
                log.warning("room %s/%r: offsets %d-%d not delivered here, the store failed: %s",
                            room.app_id, room.name, room.top + 1, target, exc)
                page = None
            if page is not None and page.epoch == room.epoch:
                for message in page.messages:
                    if message.offset == room.top + 1:
                        self._emit(room, message, None)
                        room.top = message.offset
            if room.top < target:
                log.warning("room %s/%r: offsets %d-%d are no longer kept, skipped here",
                            room.app_id, room.name, room.top + 1, target)
                room.top = target
        self._release(room)
        if room.early:
            self._schedule_gap_fill(room)
        self._promote(room)
