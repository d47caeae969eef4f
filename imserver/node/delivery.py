"""Delivery: a message to a room or a user, here first, then through the relay to the peers;
a peer that fails is an answer (who was missed), not an exception in the caller."""
import itertools
import logging
import time

import gevent
import gevent.pool

from .. import metrics
from ..cluster import PeerService, Relay, RelayError, StoreError, record_is_online
from ..hub import Hub
from ..protocol import Message
from ..protocol.envelope import ENTER_MESSAGE, EXIT_MESSAGE
from ..throttle import ThrottledLog
from .presence import Presence
from .rooms import Rooms

log = logging.getLogger("imserver.node")
# A frozen or refusing peer fails every call that touches it: one line now and then.
relay_failure_log = ThrottledLog(log, logging.WARNING, "relay: %s", every=5.0)

RELAY_CONCURRENCY = 64  # background relays (presence events) under way at once
# A stored message a live peer did not take is offered to it once more this much later: a
# peer delivers each offset once, so a second offer is harmless, and a member who is online
# there gets it then rather than at the room's next message.
RELAY_RETRY_AFTER = 1.0
PRESENCE_TEXT = {"enter": ENTER_MESSAGE, "exit": EXIT_MESSAGE}
OWNER_SEPARATOR = "\x1f"  # the unit separator, in a user's own msgID claims


class Delivery(PeerService):
    def __init__(self, hub: Hub, relay: Relay, presence: Presence, rooms: Rooms,
                 presence_max_room: int):
        self.hub = hub
        self.relay = relay
        self.presence = presence
        self.rooms = rooms
        self.presence_max_room = presence_max_room
        self._seq = itertools.count(1)
        self._relay_pool = gevent.pool.Pool(RELAY_CONCURRENCY)
        # Closes a connection a login elsewhere replaced: the node's Sessions' to do.
        self.replace_local = lambda app_id, user_id, device, login_time: 0

    def next_seq(self) -> str:
        return f"{int(time.time() * 1000)}-{next(self._seq)}"

    # -- here (also what peers ask of this node) -----------------------------------------

    def deliver_to_room(self, message: Message) -> int:
        """Write the message's frame to every local member of its room but its sender."""
        return self.rooms.deliver(message)

    def replace_here(self, app_id: int, user_id: str, device: str, login_time: float) -> int:
        return self.replace_local(app_id, user_id, device, login_time)

    def replace_elsewhere(self, app_id: int, user_id: str, device: str,
                          login_time: float) -> None:
        """A login here takes the user's device on the other nodes too (in the background:
        the login does not wait for them)."""
        if not self.presence.peers():
            return

        def replace():
            try:
                homes = self._remote_homes(app_id, user_id)
            except StoreError as exc:
                log.warning("older logins of %s_%s elsewhere not closed: %s", app_id, user_id, exc)
                return
            failures = self.relay.replace(homes, app_id, user_id, device, login_time)
            if failures:
                self.relay_failed(failures)

        self._relay_pool.spawn(replace)

    def publish_here(self, message: Message) -> int:
        self.rooms.deliver(message)
        return self.rooms.size_of(message)

    def local_room_users(self, app_id: int, room: str) -> "list[str]":
        return self.rooms.users(app_id, room)

    def deliver_to_user(self, user_id: str, message: Message) -> bool:
        """Write the message to every device of the user here; False when none took it."""
        delivered = 0
        for conn in tuple(self.hub.devices(message.app_id, user_id).values()):
            if conn.send(message.frame):
                delivered += 1
        metrics.DELIVERIES.inc(delivered)
        return delivered > 0

    def local_users(self, app_id: int) -> "list[str]":
        return self.hub.user_ids(app_id)

    def is_local(self, app_id: int, user_id: str) -> bool:
        return self.hub.user(app_id, user_id) is not None

    # -- the whole cluster ---------------------------------------------------------------

    def room_size(self, app_id: int, room: str) -> int:
        """Members of the room over the cluster: for the app's room as the room size
        exchange says; for a named room, here and as the peers said at its last message."""
        if not room:
            return self.presence.room_size(app_id)
        local = self.rooms.get(app_id, room)
        if local is None:
            return 0
        return self.rooms.size(app_id, room) + sum(local.peer_members.values())

    def announce(self, app_id: int, user_id: str, cmd: str, room: str = "",
                 skip=None) -> None:
        """A presence event (``enter``, ``exit``), while the room is small enough for
        N-squared deliveries; ``skip``: the connection it is about."""
        limit = self.presence_max_room
        if limit and self.room_size(app_id, room) <= limit:
            message = Message(app_id, self.next_seq(), cmd, PRESENCE_TEXT[cmd], user_id,
                              room=room)
            try:
                self.push_to_room(message, wait=False, skip=skip)
            except StoreError as exc:
                log.debug("%s of %s_%s not relayed, peers unknown: %s", cmd, app_id, user_id, exc)

    def push_to_room(self, message: Message, wait: bool = True, skip=None) -> "list[str]":
        """Deliver to the room here (but ``skip``, the sending connection), then on every
        peer (in the background when not ``wait``: presence events must not hold up the
        login that caused them). Returns the peers the message did not reach (when
        waiting). Raises StoreError, after the local delivery, when the peers cannot be
        known."""
        metrics.MESSAGES_OUT.labels(message.cmd).inc()
        self.rooms.deliver(message, skip)
        peers = self.presence.peers()
        if peers:
            if wait:
                return self._relay_to_room(peers, message)
            elif self._relay_pool.full():
                # Peers are behind (a login burst on a saturated machine): presence events
                # are best effort; holding up logins or piling more on the peers is worse.
                metrics.RELAYS_SKIPPED.inc()
            else:
                self._relay_pool.spawn(self._relay_to_room, peers, message)
        return []

    def _relay_to_room(self, peers, message: Message) -> "list[str]":
        """A named room's message, or a stored one, goes in a Publish (which original
        nodes get only for the app's room, as SendMsgAll); the app room's unstored ones
        as the original's SendMsgAll."""
        if message.room or message.offset:
            members, failures = self.relay.publish(peers, message)
            local = self.rooms.get(message.app_id, message.room) if message.room else None
            if local is not None:
                local.peer_members.update(members)
                for exc in failures:
                    local.peer_members.pop(exc.peer, None)
            self._offer_again(failures, message)
        else:
            failures = self.relay.broadcast(peers, message)
        if failures:
            self.relay_failed(failures)
        return [exc.peer for exc in failures]

    def room_users(self, app_id: int, room: str) -> "tuple[list[str], list[str]]":
        """Users of a room on every live node, each once, and the nodes that did not
        answer. Raises StoreError when the live nodes cannot be known."""
        if not room:
            return self.user_list(app_id)
        users = self.rooms.users(app_id, room)
        peers = self.presence.peers(fresh=True)
        failures = []
        if peers:
            remote, failures = self.relay.room_users(peers, app_id, room)
            seen = set(users)
            users.extend(u for u in remote if not (u in seen or seen.add(u)))
            self.relay_failed(failures)
        return users, [exc.peer for exc in failures]

    def push_to_user(self, user_id: str, message: Message) -> "tuple[bool, str]":
        """Deliver to every device of one user wherever they are: (delivered, reason
        when not). Raises StoreError when the store cannot say where the user is, and
        RelayError when none got it and a node of the user could not be reached."""
        metrics.MESSAGES_OUT.labels(message.cmd).inc()
        here = self.deliver_to_user(user_id, message)
        remote, failures = False, []
        for peer in self._remote_homes(message.app_id, user_id):
            try:
                remote = self.relay.send_to_user(peer, user_id, message) or remote
            except RelayError as exc:
                failures.append(exc)
        if failures:
            self.relay_failed(failures)
        if here or remote:
            return True, ""
        if failures:
            raise failures[0]
        return False, "user is not online"

    def push_private(self, message: Message, skip=None) -> "tuple[bool, list[RelayError]]":
        """A stored private message to every connection of the user whose inbox holds it
        (``message.inbox``), here and on its other nodes, but ``skip`` (the sending
        connection): (did any connection get it now, the calls to the user's nodes that
        failed). Raises StoreError when the store cannot say where the user is."""
        metrics.MESSAGES_OUT.labels(message.cmd).inc()
        # A connection here counts even when the message waits behind a gap in the inbox:
        # the missing ones are read from the store within a moment, then it follows.
        delivered = self.rooms.deliver(message, skip) > 0 or (
            skip is None and self.rooms.size_of(message) > 0)
        homes = self._remote_homes(message.app_id, message.inbox)
        if not homes:
            return delivered, []
        members, failures = self.relay.publish(homes, message)
        if failures:
            self.relay_failed(failures)
            self._offer_again(failures, message)
        return delivered or any(n > 0 for n in members.values()), failures

    def _offer_again(self, failures, message: Message) -> None:
        """One more Publish, later, of a stored message to the live peers that did not take
        it (a peer that is gone is not asked again)."""
        peers = [exc.peer for exc in failures if not exc.unreachable]
        if not message.offset or not peers:
            return

        def again():
            failed = self.relay.publish(peers, message)[1]
            if failed:
                self.relay_failed(failed)

        gevent.spawn_later(RELAY_RETRY_AFTER, again)

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

    def _remote_homes(self, app_id: int, user_id: str) -> "list[str]":
        """The live peers that hold a device of the user, as the store says (this
        server's nodes list themselves per user; a node of the original is named by the
        user's record). While the store is getting back data it lost, the peers it does
        not list again yet are asked. Raises StoreError."""
        store = self.presence.store
        homes = set(store.user_nodes(app_id, user_id))
        record = store.get_user(app_id, user_id)
        if record_is_online(record):
            homes.add(f"{record['accIp']}:{record['accPort']}")
        homes.discard(self.presence.addr)
        if not homes:
            found = self._ask_unconfirmed(app_id, user_id)
            return [found] if found else []
        live = set(self.presence.peers(fresh=True))
        return sorted(h for h in homes if h in live)

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
        """Online here, or on a live peer that confirms it (a restarted node keeps its
        address but not its users). Raises StoreError."""
        if self.is_local(app_id, user_id):
            return True
        for peer in self._remote_homes(app_id, user_id):
            if self._confirms(peer, app_id, user_id):
                return True
        return False

    # -- idempotency ---------------------------------------------------------------------

    @staticmethod
    def user_claim_id(app_id: int, user_id: str, msg_id: str) -> str:
        """The id a user's own msgID is claimed as: within that user's ids
        (``<sep>appID<sep>userID<sep>msgID``), so that nobody can claim, and so suppress,
        another sender's msgID. Neither a userID nor a msgID may hold the separator."""
        return OWNER_SEPARATOR.join(("", str(app_id), user_id, msg_id)) if msg_id else ""

    def claim_msg_id(self, msg_id: str) -> bool:
        """True when ``msg_id`` is new (or empty: no deduplication); may raise StoreError."""
        return not msg_id or self.presence.store.claim_msg_id(msg_id)

    def release_msg_id(self, msg_id: str) -> None:
        if msg_id:
            try:
                self.presence.store.release_msg_id(msg_id)
            except StoreError as exc:
                log.warning("msgID %s not released: %s", msg_id, exc)
