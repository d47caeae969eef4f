"""The node: composes the hub, presence, delivery and sessions over a presence store and a
relay, runs their background work, and stops them in order."""
import logging
import os
import time
from typing import Optional

import gevent

from .. import __version__, metrics
from ..auth import Auth
from ..cluster import MemoryStreamStore, PresenceStore, Relay, StoreError, StreamStore
from ..config import is_cluster
from ..connection import CLOSE_TIMEOUT
from ..hub import Hub
from ..protocol import Disconnect
from .commands import CommandRegistry, commands as default_commands
from .delivery import Delivery
from .history import History
from .periodic import every
from .presence import ROOM_SIZE_INTERVAL, Presence
from .rooms import Rooms
from .sessions import Sessions

log = logging.getLogger("imserver.node")

GAUGES_INTERVAL = 5.0  # seconds between refreshes of the connection and backlog gauges
LEAVE_TIMEOUT = 5.0  # seconds a stop waits for the store to take the node out of the live set


class Node:
    def __init__(self, cfg: dict, store: PresenceStore, relay: Relay, auth: Auth,
                 advertise_ip: str, rpc_port: Optional[int] = None,
                 command_registry: CommandRegistry = default_commands,
                 streams: "StreamStore | None" = None):
        """``streams``: where rooms keep their history (in this process when None)."""
        self.cfg = cfg
        self.store = store
        self.relay = relay
        self.auth = auth
        self.hub = Hub()
        rpc_port = cfg["app.rpcPort"] if rpc_port is None else rpc_port
        self.app_ids = frozenset(cfg["app.appIDs"])
        self.max_connections = cfg["app.maxConnections"]
        self.presence = Presence(store, self.hub, advertise_ip, rpc_port, self.app_ids,
                                 cfg["app.reportInterval"])
        self.streams = streams if streams is not None else MemoryStreamStore()
        self.history = History(self.streams, cfg["app.historySize"], cfg["app.historyTTL"],
                               cfg["app.recoveryMax"])
        self.rooms = Rooms(self.hub, self.history, cfg["app.maxRoomsPerConnection"])
        self.delivery = Delivery(self.hub, relay, self.presence, self.rooms,
                                 cfg["app.presenceMaxRoom"])
        self.sessions = Sessions(cfg, self.hub, self.presence, self.delivery, auth,
                                 command_registry, self.history)
        self.addr = self.presence.addr
        self.started_at = time.time()
        self._background = []
        self._stopper = None
        self._closers = []  # called at stop, last added first

    @property
    def stopping(self) -> bool:
        """From ``stop`` on: upgrades are refused and new connections closed."""
        return self.sessions.closing

    # -- life ----------------------------------------------------------------------------

    def on_stop(self, fn) -> None:
        """Run ``fn()`` when the node stops (close a server, a pool)."""
        self._closers.append(fn)

    def start(self) -> None:
        presence, sessions = self.presence, self.sessions

        def sweep():
            sessions.sweep(time.time())
            presence.prune()
            self.streams.prune()

        self._background = [
            every(self.cfg["app.sweepInterval"], sweep, "sweep"),
            every(GAUGES_INTERVAL, self.update_gauges, "updating gauges"),
            every(presence.flush_interval, presence.flush_records, "writing user records"),
            every(presence.next_report_in, presence.report, "report"),
        ]
        if is_cluster(self.cfg):
            self._background.append(every(ROOM_SIZE_INTERVAL, presence.refresh_room_sizes,
                                          "room size exchange"))
        presence.report()

    def stop(self) -> None:
        """Leave the cluster, and close every client (they reconnect elsewhere) over
        app.drainWindow, whatever the store does meanwhile. Returns at once; from its
        return on, ``wait_stopped`` has the drain to wait for."""
        if self.stopping:
            return
        self.sessions.closing = True
        # The drain greenlet exists before anything here can yield (a store call does):
        # a worker's exit hook that comes meanwhile must find it.
        self._stopper = gevent.spawn(self._drain)
        for g in self._background:
            g.kill(block=False)

    def _drain(self) -> None:
        """Leave the registry while closing the clients with 1001 spread over
        app.drainWindow (so that their reconnects do not all land on the other nodes at
        once); then write their logouts and close the node's services. A slow or frozen
        store delays neither the closes nor the end by more than its own timeouts."""
        leaving = gevent.spawn(self.presence.leave)
        conns = tuple(self.hub.connections.values())
        window = self.cfg["app.drainWindow"]
        steps = max(1, min(len(conns), int(window / 0.05)))
        per_step = -(-len(conns) // steps) if conns else 0
        log.info("closing %d connections over %.1fs", len(conns), window)
        for start in range(0, len(conns), per_step or 1):
            for conn in conns[start:start + per_step]:
                self.sessions.end(conn, Disconnect.SHUTDOWN)
            if window:
                gevent.sleep(window / steps)
        with gevent.Timeout(CLOSE_TIMEOUT + 1, False):
            while self.hub.connections:
                gevent.sleep(0.05)
        leaving.join(LEAVE_TIMEOUT)
        self.presence.flush_records()  # the clients' logouts
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

    # -- what operators see --------------------------------------------------------------

    def _backlogs(self) -> "tuple[int, int]":
        """Connections with a write backlog (each has a writer greenlet), and its bytes."""
        writers = backlog = 0
        for conn in self.hub.connections.values():
            if conn.has_writer:
                writers += 1
                backlog += conn.backlog_bytes
        return writers, backlog

    def update_gauges(self) -> None:
        writers, backlog = self._backlogs()
        metrics.CONNECTIONS.set(len(self.hub.connections))
        metrics.USERS.set(self.hub.user_count)
        metrics.SEND_QUEUE_BYTES.set(backlog)
        metrics.SEND_QUEUE_CONNECTIONS.set(writers)

    def state(self, debug: bool = False) -> dict:
        conns = self.hub.connections
        writers, backlog = self._backlogs()
        rooms = {str(app_id): len(users) for app_id, users in self.hub.rooms.items()}
        cluster = is_cluster(self.cfg)
        state = {
            "node": self.addr,
            "mode": "cluster" if cluster else "embedded",
            "storeHealthy": self.presence.store_healthy,
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
                       "rateLimit": self.sessions.rate_limit,
                       "rateBurst": self.sessions.rate_burst},
            "drops": dict(metrics.local_drops),
            "stopping": self.stopping,
        }
        if cluster:
            try:
                state["liveNodes"] = self.store.live_nodes()
            except StoreError:
                state["liveNodes"] = None
            state["suspectNodes"] = self.relay.suspects()
        if debug:
            state["greenlets"]["total"] = _greenlet_count()
            state.update(self._debug_lists())
        return state

    def _debug_lists(self) -> dict:
        return {
            "connectionList": [
                {"id": c.id, "addr": f"{c.addr}:{c.port}", "appID": c.app_id,
                 "userID": c.user_id, "connectTime": int(c.connect_time),
                 "heartbeatTime": int(c.heartbeat_time), "backlogBytes": c.backlog_bytes}
                for c in self.hub.connections.values()],
            "userKeys": [f"{a}_{u}" for a, users in self.hub.rooms.items() for u in users],
        }


def _greenlet_count() -> int:
    import gc
    from greenlet import greenlet
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet))
