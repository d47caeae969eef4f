"""History: the streams of rooms and inboxes as the node uses them (store a message,
recover what a client missed, page backwards, deliver an inbox to a device from its last
acknowledgement), over the StreamStore of the configured mode."""
from typing import NamedTuple

from ..cluster import StreamStore, inbox_stream, room_stream
from ..protocol import Message


class Recovery(NamedTuple):
    recovered: bool
    messages: "list[Message]"  # oldest first; empty unless recovered
    top: int  # the stream's top offset when read
    epoch: str


class Page(NamedTuple):
    messages: "list[Message]"  # oldest first
    top: int
    epoch: str


class History:
    """Every method but ``enabled`` may raise StoreError. A message's stream is its
    inbox's when it has one (a private message), else its room's."""

    def __init__(self, streams: StreamStore, size: int, ttl: float, recovery_max: int,
                 inbox_size: int, inbox_ttl: float):
        self.streams = streams
        self.size = size
        self.ttl = ttl
        self.recovery_max = recovery_max
        self.inbox_size = inbox_size
        self.inbox_ttl = inbox_ttl

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def _where(self, app_id: int, room: str, inbox: str) -> "tuple[str, int, float]":
        """(stream, size, ttl)."""
        if inbox:
            return inbox_stream(app_id, inbox), self.inbox_size, self.inbox_ttl
        return room_stream(app_id, room), self.size, self.ttl

    def _messages(self, app_id: int, room: str, inbox: str, got) -> "list[Message]":
        return [Message.from_stored(app_id, room, e.payload, e.offset, got.epoch, inbox)
                for e in got.entries]

    def append(self, message: Message) -> Message:
        """Store the message in its stream: the message at its offset. With that stream
        off (size 0), the message as it was (offset 0)."""
        stream, size, ttl = self._where(message.app_id, message.room, message.inbox)
        if size <= 0:
            return message
        offset, epoch = self.streams.append(stream, message.stored(), size, ttl)
        return message.at(offset, epoch)

    def position(self, app_id: int, room: str, inbox: str = "") -> "tuple[int, str]":
        """(top offset, epoch) of the stream; (0, "") when it is off."""
        stream, size, ttl = self._where(app_id, room, inbox)
        if size <= 0:
            return 0, ""
        return self.streams.position(stream, ttl)

    def recover(self, app_id: int, room: str, epoch: str, offset: int) -> Recovery:
        """Every message of a room after ``offset`` of ``epoch``, or none with
        ``recovered`` false (another epoch, messages no longer kept, more than
        recovery_max): never a part."""
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
        return Recovery(True, self._messages(app_id, room, "", got), got.top, got.epoch)

    def missing(self, app_id: int, room: str, after: int, count: int,
                inbox: str = "") -> Page:
        """Up to ``count`` kept messages after offset ``after`` (to fill a gap)."""
        stream, _, _ = self._where(app_id, room, inbox)
        got = self.streams.since(stream, after, count)
        return Page(self._messages(app_id, room, inbox, got), got.top, got.epoch)

    def page(self, app_id: int, room: str, before: "int | None", limit: int,
             inbox: str = "") -> Page:
        """The newest ``limit`` kept messages below ``before``, oldest first."""
        stream, size, ttl = self._where(app_id, room, inbox)
        if size <= 0:
            return Page([], 0, "")
        got = self.streams.before(stream, before, limit)
        if not got.epoch:
            top, epoch = self.streams.position(stream, ttl)
            return Page([], top, epoch)
        return Page(self._messages(app_id, room, inbox, got), got.top, got.epoch)

    # -- a device's inbox ------------------------------------------------------------------

    def unacked(self, app_id: int, user_id: str, device: str) -> Page:
        """What the device has not acknowledged, oldest first: everything kept after its
        cursor, or everything kept when the cursor is of another epoch (or none)."""
        if self.inbox_size <= 0:
            return Page([], 0, "")
        stream = inbox_stream(app_id, user_id)
        offset, epoch = self.streams.cursor(stream, device)
        got = self.streams.since(stream, 0, 0)  # the epoch and top alone
        if not got.epoch:
            top, new = self.streams.position(stream, self.inbox_ttl)
            return Page([], top, new)
        after = offset if epoch == got.epoch else 0
        got = self.streams.since(stream, after, self.inbox_size)
        return Page(self._messages(app_id, "", user_id, got), got.top, got.epoch)

    def ack(self, app_id: int, user_id: str, device: str, offset: int) -> "tuple[int, str]":
        """Move the device's cursor to ``offset`` (not back); (top, epoch) of the inbox.
        The caller checks ``offset`` against the top first: ValueError when it is above."""
        top, epoch = self.position(app_id, "", user_id)
        if offset > top:
            raise ValueError(f"offset {offset} is above the inbox's top offset {top}")
        self.streams.set_cursor(inbox_stream(app_id, user_id), device, offset, epoch,
                                self.inbox_ttl)
        return top, epoch
