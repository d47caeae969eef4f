"""A pushed message as one immutable value, from the API or command that accepts it to every
socket and peer it reaches; its frame is encoded once, however many receive it."""
import json
from dataclasses import dataclass, field, replace

from .envelope import encode_json, encode_push
from .frames import text_frame


@dataclass(frozen=True, slots=True)
class Message:
    app_id: int
    seq: str
    cmd: str  # "msg", "enter", "exit"
    text: str  # the frame's "msg"
    sender: str = ""  # the frame's "from"; left out of a room broadcast
    type: str = "text"
    target: str = ""
    room: str = ""  # "" is the app's own room
    msg_id: str = ""  # the idempotency id, "" when the sender gave none
    time: float = 0.0  # unix seconds when the node accepted it
    offset: int = 0  # its place in the room's stream; 0: not stored
    epoch: str = ""
    _frame: "bytes | None" = field(default=None, init=False, repr=False, compare=False)

    @property
    def extra(self) -> dict:
        """The push data beyond the original's four keys."""
        extra = {"room": self.room}
        if self.cmd == "msg":
            extra["msgID"] = self.msg_id or self.seq
            if self.time:  # unknown for a message an original node relays
                extra["time"] = int(self.time * 1000)
            if self.offset:
                extra["offset"] = self.offset
                extra["epoch"] = self.epoch
        return extra

    @property
    def data(self) -> dict:
        """The push data, as a frame carries it and as history and recovery list it."""
        data = {"target": self.target, "type": self.type, "msg": self.text,
                "from": self.sender}
        data.update(self.extra)
        return data

    @property
    def frame(self) -> bytes:
        """The WebSocket text frame every receiver gets, built on first use."""
        frame = self._frame
        if frame is None:
            frame = text_frame(encode_push(self.seq, self.cmd, self.text, self.sender,
                                           self.type, self.target, self.extra))
            object.__setattr__(self, "_frame", frame)
        return frame

    def at(self, offset: int, epoch: str) -> "Message":
        """The same message at its place in a stream."""
        return replace(self, offset=offset, epoch=epoch)

    def stored(self) -> str:
        """What a stream keeps of it (the stream knows the app, room, offset and epoch)."""
        return encode_json({"seq": self.seq, "type": self.type, "msg": self.text,
                            "from": self.sender, "target": self.target,
                            "msgID": self.msg_id, "time": self.time})

    @classmethod
    def from_stored(cls, app_id: int, room: str, payload: str, offset: int,
                    epoch: str) -> "Message":
        kept = json.loads(payload)
        return cls(app_id, kept["seq"], "msg", kept["msg"], kept["from"], kept["type"],
                   kept["target"], room, kept["msgID"], kept["time"], offset, epoch)
