"""The node: one process's hub, its presence store and relay, its commands and its
background work. Delivery always goes local first, then through the relay, so the
embedded mode and the cluster run one code path."""
import itertools
import logging
import os
import socket
import time
from typing import Optional

import gevent
import gevent.pool

from . import __version__, metrics
from .cluster import PresenceStore, Relay, RelayError, StoreError, record_is_online, user_record
from .commands import CommandRegistry, commands as default_commands
from .config import is_cluster
from .connection import (CLOSE_HEARTBEAT_TIMEOUT, CLOSE_REPLACED, CLOSE_TIMEOUT, Connection,
                         send_to_all)
from .hub import Hub
from .protocol import Code, ProtocolError, encode_push, encode_reply, parse_request
from .protocol.envelope import ENTER_MESSAGE, EXIT_MESSAGE, is_encodable
from .protocol.frames import OP_TEXT, FrameError, text_frame

log = logging.getLogger("imserver.node")

PEERS_TTL = 1.0  # seconds a node trusts its list of live peers
RECORD_FLUSH_INTERVAL = 0.1  # seconds between batched writes of heartbeat/logout records
ROOM_SIZE_INTERVAL = 1.0  # seconds between exchanges of room sizes with the peers
RELAY_CONCURRENCY = 64  # background relays (presence events) under way at once


def resolve_advertise_ip(configured: str) -> str:
    """The address peers use to reach this node: the configured one, else the machine's
    first non-loopback IPv4 address, else 127.0.0.1."""
    if configured:
        return configured
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        ip = info[4][0]
        if not ip.startswith("127."):
            return ip
    return "127.0.0.1"


class Node:
    def __init__(self, cfg: dict, store: PresenceStore, relay: Relay, advertise_ip: str,
                 rpc_port: Optional[int] = None,
                 command_registry: CommandRegistry = default_commands):
        self.cfg = cfg
        self.store = store
        self.relay = relay
        self.hub = Hub()
        self.commands = command_registry
        self.ip = advertise_ip
        self.rpc_port = cfg["app.rpcPort"] if rpc_port is None else rpc_port
        self.addr = f"{advertise_ip}:{self.rpc_port}"
        self.app_ids = frozenset(cfg["app.appIDs"])
        self.max_user_id = cfg["app.maxUserIDLength"]
        self.max_connections = cfg["app.maxConnections"]
        self.rate_limit = cfg["app.rateLimit"]
        self.rate_burst = cfg["app.rateBurst"]
        self.presence_max_room = cfg["app.presenceMaxRoom"]
        self.started_at = time.time()
        self._seq = itertools.count(1)
        self._background = []
        self._stopper = None
        self._closers = []  # called at stop, last added first
        self._store_healthy = True
        self._peer_room_sizes: "dict[int, int]" = {}
        # user key -> the newest heartbeat or logout record not yet in the store; written
        # in one batch every RECORD_FLUSH_INTERVAL, and kept through a store outage.
        self._unwritten: "dict[str, dict]" = {}
        self._peers: "list[str]" = []
        self._peers_at = float("-inf")
        self._relay_pool = gevent.pool.Pool(RELAY_CONCURRENCY)
        self.stopping = False

    # -- life ----------------------------------------------------------------------------

    def on_stop(self, fn) -> None:
        """Run ``fn()`` when the node stops (close a server, a pool)."""
        self._closers.append(fn)

    def start(self) -> None:
        self._background.append(gevent.spawn(self._sweep_forever))
        self._background.append(gevent.spawn(self._gauges_forever))
        self._background.append(gevent.spawn(self._flush_forever))
        if is_cluster(self.cfg):
            self._background.append(gevent.spawn(self._room_sizes_forever))
        self.report()
        self._background.append(gevent.spawn(self._report_forever))

    def stop(self, close_code: int = 1001, reason: str = "server going away") -> None:
        """Leave the cluster at once, then close every client (they reconnect elsewhere),
        spread over app.drainWindow so that their reconnects do not all land at once.
        Returns at once; ``wait_stopped`` waits for the end."""
        if self.stopping:
            return
        self.stopping = True  # from now on upgrades are refused
        for g in self._background:
            g.kill(block=False)
        try:
            self.store.remove_node(self.addr)
        except StoreError as exc:
            log.warning("could not unregister node %s: %s", self.addr, exc)
        self._stopper = gevent.spawn(self._drain, close_code, reason)

    def _drain(self, close_code: int, reason: str) -> None:
        conns = tuple(self.hub.connections.values())
        window = self.cfg["app.drainWindow"]
        steps = max(1, min(len(conns), int(window / 0.05)))
        per_step = -(-len(conns) // steps) if conns else 0
        log.info("closing %d connections over %.1fs", len(conns), window)
        for start in range(0, len(conns), per_step or 1):
            for conn in conns[start:start + per_step]:
                conn.close(close_code, reason)
            if window:
                gevent.sleep(window / steps)
        with gevent.Timeout(CLOSE_TIMEOUT + 1, False):
            while self.hub.connections:
                gevent.sleep(0.05)
        self.flush_records()  # the clients' logouts
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:
                log.exception("error while stopping")

    def wait_stopped(self, timeout: float) -> bool:
        """After ``stop``: wait until the clients are gone and the node's services closed."""
        stopper = self._stopper
        if stopper is None:
            return True
        stopper.join(timeout)
        return stopper.dead

    def _gauges_forever(self, interval: float = 5.0):
        while True:
            self.update_gauges()
            gevent.sleep(interval)

    def _backlogs(self) -> "tuple[int, int]":
        """Connections with a write backlog (each has a writer greenlet), and its bytes."""
        writers = backlog = 0
        for conn in self.hub.connections.values():
            if conn.has_writer:
                writers += 1
                backlog += conn.backlog_bytes
        return writers, backlog

    def update_gauges(self) -> None:
        conns = self.hub.connections
        writers, backlog = self._backlogs()
        metrics.CONNECTIONS.set(len(conns))
        metrics.USERS.set(self.hub.user_count)
        metrics.SEND_QUEUE_BYTES.set(backlog)
        metrics.SEND_QUEUE_CONNECTIONS.set(writers)

    def _report_forever(self):
        interval = self.cfg["app.reportInterval"]
        while True:
            # Every second while the store is out: once it is back (perhaps empty), the
            # nodes must find each other again at once, not a report interval later.
            gevent.sleep(interval if self._store_healthy else min(interval, 1.0))
            try:
                self.report()
            except Exception:
                log.exception("report failed")

    def report(self) -> bool:
        """Register this node as alive now, publish its room sizes and learn the peers';
        after a store outage, write every local user's record again."""
        try:
            registered_anew = self.store.report_node(self.addr)
            if (registered_anew or not self._store_healthy) and self.hub.rooms:
                # The store was down or lost its data (a restart without persistence).
                records = [self._record(c, c.heartbeat_time) for room in self.hub.rooms.values()
                           for c in room.values()]
                self.store.set_users(records)
                log.warning("node %s registered again, %d user records rewritten",
                            self.addr, len(records))
            self.exchange_room_sizes()
        except StoreError as exc:
            if self._store_healthy:
                log.warning("cluster store unavailable, node %s keeps serving its own "
                            "users: %s", self.addr, exc)
            self._store_healthy = False
            return False
        self._store_healthy = True
        return True

    def exchange_room_sizes(self) -> None:
        """Publish this node's room sizes and read the live peers' ones: the presence bound
        counts the whole room. Raises StoreError."""
        sizes = {a: len(r) for a, r in self.hub.rooms.items()}
        self.store.report_room_sizes(self.addr, sizes, self.app_ids)
        live = set(self.store.live_nodes())
        self._peer_room_sizes = {
            app_id: sum(n for a, n in self.store.room_sizes(app_id).items()
                        if a != self.addr and a in live)
            for app_id in self.app_ids}

    def _room_sizes_forever(self):
        # Between reports too: in a login burst a stale count would let presence events
        # run far past app.presenceMaxRoom.
        while True:
            gevent.sleep(ROOM_SIZE_INTERVAL)
            if self._store_healthy:
                try:
                    self.exchange_room_sizes()
                except StoreError:
                    pass  # the next report notices and logs the outage
                except Exception:
                    log.exception("room size exchange failed")

    def _sweep_forever(self):
        interval = self.cfg["app.sweepInterval"]
        while True:
            gevent.sleep(interval)
            try:
                self.sweep(time.time())
            except Exception:  # the sweeper must survive anything
                log.exception("sweep failed")

    def sweep(self, now: float) -> int:
        """Close connections whose last heartbeat is older than the timeout; ping quiet
        ones, and drop those that did not answer a ping (dead peers behind NAT)."""
        limit = now - self.cfg["app.heartbeatTimeout"]
        ping_after = now - self.cfg["app.pingInterval"]
        dead_after = ping_after - self.cfg["app.pingTimeout"]
        closed = dropped = 0
        for conn in tuple(self.hub.connections.values()):
            if conn.closing:
                continue
            if conn.heartbeat_time < limit:
                conn.close(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")
                closed += 1
            elif conn.last_seen < dead_after and conn.pinged:
                conn.abort()
                dropped += 1
            elif conn.last_seen < ping_after and not conn.pinged:
                conn.ping()
        if closed:
            metrics.drop("heartbeat_timeout", closed)
        if dropped:
            metrics.drop("ping_timeout", dropped)
        if closed or dropped:
            log.info("closed %d connections without a heartbeat for %.0fs, dropped %d that "
                     "did not answer a ping", closed, self.cfg["app.heartbeatTimeout"], dropped)
        self.store.prune()
        return closed + dropped

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

    # -- one connection ------------------------------------------------------------------

    def adopt(self, ws) -> Connection:
        """Take over a freshly upgraded WebSocket and serve it in a greenlet of its own;
        returns at once, so the HTTP handler and its request state are freed."""
        conn = Connection.adopt(ws, max_frame_bytes=self.cfg["app.maxFrameBytes"],
                                max_backlog_bytes=self.cfg["app.sendQueueBytes"],
                                max_backlog_frames=self.cfg["app.sendQueueFrames"],
                                write_timeout=self.cfg["app.writeTimeout"],
                                burst=self.rate_burst)
        self.hub.add(conn)
        if self.stopping:
            conn.close(1001, "server going away")
        gevent.spawn(self._serve, conn)
        return conn

    def _serve(self, conn: Connection) -> None:
        """Read one connection to its end."""
        try:
            while True:
                try:
                    message = conn.read_message()
                except FrameError as exc:
                    log.info("%r: %s, closing with %d", conn, exc.reason, exc.close_code)
                    metrics.drop("message_too_big" if exc.close_code == 1009 else "protocol_error")
                    conn.close(exc.close_code, exc.reason)
                    conn.discard_input()
                    break
                if message is None:
                    break
                opcode, payload = message
                if opcode == OP_TEXT:
                    try:
                        payload = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        log.info("%r: text frame is not UTF-8, closing with 1007", conn)
                        metrics.drop("invalid_utf8")
                        conn.close(1007, "text frame is not valid UTF-8")
                        conn.discard_input()
                        break
                if self.allow_message(conn, conn.last_seen):
                    self.dispatch(conn, payload)
                elif conn.strikes >= self.rate_burst:
                    log.info("%r: kept sending over the rate limit, closing with 1008", conn)
                    metrics.drop("rate_limit")
                    conn.close(1008, "rate limit exceeded")
                    conn.discard_input()
                    break
                else:
                    self.refuse(conn, payload, Code.RATE_LIMITED)
        except OSError as exc:
            log.debug("%r: socket error %s", conn, exc)
        except Exception:
            log.exception("%r: reader failed", conn)
        finally:
            conn.release()
            self._disconnected(conn)

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
        label = metrics.command_label(request.cmd)
        metrics.MESSAGES_IN.labels(label).inc()
        if handler is None:
            reply = encode_reply(request.seq, request.cmd, Code.ROUTING_NOT_EXIST)
        else:
            started = time.perf_counter()
            try:
                code, data = handler(self, conn, request.data)
                reply = encode_reply(request.seq, request.cmd, code, data)
            except Exception:
                log.exception("%r: command %r failed", conn, request.cmd)
                reply = encode_reply(request.seq, request.cmd, Code.SERVER_ERROR)
            metrics.COMMAND_SECONDS.labels(label).observe(time.perf_counter() - started)
        conn.send(text_frame(reply))

    def valid_user_id(self, user_id) -> bool:
        return (isinstance(user_id, str) and 0 < len(user_id) <= self.max_user_id
                and is_encodable(user_id))

    def _record(self, conn: Connection, now: float, logoff: bool = False) -> dict:
        return user_record(self.ip, self.rpc_port, conn.app_id, conn.user_id, conn.addr,
                           conn.port, conn.login_time, now if not logoff else conn.heartbeat_time,
                           logout_time=now if logoff else 0, is_logoff=logoff)

    def login(self, conn: Connection, app_id: int, user_id: str) -> None:
        """Bind the connection to the user; may raise StoreError (then nothing changed).
        The login record is written at once: a login the store did not take is refused."""
        now = time.time()
        record = user_record(self.ip, self.rpc_port, app_id, user_id, conn.addr, conn.port,
                             now, now)
        self.store.set_user(record)
        self._unwritten.pop(f"{app_id}_{user_id}", None)  # an older logout must not follow
        old = self.hub.login(conn, app_id, user_id)
        conn.login_time = conn.heartbeat_time = now
        if old is not None:
            log.info("%r replaces %r", conn, old)
            metrics.drop("replaced")
            old.close(CLOSE_REPLACED, "logged in elsewhere")
        else:
            self.announce(app_id, user_id, "enter", ENTER_MESSAGE)

    def heartbeat(self, conn: Connection, now: float) -> None:
        conn.heartbeat_time = now
        self._unwritten[conn.user_key] = self._record(conn, now)

    def _disconnected(self, conn: Connection) -> None:
        if not self.hub.remove(conn):
            return
        self._unwritten[conn.user_key] = self._record(conn, time.time(), logoff=True)
        self.announce(conn.app_id, conn.user_id, "exit", EXIT_MESSAGE)

    def _flush_forever(self):
        while True:
            gevent.sleep(RECORD_FLUSH_INTERVAL if self._store_healthy else 1.0)
            try:
                self.flush_records()
            except Exception:
                log.exception("writing user records failed")

    def flush_records(self) -> bool:
        """Write the queued heartbeat and logout records in one batch (a pipeline on Redis:
        a round trip and a pool connection per batch, not per record). A logout whose user
        has logged in again meanwhile is dropped. On a store error the records are kept,
        newer ones winning, and written when the store is back."""
        if not self._unwritten:
            return True
        batch, self._unwritten = self._unwritten, {}
        records = [r for r in batch.values()
                   if not (r["isLogoff"] and self.hub.user(r["appID"], r["userID"]))]
        try:
            self.store.set_users(records)
        except StoreError as exc:
            batch.update(self._unwritten)
            self._unwritten = batch
            if self._store_healthy:
                log.warning("cluster store unavailable, %d user records wait to be written: %s",
                            len(batch), exc)
                self._store_healthy = False
            return False
        return True

    # -- delivery ------------------------------------------------------------------------

    def next_seq(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._seq)}"

    def room_size(self, app_id: int) -> int:
        """Members of the room in the cluster: exact here, as of the last report elsewhere."""
        return self.hub.room_size(app_id) + self._peer_room_sizes.get(app_id, 0)

    def announce(self, app_id: int, user_id: str, cmd: str, message: str) -> None:
        """A presence event, while the room is small enough for N-squared deliveries."""
        limit = self.presence_max_room
        if limit and self.room_size(app_id) <= limit:
            try:
                self.push_to_room(app_id, user_id, self.next_seq(), cmd, "text", message,
                                  wait=False)
            except StoreError as exc:
                log.debug("%s of %s_%s not relayed, peers unknown: %s", cmd, app_id, user_id, exc)

    def deliver_local(self, app_id: int, sender: str, frame: bytes) -> int:
        """Write one encoded frame to every local member of the room but ``sender``."""
        room = self.hub.rooms.get(app_id)
        if not room:
            return 0
        delivered = send_to_all(tuple(room.values()), frame, sender)
        metrics.DELIVERIES.inc(delivered)
        return delivered

    def deliver_frame_local(self, app_id: int, sender: str, seq: str, cmd: str, msg_type: str,
                            message: str) -> int:
        return self.deliver_local(app_id, sender,
                                  text_frame(encode_push(seq, cmd, message, sender, msg_type)))

    def deliver_to_local_user(self, app_id: int, user_id: str, seq: str, cmd: str,
                              msg_type: str, message: str, sender: str) -> bool:
        conn = self.hub.user(app_id, user_id)
        if conn is None or not conn.send(text_frame(encode_push(seq, cmd, message, sender,
                                                                msg_type))):
            return False
        metrics.DELIVERIES.inc()
        return True

    def peers(self, fresh: bool = False) -> "list[str]":
        """Live nodes but this one. Broadcasts take the list as the store said at most
        PEERS_TTL ago (a login burst must not cost one store round trip per presence
        event); queries ask ``fresh``. Raises StoreError."""
        now = time.monotonic()
        if fresh or now - self._peers_at > PEERS_TTL:
            self._peers = [a for a in self.store.live_nodes() if a != self.addr]
            self._peers_at = now
        return self._peers

    def relay_failed(self, failures) -> None:
        """Log failed calls to peers; take the unreachable ones (nothing listens at their
        address) out of the live set at once. A live node registers again at its next
        report; a slow or refusing one is not dropped."""
        for exc in failures:
            log.warning("relay: %s", exc)
            if not exc.unreachable:
                continue
            self.relay.forget(exc.peer)
            if exc.peer in self._peers:
                self._peers = [p for p in self._peers if p != exc.peer]
            try:
                self.store.remove_node(exc.peer)
            except StoreError:
                pass

    def push_to_room(self, app_id: int, sender: str, seq: str, cmd: str, msg_type: str,
                     message: str, wait: bool = True) -> "list[str]":
        """Deliver to the room here, then on every peer (in the background when not
        ``wait``: presence events must not hold up the login that caused them). Returns
        the peers the message did not reach (when waiting). Raises StoreError, after the
        local delivery, when the peers cannot be known."""
        frame = text_frame(encode_push(seq, cmd, message, sender, msg_type))
        metrics.MESSAGES_OUT.labels(cmd).inc()
        self.deliver_local(app_id, sender, frame)
        peers = self.peers()
        if peers:
            args = (peers, app_id, sender, seq, cmd, msg_type, message)
            if wait:
                return self._relay_broadcast(*args)
            elif self._relay_pool.full():
                # Peers are behind (a login burst on a saturated machine): presence events
                # are best effort; holding up logins or piling more on the peers is worse.
                metrics.RELAYS_SKIPPED.inc()
            else:
                self._relay_pool.spawn(self._relay_broadcast, *args)
        return []

    def _relay_broadcast(self, peers, *args) -> "list[str]":
        failures = self.relay.broadcast(peers, *args)
        if failures:
            self.relay_failed(failures)
        return [exc.peer for exc in failures]

    def push_to_user(self, app_id: int, user_id: str, seq: str, cmd: str, msg_type: str,
                     message: str, sender: str) -> "tuple[bool, str]":
        """Deliver to one user wherever they are: (delivered, reason when not).
        Raises StoreError when the store cannot say where the user is, and RelayError
        when the user's node cannot be reached."""
        metrics.MESSAGES_OUT.labels(cmd).inc()
        if self.deliver_to_local_user(app_id, user_id, seq, cmd, msg_type, message, sender):
            return True, ""
        peer = self._remote_home(app_id, user_id)
        if peer is None:
            return False, "user is not online"
        try:
            if self.relay.send_to_user(peer, app_id, user_id, seq, cmd, msg_type, message,
                                       sender):
                return True, ""
        except RelayError as exc:
            self.relay_failed([exc])
            raise
        return False, "user is not online"

    def user_list(self, app_id: int) -> "tuple[list[str], list[str]]":
        """Users of the room on every live node, each once, and the nodes that did not
        answer. Raises StoreError when the live nodes cannot be known."""
        users = self.hub.user_ids(app_id)
        peers = self.peers(fresh=True)
        failures = []
        if peers:
            remote, failures = self.relay.user_lists(peers, app_id)
            seen = set(users)
            users.extend(u for u in remote if not (u in seen or seen.add(u)))
            self.relay_failed(failures)
        return users, [exc.peer for exc in failures]

    def _remote_home(self, app_id: int, user_id: str) -> "str | None":
        """The live peer a fresh record places the user on, or None. Raises StoreError."""
        record = self.store.get_user(app_id, user_id)
        if not record_is_online(record):
            return None
        peer = f"{record['accIp']}:{record['accPort']}"
        if peer == self.addr or peer not in self.peers(fresh=True):
            return None
        return peer

    def is_online(self, app_id: int, user_id: str) -> bool:
        """Online here, or on the live peer its record names, as that peer confirms (a
        restarted node keeps its address but not its users). Raises StoreError."""
        if self.hub.user(app_id, user_id) is not None:
            return True
        peer = self._remote_home(app_id, user_id)
        if peer is None:
            return False
        try:
            return self.relay.query_online(peer, app_id, user_id)
        except RelayError as exc:
            self.relay_failed([exc])
            return False

    def claim_msg_id(self, msg_id: str) -> bool:
        """True when ``msg_id`` is new (or empty: no deduplication); may raise StoreError."""
        return not msg_id or self.store.claim_msg_id(msg_id)

    def release_msg_id(self, msg_id: str) -> None:
        if msg_id:
            try:
                self.store.release_msg_id(msg_id)
            except StoreError as exc:
                log.warning("msgID %s not released: %s", msg_id, exc)

    # -- state ---------------------------------------------------------------------------

    def state(self, debug: bool = False) -> dict:
        conns = self.hub.connections
        writers, backlog = self._backlogs()
        rooms = {str(app_id): len(users) for app_id, users in self.hub.rooms.items()}
        state = {
            "node": self.addr,
            "mode": "cluster" if is_cluster(self.cfg) else "embedded",
            "storeHealthy": self._store_healthy,
            "uptimeSeconds": int(time.time() - self.started_at),
            "connections": len(conns),
            "users": sum(rooms.values()),
            "rooms": rooms,
            # each connection has a reader greenlet; writers exist only while a backlog does
            "greenlets": {"readers": len(conns), "writers": writers},
            "sendQueue": {"connectionsWithBacklog": writers, "backlogBytes": backlog},
            "managerInfo": {"clientsLen": len(conns), "usersLen": sum(rooms.values())},
            "pid": os.getpid(),
            "version": __version__,
            "limits": {"maxConnections": self.max_connections,
                       "maxFrameBytes": self.cfg["app.maxFrameBytes"],
                       "rateLimit": self.rate_limit, "rateBurst": self.rate_burst},
            "drops": dict(metrics.local_drops),
            "stopping": self.stopping,
        }
        if is_cluster(self.cfg):
            try:
                state["liveNodes"] = self.store.live_nodes()
            except StoreError:
                state["liveNodes"] = None
        if debug:
            import gc
            from greenlet import greenlet
            state["greenlets"]["total"] = sum(1 for o in gc.get_objects()
                                              if isinstance(o, greenlet))
            state["connectionList"] = [
                {"id": c.id, "addr": f"{c.addr}:{c.port}", "appID": c.app_id,
                 "userID": c.user_id, "connectTime": int(c.connect_time),
                 "heartbeatTime": int(c.heartbeat_time), "backlogBytes": c.backlog_bytes}
                for c in conns.values()]
            state["userKeys"] = [f"{a}_{u}" for a, users in self.hub.rooms.items() for u in users]
        return state
