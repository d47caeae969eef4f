"""History: the rooms' streams as the node uses them (store a message, recover what a
client missed, page backwards), over the StreamStore of the configured mode."""
from typing import NamedTuple

from ..cluster import StreamStore, room_stream
from ..protocol import Message


class Recovery(NamedTuple):
    recovered: bool
    messages: "list[Message]"  # oldest first; empty unless recovered
    top: int  # the room's top offset when read
    epoch: str


class Page(NamedTuple):
    messages: "list[Message]"  # oldest first
    top: int
    epoch: str


class History:
    """Every method but ``enabled`` may raise StoreError."""

    def __init__(self, streams: StreamStore, size: int, ttl: float, recovery_max: int):
        self.streams = streams
        self.size = size
        self.ttl = ttl
        self.recovery_max = recovery_max

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def append(self, message: Message) -> Message:
        """Store the message in its room's stream: the message at its offset. With history
        off, the message as it was (offset 0)."""
        if not self.enabled:
            return message
        offset, epoch = self.streams.append(room_stream(message.app_id, message.room),
                                            message.stored(), self.size, self.ttl)
        return message.at(offset, epoch)

    def position(self, app_id: int, room: str) -> "tuple[int, str]":
        """(top offset, epoch) of the room; (0, "") with history off."""
        if not self.enabled:
            return 0, ""
        return self.streams.position(room_stream(app_id, room), self.ttl)

    def recover(self, app_id: int, room: str, epoch: str, offset: int) -> Recovery:
        """Every message after ``offset`` of ``epoch``, or none with ``recovered`` false
        (another epoch, messages no longer kept, more than recovery_max): never a part."""
        if not self.enabled:
            return Recovery(False, [], 0, "")
        stream = room_stream(app_id, room)
        got = self.streams.since(stream, offset, self.recovery_max)
        if not got.epoch:  # no stream (never used, expired, lost): made now, a new epoch
            top, new = self.streams.position(stream, self.ttl)
            return Recovery(False, [], top, new)
        missed = got.top - offset
        entries = got.entries
        complete = (got.epoch == epoch and 0 <= missed <= self.recovery_max
                    and len(entries) == missed
                    and (not entries or entries[0].offset == offset + 1))
        if not complete:
            return Recovery(False, [], got.top, got.epoch)
        messages = [Message.from_stored(app_id, room, e.payload, e.offset, got.epoch)
                    for e in entries]
        return Recovery(True, messages, got.top, got.epoch)

    def missing(self, app_id: int, room: str, after: int, count: int) -> Page:
        """Up to ``count`` kept messages after offset ``after`` (to fill a gap)."""
        got = self.streams.since(room_stream(app_id, room), after, count)
        return Page([Message.from_stored(app_id, room, e.payload, e.offset, got.epoch)
                     for e in got.entries], got.top, got.epoch)

    def page(self, app_id: int, room: str, before: "int | None", limit: int) -> Page:
        """The newest ``limit`` kept messages below ``before``, oldest first."""
        if not self.enabled:
            return Page([], 0, "")
        stream = room_stream(app_id, room)
        got = self.streams.before(stream, before, limit)
        if not got.epoch:
            top, epoch = self.streams.position(stream, self.ttl)
            return Page([], top, epoch)
        return Page([Message.from_stored(app_id, room, e.payload, e.offset, got.epoch)
                     for e in got.entries], got.top, got.epoch)
