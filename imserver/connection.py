"""One WebSocket connection: its reader loop, its non-blocking send path and its close.

After the handshake the connection owns a socket of its own (a duplicate of the one the
HTTP handler had), so the handler, its request state and its buffers are freed, and one
greenlet with a shallow stack reads the socket. Sending never blocks the sender: a frame
goes straight to the socket when the socket takes it whole, and only what does not fit is
queued for a writer greenlet, which exists only while there is a backlog. The backlog is
bounded in bytes; a client that does not read is dropped as a slow consumer instead of
growing the node's memory.
"""
import logging
import socket
import time
from collections import deque

import gevent

from . import metrics
from .protocol import frames
from .protocol.codes import CloseCode, Disconnect
from .protocol.frames import FrameError

log = logging.getLogger("imserver.connection")

CLOSE_TIMEOUT = 5.0  # how long a closing peer may take to answer our close frame

PING_FRAME = frames.encode_frame(frames.OP_PING, b"")


class Connection:
    """State of one client socket. ``user_id``/``app_id`` are set by a successful login."""

    __slots__ = ("id", "sock", "_raw_send", "_rbuf", "addr", "port", "app_id", "user_id",
                 "connect_time", "login_time", "heartbeat_time", "last_seen", "pinged",
                 "closed", "closing", "tokens", "tokens_time", "strikes",
                 "_backlog", "_backlog_bytes", "_writer", "_max_backlog", "_max_frames",
                 "_write_timeout", "_max_frame", "rooms", "__weakref__")

    _next_id = 0

    def __init__(self, sock, addr, pending: bytes, max_frame_bytes: int,
                 max_backlog_bytes: int, max_backlog_frames: int, write_timeout: float,
                 burst: int):
        Connection._next_id += 1
        self.id = Connection._next_id
        self.sock = sock
        # The OS-level socket: its send() never yields, so a write that fits goes out at once.
        self._raw_send = sock._sock.send
        self._rbuf = pending  # bytes received but not yet parsed
        if isinstance(addr, tuple):
            self.addr, self.port = addr[0], addr[1]
        else:
            self.addr, self.port = str(addr or ""), 0
        self.app_id = 0
        self.user_id = ""
        self.rooms: "set[str] | None" = None  # named rooms joined; None until the first
        now = time.time()
        self.connect_time = now
        self.login_time = 0.0
        self.heartbeat_time = now  # before login the connect time counts, as the protocol says
        self.last_seen = now  # the last frame of any kind from the peer
        self.pinged = False  # a server ping is out since last_seen
        self.tokens = float(burst)  # rate limit: a token bucket refilled by the node
        self.tokens_time = now
        self.strikes = 0  # messages refused in a row for the rate
        self.closed = False  # no more writes
        self.closing = False  # our close frame is queued
        self._backlog = None  # deque of bytes not yet written, when there is a backlog
        self._backlog_bytes = 0
        self._writer = None
        self._max_backlog = max_backlog_bytes
        self._max_frames = max_backlog_frames
        self._write_timeout = write_timeout
        self._max_frame = max_frame_bytes

    @classmethod
    def adopt(cls, ws, **limits) -> "Connection":
        """Take over the socket of a WebSocket that gevent-websocket just upgraded.

        The handler's socket is duplicated and detached from the handler, which then
        finishes and frees its request state; bytes the handler had already buffered
        past the handshake are carried over."""
        handler = ws.stream.handler
        sock = handler.socket
        sock.settimeout(0.0)
        try:
            pending = handler.rfile.read1(65536) or b""
        except OSError:
            pending = b""
        own = sock.dup()
        own.settimeout(None)
        # The handler must neither read what is left on the socket at its exit nor close our copy.
        handler.socket = None
        ws.closed = True  # we do the close handshake ourselves
        return cls(own, handler.client_address, pending, **limits)

    @property
    def user_key(self) -> str:
        return f"{self.app_id}_{self.user_id}" if self.user_id else ""

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    @property
    def has_writer(self) -> bool:
        return self._writer is not None

    def __repr__(self):
        return f"<Connection {self.id} {self.addr}:{self.port} {self.user_key or '-'}>"

    # -- sending -------------------------------------------------------------------------

    def send(self, frame: bytes) -> bool:
        """Queue a complete WebSocket frame; never blocks. False if the connection is gone."""
        if self.closing or self.closed:
            return False
        return self._write(frame)

    def _write(self, frame: bytes) -> bool:
        if self._backlog is not None:
            if (self._backlog_bytes + len(frame) > self._max_backlog
                    or len(self._backlog) >= self._max_frames):
                log.info("%r: send backlog over %d bytes or %d frames, dropping slow consumer",
                         self, self._max_backlog, self._max_frames)
                metrics.drop("slow_consumer")
                self.abort()
                return False
            self._backlog.append(frame)
            self._backlog_bytes += len(frame)
            return True
        try:
            sent = self._raw_send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return False
        if sent < len(frame):
            self._start_backlog(frame[sent:])
        return True

    def _start_backlog(self, rest: bytes) -> None:
        self._backlog = deque((rest,))
        self._backlog_bytes = len(rest)
        self._writer = gevent.spawn(self._write_backlog)

    def _write_backlog(self):
        """Writer greenlet: writes the backlog out, then ends."""
        backlog = self._backlog
        try:
            while backlog:
                chunk = backlog[0]
                with gevent.Timeout(self._write_timeout, False):
                    self.sock.sendall(chunk)
                    backlog.popleft()
                    self._backlog_bytes -= len(chunk)
                    continue
                log.info("%r: write timed out after %.1fs", self, self._write_timeout)
                metrics.drop("write_timeout")
                self.abort()
                return
        except OSError:
            self.abort()
            return
        finally:
            self._writer = None
        self._backlog = None
        self._backlog_bytes = 0
        if self.closing:
            self._shutdown_write()

    def ping(self) -> None:
        """A WebSocket ping; browsers answer with a pong, which counts as a sign of life."""
        if self.send(PING_FRAME):
            self.pinged = True

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is already queued; the reader ends when the peer
        answers, or the socket is shut down after CLOSE_TIMEOUT."""
        if self.closing or self.closed:
            return
        self.closing = True
        self._write(frames.close_frame(int(code), reason))
        if self._backlog is None:
            self._shutdown_write()
        gevent.spawn_later(CLOSE_TIMEOUT, self.abort)

    def _shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Stop all I/O now: the reader sees end of stream, the writer fails and ends."""
        if self.closed:
            return
        self.closed = True
        self.closing = True
        self._backlog = None
        self._backlog_bytes = 0
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def discard_input(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """After failing the connection: read and drop what the peer still sends until it
        closes, so that closing our socket does not reset the close frame away."""
        with gevent.Timeout(timeout, False):
            try:
                while self.sock.recv(65536):
                    pass
            except OSError:
                pass

    # -- reading -------------------------------------------------------------------------

    def _read_exact(self, n: int) -> bytes:
        """``n`` bytes, or fewer at end of stream."""
        buf = self._rbuf
        recv = self.sock.recv
        while len(buf) < n:
            chunk = recv(max(n - len(buf), 4096))
            if not chunk:
                self._rbuf = b""
                return buf
            buf = buf + chunk if buf else chunk
        if len(buf) == n:
            self._rbuf = b""
            return buf
        self._rbuf = buf[n:]
        return buf[:n]

    def read_message(self):
        """Block until a whole data message arrives: (opcode, payload bytes).

        Returns None at end of stream or after the peer's close frame. Answers pings.
        Raises FrameError when the peer breaks the framing rules or a message is
        larger than the limit (checked before the payload is read).
        """
        read = self._read_exact
        max_frame = self._max_frame
        parts = []
        size = 0
        opcode = None
        while True:
            head = read(2)
            if len(head) < 2:
                return None
            b0, b1 = head[0], head[1]
            fin = b0 & 0x80
            op = b0 & 0x0F
            if b0 & 0x70:
                raise FrameError(Disconnect.PROTOCOL_ERROR, "reserved bits set")
            if not b1 & 0x80:
                raise FrameError(Disconnect.PROTOCOL_ERROR, "client frames must be masked")
            n = b1 & 0x7F
            if n == 126:
                ext = read(2)
                if len(ext) < 2:
                    return None
                n = frames.unpack_h(ext)[0]
            elif n == 127:
                ext = read(8)
                if len(ext) < 8:
                    return None
                n = frames.unpack_q(ext)[0]
            if op in frames.CONTROL_OPCODES:
                if n > 125 or not fin:
                    raise FrameError(Disconnect.PROTOCOL_ERROR, "bad control frame")
            elif op in frames.DATA_OPCODES:
                if opcode is not None:
                    raise FrameError(Disconnect.PROTOCOL_ERROR, "new message inside a fragmented one")
            elif op == frames.OP_CONTINUATION:
                if opcode is None:
                    raise FrameError(Disconnect.PROTOCOL_ERROR, "continuation without a message")
            else:
                raise FrameError(Disconnect.PROTOCOL_ERROR, f"unknown opcode {op}")
            if op not in frames.CONTROL_OPCODES and size + n > max_frame:
                raise FrameError(Disconnect.MESSAGE_TOO_BIG, f"message larger than {max_frame} bytes")
            mask = read(4)
            payload = read(n) if n else b""
            if len(mask) < 4 or len(payload) < n:
                return None  # the peer vanished mid-frame
            payload = frames.unmask(payload, mask)
            self.last_seen = time.time()
            self.pinged = False
            if op == frames.OP_PING:
                if not self.closing:
                    self._write(frames.encode_frame(frames.OP_PONG, payload))
                continue
            if op == frames.OP_PONG:
                continue
            if op == frames.OP_CLOSE:
                code, _ = frames.parse_close(payload)
                if not self.closing:
                    # Answer the close handshake, echoing a valid code.
                    valid = 1000 <= code < 5000 and code not in (1005, 1006)
                    self.close(code if valid else CloseCode.NORMAL)
                return None
            if opcode is None:
                opcode = op
            parts.append(payload)
            size += n
            if fin:
                return opcode, (payload if len(parts) == 1 else b"".join(parts))

    def release(self) -> None:
        """Free the socket once the reader is done with it."""
        self.abort()
        try:
            self.sock.close()
        except OSError:
            pass


def send_to_all(conns, frame: bytes, skip_user: str = "") -> int:
    """Write one encoded frame to many connections (a room broadcast): the same bytes for
    every receiver, straight to each socket, no greenlet switch. Connections with a
    backlog or a close under way take the ordinary path. Returns the number written or
    queued. This loop is the node's hottest; it inlines ``Connection.send``."""
    delivered = 0
    size = len(frame)
    for conn in conns:
        if conn.user_id == skip_user:
            continue
        if conn._backlog is None and not conn.closing:
            try:
                sent = conn._raw_send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                conn.abort()
                continue
            if sent != size:
                conn._start_backlog(frame[sent:])
            delivered += 1
        elif conn.send(frame):
            delivered += 1
    return delivered
