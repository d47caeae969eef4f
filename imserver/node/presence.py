"""Presence: this node's users and itself in the cluster store (records, heartbeats, batched
writes, reports, room sizes) and what the store says of the other nodes."""
import logging
import time

import gevent

from ..cluster import PresenceStore, StoreError, user_record
from ..hub import Hub

log = logging.getLogger("imserver.node")

PEERS_TTL = 1.0  # seconds a node trusts its list of live peers
RECORD_FLUSH_INTERVAL = 0.1  # seconds between batched writes of heartbeat/logout records
ROOM_SIZE_INTERVAL = 1.0  # seconds between exchanges of room sizes with the peers
# After the store lost this node's registration (a restart without persistence), the peers
# known before stay peers until they are registered again, for at most a report interval
# and this much more (nodes of this project register again within a second; others at
# their next report).
REJOIN_GRACE = 5.0


class Presence:
    def __init__(self, store: PresenceStore, hub: Hub, ip: str, rpc_port: int, app_ids,
                 report_interval: float):
        self.store = store
        self.hub = hub
        self.ip = ip
        self.rpc_port = rpc_port
        self.addr = f"{ip}:{rpc_port}"
        self.app_ids = app_ids
        self.report_interval = report_interval
        self.store_healthy = True
        self._peer_room_sizes: "dict[int, int]" = {}
        # user key -> the newest heartbeat or logout record not yet in the store; written
        # in one batch every RECORD_FLUSH_INTERVAL, and kept through a store outage.
        self._unwritten: "dict[str, dict]" = {}
        self._peers: "list[str]" = []
        self._peers_at = float("-inf")
        self.registered = False  # the store has listed this node since its last report
        self._known_peers: "list[str]" = []  # the peers before the store lost its data
        self._unconfirmed: "list[str]" = []  # known peers the store does not list again yet
        self._rejoin_until = float("-inf")
        self._reregistering = None

    # -- user records --------------------------------------------------------------------

    def _record(self, conn, now: float, logoff: bool = False) -> dict:
        return user_record(self.ip, self.rpc_port, conn.app_id, conn.user_id, conn.addr,
                           conn.port, conn.login_time, now if not logoff else conn.heartbeat_time,
                           logout_time=now if logoff else 0, is_logoff=logoff)

    def login(self, conn, app_id: int, user_id: str, now: float) -> None:
        """Write the login record at once: a login the store did not take is refused, so
        this raises StoreError (and then nothing changed)."""
        self.store.set_user(user_record(self.ip, self.rpc_port, app_id, user_id, conn.addr,
                                        conn.port, now, now))
        self._unwritten.pop(f"{app_id}_{user_id}", None)  # an older logout must not follow

    def heartbeat(self, conn, now: float) -> None:
        self._unwritten[conn.user_key] = self._record(conn, now)

    def logout(self, conn, now: float) -> None:
        self._unwritten[conn.user_key] = self._record(conn, now, logoff=True)

    def flush_interval(self) -> float:
        return RECORD_FLUSH_INTERVAL if self.store_healthy else 1.0

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
            if self.store_healthy:
                log.warning("cluster store unavailable, %d user records wait to be written: %s",
                            len(batch), exc)
                self.store_healthy = False
            return False
        return True

    def prune(self) -> None:
        self.store.prune()

    # -- this node in the cluster --------------------------------------------------------

    def next_report_in(self) -> float:
        # Every second while the store is out: once it is back (perhaps empty), the nodes
        # must find each other again at once, not a report interval later.
        return self.report_interval if self.store_healthy else min(self.report_interval, 1.0)

    def report(self) -> bool:
        """Register this node as alive now, publish its room sizes and learn the peers';
        after a store outage, write every local user's record again."""
        try:
            registered_anew = self.store.report_node(self.addr)
            self.registered = True
            if (registered_anew or not self.store_healthy) and self.hub.rooms:
                # The store was down or lost its data (a restart without persistence).
                records = [self._record(c, c.heartbeat_time) for room in self.hub.rooms.values()
                           for c in room]
                self.store.set_users(records)
                log.warning("node %s registered again, %d user records rewritten",
                            self.addr, len(records))
            self.exchange_room_sizes()
        except StoreError as exc:
            if self.store_healthy:
                log.warning("cluster store unavailable, node %s keeps serving its own "
                            "users: %s", self.addr, exc)
            self.store_healthy = False
            return False
        self.store_healthy = True
        return True

    def leave(self) -> None:
        """Take this node out of the live set (a clean stop)."""
        self.registered = False
        try:
            self.store.remove_node(self.addr)
        except StoreError as exc:
            log.warning("could not unregister node %s: %s", self.addr, exc)

    def exchange_room_sizes(self) -> None:
        """Publish this node's room sizes and read the live peers' ones: the presence bound
        counts the whole room. Raises StoreError."""
        sizes = {a: len(users) for a, users in self.hub.users.items()}
        self.store.report_room_sizes(self.addr, sizes, self.app_ids)
        live = set(self.store.live_nodes())
        self._check_registration(live)
        self._peer_room_sizes = {
            app_id: sum(n for a, n in self.store.room_sizes(app_id).items()
                        if a != self.addr and a in live)
            for app_id in self.app_ids}

    def refresh_room_sizes(self) -> None:
        # Between reports too: in a login burst a stale count would let presence events
        # run far past app.presenceMaxRoom. An outage is the next report's to notice.
        if self.store_healthy:
            try:
                self.exchange_room_sizes()
            except StoreError:
                pass

    def room_size(self, app_id: int) -> int:
        """Members of the room in the cluster: exact here, as of the last report elsewhere."""
        return self.hub.room_size(app_id) + self._peer_room_sizes.get(app_id, 0)

    def peers(self, fresh: bool = False) -> "list[str]":
        """Live nodes but this one. Broadcasts take the list as the store said at most
        PEERS_TTL ago (a login burst must not cost one store round trip per presence
        event); queries ask ``fresh``. While the store has not yet got back the nodes it
        lost, the peers known before count too. Raises StoreError."""
        now = time.monotonic()
        if fresh or now - self._peers_at > PEERS_TTL:
            live = self.store.live_nodes()
            self._check_registration(live)
            found = [a for a in live if a != self.addr]
            missing = [p for p in self._known_peers if p not in live]
            if missing and now < self._rejoin_until:
                self._unconfirmed = missing
                found += missing
            else:
                self._known_peers, self._unconfirmed = found, []
            self._peers = found
            self._peers_at = now
        return self._peers

    def unconfirmed_peers(self) -> "list[str]":
        """Peers known before the store lost its data that it does not list again yet."""
        return list(self._unconfirmed) if time.monotonic() < self._rejoin_until else []

    def _check_registration(self, live) -> None:
        """The store no longer lists this node, which reported: it lost its data (a
        restart without persistence, a flush) or a peer took this node for dead. Register
        again now, not at the next report, and rewrite the users' records."""
        if not self.registered or self.addr in live:
            return
        if time.monotonic() >= self._rejoin_until:
            log.warning("the cluster store lost node %s: registering again now", self.addr)
            self._rejoin_until = time.monotonic() + self.report_interval + REJOIN_GRACE
        if self._reregistering is None or self._reregistering.dead:
            self.registered = False
            self._reregistering = gevent.spawn(self.report)

    def forget_peer(self, peer: str) -> None:
        """A peer nothing answers at: out of the live set at once (a live node registers
        again at its next report)."""
        self._peers = [p for p in self._peers if p != peer]
        self._known_peers = [p for p in self._known_peers if p != peer]
        self._unconfirmed = [p for p in self._unconfirmed if p != peer]
        try:
            self.store.remove_node(peer)
        except StoreError:
            pass
