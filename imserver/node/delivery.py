"""Delivery: a message to a room or a user, here first, then through the relay to the peers;
a peer that fails is an answer (who was missed), not an exception in the caller."""
import itertools
import logging
import time

import gevent
import gevent.pool

from .. import metrics
from ..cluster import PeerService, Relay, RelayError, StoreError, record_is_online
from ..connection import send_to_all
from ..hub import Hub
from ..protocol import Message
from ..protocol.envelope import ENTER_MESSAGE, EXIT_MESSAGE
from ..throttle import ThrottledLog
from .presence import Presence

log = logging.getLogger("imserver.node")
# A frozen or refusing peer fails every call that touches it: one line now and then.
relay_failure_log = ThrottledLog(log, logging.WARNING, "relay: %s", every=5.0)

RELAY_CONCURRENCY = 64  # background relays (presence events) under way at once
PRESENCE_TEXT = {"enter": ENTER_MESSAGE, "exit": EXIT_MESSAGE}


class Delivery(PeerService):
    def __init__(self, hub: Hub, relay: Relay, presence: Presence, presence_max_room: int):
        self.hub = hub
        self.relay = relay
        self.presence = presence
        self.presence_max_room = presence_max_room
        self._seq = itertools.count(1)
        self._relay_pool = gevent.pool.Pool(RELAY_CONCURRENCY)

    def next_seq(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._seq)}"

    # -- here (also what peers ask of this node) -----------------------------------------

    def deliver_to_room(self, message: Message) -> int:
        """Write the message's frame to every local member of its room but its sender."""
        room = self.hub.rooms.get(message.app_id)
        if not room:
            return 0
        delivered = send_to_all(tuple(room.values()), message.frame, message.sender)
        metrics.DELIVERIES.inc(delivered)
        return delivered

    def deliver_to_user(self, user_id: str, message: Message) -> bool:
        conn = self.hub.user(message.app_id, user_id)
        if conn is None or not conn.send(message.frame):
            return False
        metrics.DELIVERIES.inc()
        return True

    def local_users(self, app_id: int) -> "list[str]":
        return self.hub.user_ids(app_id)

    def is_local(self, app_id: int, user_id: str) -> bool:
        return self.hub.user(app_id, user_id) is not None

    # -- the whole cluster ---------------------------------------------------------------

    def announce(self, app_id: int, user_id: str, cmd: str) -> None:
        """A presence event (``enter``, ``exit``), while the room is small enough for
        N-squared deliveries."""
        limit = self.presence_max_room
        if limit and self.presence.room_size(app_id) <= limit:
            message = Message(app_id, self.next_seq(), cmd, PRESENCE_TEXT[cmd], user_id)
            try:
                self.push_to_room(message, wait=False)
            except StoreError as exc:
                log.debug("%s of %s_%s not relayed, peers unknown: %s", cmd, app_id, user_id, exc)

    def push_to_room(self, message: Message, wait: bool = True) -> "list[str]":
        """Deliver to the room here, then on every peer (in the background when not
        ``wait``: presence events must not hold up the login that caused them). Returns
        the peers the message did not reach (when waiting). Raises StoreError, after the
        local delivery, when the peers cannot be known."""
        metrics.MESSAGES_OUT.labels(message.cmd).inc()
        self.deliver_to_room(message)
        peers = self.presence.peers()
        if peers:
            if wait:
                return self._relay_broadcast(peers, message)
            elif self._relay_pool.full():
                # Peers are behind (a login burst on a saturated machine): presence events
                # are best effort; holding up logins or piling more on the peers is worse.
                metrics.RELAYS_SKIPPED.inc()
            else:
                self._relay_pool.spawn(self._relay_broadcast, peers, message)
        return []

    def _relay_broadcast(self, peers, message: Message) -> "list[str]":
        failures = self.relay.broadcast(peers, message)
        if failures:
            self.relay_failed(failures)
        return [exc.peer for exc in failures]

    def push_to_user(self, user_id: str, message: Message) -> "tuple[bool, str]":
        """Deliver to one user wherever they are: (delivered, reason when not).
        Raises StoreError when the store cannot say where the user is, and RelayError
        when the user's node cannot be reached."""
        metrics.MESSAGES_OUT.labels(message.cmd).inc()
        if self.deliver_to_user(user_id, message):
            return True, ""
        peer = self._remote_home(message.app_id, user_id)
        if peer is None:
            return False, "user is not online"
        try:
            if self.relay.send_to_user(peer, user_id, message):
                return True, ""
        except RelayError as exc:
            self.relay_failed([exc])
            raise
        return False, "user is not online"

    def relay_failed(self, failures) -> None:
        """Log failed calls to peers; take the unreachable ones (nothing listens at their
        address) out of the live set at once. A slow or refusing peer is not dropped."""
        for exc in failures:
            relay_failure_log(exc)
            if exc.unreachable:
                self.relay.forget(exc.peer)
                self.presence.forget_peer(exc.peer)

    def user_list(self, app_id: int) -> "tuple[list[str], list[str]]":
        """Users of the room on every live node, each once, and the nodes that did not
        answer. Raises StoreError when the live nodes cannot be known."""
        users = self.hub.user_ids(app_id)
        peers = self.presence.peers(fresh=True)
        failures = []
        if peers:
            remote, failures = self.relay.user_lists(peers, app_id)
            seen = set(users)
            users.extend(u for u in remote if not (u in seen or seen.add(u)))
            self.relay_failed(failures)
        return users, [exc.peer for exc in failures]

    def _remote_home(self, app_id: int, user_id: str) -> "str | None":
        """The live peer a fresh record places the user on, or None. While the store is
        getting back data it lost, the peers it does not list again yet are asked.
        Raises StoreError."""
        record = self.presence.store.get_user(app_id, user_id)
        if not record_is_online(record):
            return self._ask_unconfirmed(app_id, user_id)
        peer = f"{record['accIp']}:{record['accPort']}"
        if peer == self.presence.addr or peer not in self.presence.peers(fresh=True):
            return None
        return peer

    def _ask_unconfirmed(self, app_id: int, user_id: str) -> "str | None":
        self.presence.peers(fresh=True)  # notices a store that lost its data
        peers = self.presence.unconfirmed_peers()
        if not peers:
            return None
        asks = {peer: gevent.spawn(self._confirms, peer, app_id, user_id) for peer in peers}
        gevent.joinall(list(asks.values()))
        return next((peer for peer, ask in asks.items() if ask.value), None)

    def _confirms(self, peer: str, app_id: int, user_id: str) -> bool:
        try:
            return self.relay.query_online(peer, app_id, user_id)
        except RelayError as exc:
            self.relay_failed([exc])
            return False

    def is_online(self, app_id: int, user_id: str) -> bool:
        """Online here, or on the live peer its record names, as that peer confirms (a
        restarted node keeps its address but not its users). Raises StoreError."""
        if self.is_local(app_id, user_id):
            return True
        peer = self._remote_home(app_id, user_id)
        if peer is None:
            return False
        try:
            return self.relay.query_online(peer, app_id, user_id)
        except RelayError as exc:
            self.relay_failed([exc])
            return False

    # -- idempotency ---------------------------------------------------------------------

    def claim_msg_id(self, msg_id: str) -> bool:
        """True when ``msg_id`` is new (or empty: no deduplication); may raise StoreError."""
        return not msg_id or self.presence.store.claim_msg_id(msg_id)

    def release_msg_id(self, msg_id: str) -> None:
        if msg_id:
            try:
                self.presence.store.release_msg_id(msg_id)
            except StoreError as exc:
                log.warning("msgID %s not released: %s", msg_id, exc)
