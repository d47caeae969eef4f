"""A minimal client-side WebSocket (RFC 6455) on a raw gevent socket.

Only what a load client needs: the HTTP upgrade handshake, masked client frames,
unmasked server frames (fragmented messages are reassembled), answering pings and the
close handshake. It is deliberately small so that one process holds ~15,000 connections:
one socket, one greenlet (the reader) and a few attributes per connection.

The module does no monkey-patching itself: the process using it must be gevent-patched
(``imserver.bench.client`` and the CLI patch first thing).
"""
import base64
import contextlib
import hashlib
import os
import socket
import struct
from urllib.parse import urlsplit

from ..protocol import frames
from ..protocol.frames import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux >= 4.2

_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack
_unpack_h = struct.Struct("!H").unpack
_unpack_q = struct.Struct("!Q").unpack


class WSError(Exception):
    """A failure of the connection; ``reason`` is a short, countable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ClosedError(WSError):
    """The server closed the connection (``code`` as in the close frame; 1006 without one)."""

    def __init__(self, code: int = 1006, detail: str = ""):
        super().__init__(f"closed {code}", detail)
        self.code = code


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """A complete, final, masked frame (client to server)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n <= 0xFFFF:
        head = bytes((first, 0x80 | 126)) + _pack_h(n)
    else:
        head = bytes((first, 0x80 | 127)) + _pack_q(n)
    key = os.urandom(4)
    # XOR is its own inverse: the server-side unmask masks as well.
    return head + key + frames.unmask(payload, key)


def parse_ws_url(url: str) -> "tuple[str, int, str]":
    """(host, port, path with query) of a ws:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "http"):
        raise ValueError(f"only ws:// URLs are supported (no TLS), got {url!r}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return host, port, path


class WSConnection:
    """One client WebSocket. ``connect()`` does TCP + handshake; ``recv_message()`` reads
    the next data message (for the login exchange); ``serve(on_message)`` is the reader
    loop; ``send_text()`` writes one masked frame."""

    __slots__ = ("sock", "_buf", "_pos", "_frag_op", "_frags", "closing", "initiated", "closed", "close_code",
                 "user", "index", "driver_state", "__weakref__")

    def __init__(self):
        self.sock = None
        self._buf = b""
        self._pos = 0
        self._frag_op = None
        self._frags = None
        self.closing = False  # a close frame was sent (ours, or the answer to the server's)
        self.initiated = False  # we started the close handshake
        self.closed = False
        self.close_code = None
        self.user = ""
        self.index = -1
        self.driver_state = None

    # -- opening --------------------------------------------------------------------------

    def connect(self, host: str, port: int, path: str, source_ip: str = "",
                timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        self.sock = sock
        sock.settimeout(timeout)
        with self._failing("connect"):
            if source_ip:
                # Let connect() choose the port with the whole 4-tuple in view, so that one
                # source address serves ~28,000 connections per server port.
                try:
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                except OSError:
                    pass
                sock.bind((source_ip, 0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect((host, port))
        key = base64.b64encode(os.urandom(16))
        request = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
                   + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                   + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        with self._failing("handshake"):
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise WSError("handshake eof", head[:200].decode("latin-1"))
                head += chunk
                if len(head) > 16384:
                    raise WSError("handshake too long")
        self._check_upgrade(head, key)

    @contextlib.contextmanager
    def _failing(self, stage: str):
        """A failure of ``stage`` aborts the connection and is raised as a WSError
        labelled with the stage."""
        try:
            yield
        except socket.timeout:
            self.abort()
            raise WSError(f"{stage} timeout")
        except OSError as exc:
            self.abort()
            raise WSError(f"{stage} {_errname(exc)}", str(exc))
        except WSError:
            self.abort()
            raise

    def _check_upgrade(self, head: bytes, key: bytes) -> None:
        """The server's answer must be 101 with the right Sec-WebSocket-Accept; what
        follows it is the start of the frames."""
        head, _, self._buf = head.partition(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = status_line.split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            self.abort()
            code = status[1].decode("latin-1") if len(status) > 1 else "?"
            raise WSError(f"handshake http {code}", status_line.decode("latin-1"))
        expected = base64.b64encode(hashlib.sha1(key + GUID).digest())
        accept = b""
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                accept = value.strip()
        if accept != expected:
            self.abort()
            raise WSError("handshake bad accept")

    # -- writing --------------------------------------------------------------------------

    def send_text(self, text) -> bool:
        if self.closing or self.closed:
            return False
        data = text.encode() if isinstance(text, str) else text
        try:
            self.sock.sendall(mask_frame(OP_TEXT, data))
            return True
        except OSError:
            self.abort()
            return False

    def close(self, code: int = 1000) -> None:
        """Start the close handshake; the reader loop ends when the server answers (the
        caller bounds the wait and aborts after it)."""
        if self.closing or self.closed:
            return
        self.closing = True
        self.initiated = True
        try:
            self.sock.sendall(mask_frame(OP_CLOSE, _pack_h(code)))
        except OSError:
            self.abort()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        sock = self.sock
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- reading --------------------------------------------------------------------------

    def _next(self):
        """The next whole data message in the buffer as (opcode, payload), or None when
        more bytes are needed. Answers control frames. Raises ClosedError on the server's
        close frame."""
        buf = self._buf
        while True:
            pos = self._pos
            avail = len(buf) - pos
            if avail < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if avail < 4:
                    break
                n = _unpack_h(buf[pos + 2:pos + 4])[0]
                hdr = 4
            elif n == 127:
                if avail < 10:
                    break
                n = _unpack_q(buf[pos + 2:pos + 10])[0]
                hdr = 10
            if b1 & 0x80:  # a masked server frame: tolerate it
                if avail < hdr + 4 + n:
                    break
                key = buf[pos + hdr:pos + hdr + 4]
                payload = frames.unmask(buf[pos + hdr + 4:pos + hdr + 4 + n], key)
                self._pos = pos + hdr + 4 + n
            else:
                if avail < hdr + n:
                    break
                payload = buf[pos + hdr:pos + hdr + n]
                self._pos = pos + hdr + n
            op = b0 & 0x0F
            fin = b0 & 0x80
            if op == OP_TEXT or op == OP_BINARY:
                if fin:
                    return op, payload
                self._frag_op = op
                self._frags = [payload]
                continue
            if op == OP_PING:
                if not self.closing:
                    try:
                        self.sock.sendall(mask_frame(OP_PONG, payload))
                    except OSError:
                        pass
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self._buf = b""
                self._pos = 0
                code = _unpack_h(payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_code = code
                if not self.closing:
                    self.closing = True
                    try:
                        self.sock.sendall(mask_frame(OP_CLOSE, payload[:2]))
                    except OSError:
                        pass
                raise ClosedError(code, payload[2:].decode("utf-8", "replace"))
            if op == OP_CONTINUATION:
                if self._frags is None:
                    raise WSError("protocol", "continuation without a message")
                self._frags.append(payload)
                if fin:
                    whole = b"".join(self._frags)
                    op = self._frag_op
                    self._frags = self._frag_op = None
                    return op, whole
                continue
            raise WSError("protocol", f"opcode {op}")
        return None

    def _feed(self, chunk: bytes) -> None:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf = chunk
        else:
            self._buf = self._buf[pos:] + chunk
        self._pos = 0

    def recv_message(self):
        """Block until the next data message: (opcode, payload bytes). For the login
        exchange, before ``serve``; the socket timeout bounds the wait."""
        while True:
            message = self._next()
            if message is not None:
                return message
            self._read_more(self.sock.recv)

    def _read_more(self, recv) -> None:
        """Add what the socket has to the buffer; WSError when it ends or fails (the
        connection is aborted), WSError "timeout" when its timeout passes first."""
        try:
            chunk = recv(65536)
        except socket.timeout:
            raise WSError("timeout")
        except OSError as exc:
            self.abort()
            raise WSError(f"recv {_errname(exc)}", str(exc))
        if not chunk:
            self.abort()
            raise ClosedError(1006, "end of stream")
        self._feed(chunk)

    def serve(self, on_message, clock) -> None:
        """The reader loop: ``on_message(conn, opcode, payload, recv_time)`` for every data
        message until the connection ends. Raises ClosedError/WSError at its end."""
        sock = self.sock
        sock.settimeout(None)
        recv = sock.recv
        nxt = self._next
        now = clock()
        while True:
            message = nxt()
            while message is not None:
                on_message(self, message[0], message[1], now)
                message = nxt()
            self._read_more(recv)  # no socket timeout here: it blocks until data or the end
            now = clock()


def _errname(exc: OSError) -> str:
    import errno
    return errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
