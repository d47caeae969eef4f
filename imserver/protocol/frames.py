"""RFC 6455 framing, sans I/O: building frames and the pieces a reader needs.

gevent-websocket performs the handshake; the node frames messages itself so that a
broadcast frame is built once and written to every socket as is, the payload
length is checked before it is read, and unmasking/UTF-8 checks run in C.
"""
import struct

from .codes import Disconnect

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
DATA_OPCODES = (OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack
unpack_h = struct.Struct("!H").unpack
unpack_q = struct.Struct("!Q").unpack


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A complete, unmasked, final frame (server to client)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n <= 0xFFFF:
        return bytes((first, 126)) + _pack_h(n) + payload
    return bytes((first, 127)) + _pack_q(n) + payload


def text_frame(payload: bytes) -> bytes:
    return encode_frame(OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    # Control frame payloads are limited to 125 bytes: 2 for the code, 123 for the reason.
    # Cut at a character boundary: the reason must stay valid UTF-8.
    reason_bytes = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return encode_frame(OP_CLOSE, _pack_h(code) + reason_bytes)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR the payload with the 4-byte mask, using big-integer arithmetic (C speed)."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def parse_close(payload: bytes) -> "tuple[int, str]":
    """Code and reason of a received close frame (1005 when it carries none)."""
    if len(payload) < 2:
        return 1005, ""
    return unpack_h(payload[:2])[0], payload[2:].decode("utf-8", "replace")


class FrameError(Exception):
    """The peer broke the framing rules (``Disconnect.PROTOCOL_ERROR``) or sent a message
    over the limit (``Disconnect.MESSAGE_TOO_BIG``); ``reason`` says what, for the close
    frame and the log."""

    def __init__(self, disconnect: Disconnect, reason: str):
        super().__init__(reason)
        self.disconnect = disconnect
        self.reason = reason

    @property
    def close_code(self) -> int:
        return int(self.disconnect.code)
