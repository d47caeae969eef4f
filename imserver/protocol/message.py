"""A pushed message as one immutable value, from the API or command that accepts it to every
socket and peer it reaches; its frame is encoded once, however many receive it."""
from dataclasses import dataclass, field

from .envelope import encode_push
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
    _frame: "bytes | None" = field(default=None, init=False, repr=False, compare=False)

    @property
    def frame(self) -> bytes:
        """The WebSocket text frame every receiver gets, built on first use."""
        frame = self._frame
        if frame is None:
            frame = text_frame(encode_push(self.seq, self.cmd, self.text, self.sender,
                                           self.type, self.target))
            object.__setattr__(self, "_frame", frame)
        return frame
