"""Sessions: each connection from its upgrade to its end (reading, rate limit, dispatch to
the commands), and the logins, replacements, heartbeats and logouts of its user."""
import logging
import time

import gevent

from .. import metrics
from ..auth import Auth
from ..connection import Connection
from ..hub import Hub
from ..protocol import Code, Disconnect, ProtocolError, encode_reply, parse_request
from ..protocol.envelope import has_control_chars, is_encodable
from ..protocol.frames import OP_TEXT, FrameError, text_frame
from .commands import CommandError, CommandRegistry
from .delivery import Delivery
from .history import History
from .presence import Presence

log = logging.getLogger("imserver.node")


class Sessions:
    def __init__(self, cfg: dict, hub: Hub, presence: Presence, delivery: Delivery,
                 auth: Auth, commands: CommandRegistry, history: History):
        self.hub = hub
        self.presence = presence
        self.delivery = delivery
        self.rooms = delivery.rooms
        self.history = history
        self.max_message_length = cfg["app.maxMessageLength"]
        self.auth = auth
        self.commands = commands
        self.app_ids = frozenset(cfg["app.appIDs"])
        self.max_user_id = cfg["app.maxUserIDLength"]
        self.rate_limit = cfg["app.rateLimit"]
        self.rate_burst = cfg["app.rateBurst"]
        self.heartbeat_timeout = cfg["app.heartbeatTimeout"]
        self.ping_interval = cfg["app.pingInterval"]
        self.ping_timeout = cfg["app.pingTimeout"]
        self._limits = dict(max_frame_bytes=cfg["app.maxFrameBytes"],
                            max_backlog_bytes=cfg["app.sendQueueBytes"],
                            max_backlog_frames=cfg["app.sendQueueFrames"],
                            write_timeout=cfg["app.writeTimeout"], burst=self.rate_burst)
        self.closing = False  # the node is shutting down: new connections are closed at once

    # -- one connection ------------------------------------------------------------------

    def adopt(self, ws) -> Connection:
        """Take over a freshly upgraded WebSocket and serve it in a greenlet of its own;
        returns at once, so the HTTP handler and its request state are freed."""
        conn = Connection.adopt(ws, **self._limits)
        self.hub.add(conn)
        if self.closing:
            self.end(conn, Disconnect.SHUTDOWN)
        gevent.spawn(self._serve, conn)
        return conn

    def end(self, conn: Connection, disconnect: Disconnect, reason: str = "") -> None:
        """Close ``conn`` for one of the node's reasons (``reason`` overrides its text),
        counted as a drop where it is one."""
        if disconnect.drop:
            metrics.drop(disconnect.drop)
        conn.close(disconnect.code, reason or disconnect.reason)

    def _fail(self, conn: Connection, disconnect: Disconnect, reason: str = "") -> None:
        """End a connection whose client broke a rule, reading what it still sends."""
        log.info("%r: %s, closing with %d", conn, reason or disconnect.reason,
                 disconnect.code)
        self.end(conn, disconnect, reason)
        conn.discard_input()

    def _serve(self, conn: Connection) -> None:
        """Read one connection to its end."""
        try:
            while True:
                try:
                    message = conn.read_message()
                except FrameError as exc:
                    self._fail(conn, exc.disconnect, exc.reason)
                    break
                if message is None:
                    break
                opcode, payload = message
                if opcode == OP_TEXT:
                    try:
                        payload = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        self._fail(conn, Disconnect.INVALID_UTF8)
                        break
                if self.allow_message(conn, conn.last_seen):
                    self.dispatch(conn, payload)
                elif conn.strikes >= self.rate_burst:
                    self._fail(conn, Disconnect.RATE_LIMITED)
                    break
                else:
                    self.refuse(conn, payload, Code.RATE_LIMITED)
        except OSError as exc:
            log.debug("%r: socket error %s", conn, exc)
        except Exception:
            log.exception("%r: reader failed", conn)
        finally:
            conn.release()
            self.disconnected(conn)

    def allow_message(self, conn: Connection, now: float) -> bool:
        """Token bucket: app.rateLimit messages a second, bursts of app.rateBurst."""
        tokens = min(self.rate_burst, conn.tokens + (now - conn.tokens_time) * self.rate_limit)
        conn.tokens_time = now
        if tokens >= 1.0:
            conn.tokens = tokens - 1.0
            conn.strikes = 0
            return True
        conn.tokens = tokens
        conn.strikes += 1
        return False

    def refuse(self, conn: Connection, payload, code: Code) -> None:
        """Answer a request with ``code`` without running it."""
        try:
            request = parse_request(payload)
        except ProtocolError as exc:
            conn.send(text_frame(encode_reply(exc.seq, exc.cmd, exc.code)))
            return
        conn.send(text_frame(encode_reply(request.seq, request.cmd, code)))

    def dispatch(self, conn: Connection, payload) -> None:
        try:
            request = parse_request(payload)
        except ProtocolError as exc:
            conn.send(text_frame(encode_reply(exc.seq, exc.cmd, exc.code)))
            return
        handler = self.commands.get(request.cmd)
        # Known commands label the metrics; anything a client makes up is "other".
        label = request.cmd if handler is not None else "other"
        metrics.MESSAGES_IN.labels(label).inc()
        if handler is None:
            reply = encode_reply(request.seq, request.cmd, Code.ROUTING_NOT_EXIST)
        else:
            started = time.perf_counter()
            after = None
            try:
                code, data, *then = handler(self, conn, request.data)
                reply = encode_reply(request.seq, request.cmd, code, data)
                after = then[0] if then else None
            except CommandError as exc:
                reply = encode_reply(request.seq, request.cmd, exc.code, None, exc.detail)
            except Exception:
                log.exception("%r: command %r failed", conn, request.cmd)
                reply = encode_reply(request.seq, request.cmd, Code.SERVER_ERROR)
            metrics.COMMAND_SECONDS.labels(label).observe(time.perf_counter() - started)
            if after is not None:
                # What must follow the reply on the wire (a join's held messages) is sent
                # right after it, with nothing in between.
                conn.send(text_frame(reply))
                after()
                return
        conn.send(text_frame(reply))

    # -- its user ------------------------------------------------------------------------

    def valid_user_id(self, user_id) -> bool:
        # No control characters: a user ID is written into logs, records and other pages.
        return (isinstance(user_id, str) and 0 < len(user_id) <= self.max_user_id
                and is_encodable(user_id) and not has_control_chars(user_id))

    def login(self, conn: Connection, app_id: int, user_id: str) -> None:
        """Bind the connection to the user; may raise StoreError (then nothing changed).
        An older connection of the same user here is replaced and closed."""
        now = time.time()
        self.presence.login(conn, app_id, user_id, now)
        old = self.hub.login(conn, app_id, user_id)
        conn.login_time = conn.heartbeat_time = now
        if old is not None:
            log.info("%r replaces %r", conn, old)
            self.end(old, Disconnect.REPLACED)
        else:
            self.delivery.announce(app_id, user_id, "enter")

    def heartbeat(self, conn: Connection, now: float) -> None:
        conn.heartbeat_time = now
        self.presence.heartbeat(conn, now)

    def disconnected(self, conn: Connection) -> None:
        left = self.rooms.drop_connection(conn)
        if conn.user_id:
            for room in left:
                self.delivery.announce(conn.app_id, conn.user_id, "exit", room)
        if not self.hub.remove(conn):
            return
        self.presence.logout(conn, time.time())
        self.delivery.announce(conn.app_id, conn.user_id, "exit")

    def sweep(self, now: float) -> int:
        """Close connections whose last heartbeat is older than the timeout; ping quiet
        ones, and drop those that did not answer a ping (dead peers behind NAT)."""
        limit = now - self.heartbeat_timeout
        ping_after = now - self.ping_interval
        dead_after = ping_after - self.ping_timeout
        closed = dropped = 0
        for conn in tuple(self.hub.connections.values()):
            if conn.closing:
                continue
            if conn.heartbeat_time < limit:
                self.end(conn, Disconnect.HEARTBEAT_TIMEOUT)
                closed += 1
            elif conn.last_seen < dead_after and conn.pinged:
                conn.abort()
                dropped += 1
            elif conn.last_seen < ping_after and not conn.pinged:
                conn.ping()
        if dropped:
            metrics.drop("ping_timeout", dropped)
        if closed or dropped:
            log.info("closed %d connections without a heartbeat for %.0fs, dropped %d that "
                     "did not answer a ping", closed, self.heartbeat_timeout, dropped)
        return closed + dropped
