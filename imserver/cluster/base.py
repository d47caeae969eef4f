"""The contracts between a node and its cluster, after Centrifugo's engines:

* a PresenceStore keeps who is online where, the live nodes, and ``msgID``s already
  delivered; its records follow PROTOCOL.md ("Cluster store") so that every
  implementation shares one meaning of "online";
* a Relay carries messages to other nodes;
* a PeerService is what a node does for its peers' calls (the relay's server side calls
  it, never the node's own attributes);
* a StreamStore keeps streams of messages (a room's history, a user's inbox) with offsets
  and an epoch, for history and recovery after a reconnect.

The memory implementations make a cluster of one node (the embedded default); the
Redis store and the gRPC relay make a real cluster. Nothing outside this package
knows which one runs.
"""
import abc
import secrets
import time
from typing import NamedTuple, Optional

from ..protocol import Message

ONLINE_FRESH_SECONDS = 180  # a record whose heartbeat is older is offline; a node report too
USER_RECORD_TTL = 24 * 3600
MSG_ID_TTL = 12 * 3600


class StoreError(Exception):
    """The store could not answer (down, timed out); callers answer 1004."""


class RelayError(Exception):
    """A call to a peer failed. ``unreachable``: nothing answers at its address (the node
    is gone), as opposed to a slow or refusing peer, which is still alive."""

    def __init__(self, peer: str, message: str, unreachable: bool = False,
                 unimplemented: bool = False):
        super().__init__(message)
        self.peer = peer
        self.unreachable = unreachable
        self.unimplemented = unimplemented  # a node of the original: no such method


def user_record(node_ip: str, rpc_port: int, app_id: int, user_id: str, client_ip: str,
                client_port: int, login_time: float, heartbeat_time: float,
                logout_time: float = 0, is_logoff: bool = False) -> dict:
    """The online record of one user, with the original system's field names."""
    return {"accIp": node_ip, "accPort": str(rpc_port), "appID": app_id, "userID": user_id,
            "clientIp": client_ip, "clientPort": str(client_port),
            "loginTime": int(login_time), "heartbeatTime": int(heartbeat_time),
            "logOutTime": int(logout_time), "qua": "", "deviceInfo": "", "isLogoff": is_logoff}


def same_login(stored: dict, record: dict) -> bool:
    """Do two records describe the same login (node and login time)?"""
    return (str(stored.get("accIp")) == str(record["accIp"])
            and str(stored.get("accPort")) == str(record["accPort"])
            and int(stored.get("loginTime") or 0) == int(record["loginTime"]))


def record_is_online(record: Optional[dict], now: Optional[float] = None) -> bool:
    if not record or record.get("isLogoff"):
        return False
    now = time.time() if now is None else now
    return now - float(record.get("heartbeatTime") or 0) < ONLINE_FRESH_SECONDS


class PresenceStore(abc.ABC):
    """Who is online, which nodes are alive, which msgIDs were used. Every method may
    raise StoreError; none blocks longer than the store's own timeout."""

    @abc.abstractmethod
    def set_user(self, record: dict) -> None:
        """Write a user's record (at login; heartbeats and logouts go in batches through
        ``set_users``); it expires after USER_RECORD_TTL. A logoff record (``isLogoff``) replaces only the record of the
        same login (same accIp, accPort and loginTime): a user who has logged in on
        another node meanwhile stays online."""

    @abc.abstractmethod
    def get_user(self, app_id: int, user_id: str) -> Optional[dict]:
        """The user's record, or None when there is none."""

    @abc.abstractmethod
    def claim_msg_id(self, msg_id: str) -> bool:
        """Atomically remember ``msg_id`` for MSG_ID_TTL; True only for the first claim."""

    @abc.abstractmethod
    def release_msg_id(self, msg_id: str) -> None:
        """Forget a claim whose delivery failed, so that a retry can deliver."""

    @abc.abstractmethod
    def report_node(self, addr: str) -> bool:
        """Mark node ``addr`` ("ip:rpcPort") alive now. True when the node was not
        registered (first report, or the store lost its state)."""

    @abc.abstractmethod
    def remove_node(self, addr: str) -> None:
        """Take node ``addr`` out of the live set (clean stop)."""

    @abc.abstractmethod
    def live_nodes(self) -> "list[str]":
        """Addresses of nodes whose last report is under ONLINE_FRESH_SECONDS old."""

    def set_users(self, records: "list[dict]") -> None:
        """Write many records at once, each as ``set_user`` would (the batched heartbeats
        and logouts, and every local user's record again after a store outage)."""
        for record in records:
            self.set_user(record)

    @abc.abstractmethod
    def report_room_sizes(self, addr: str, sizes: "dict[int, int]", app_ids) -> None:
        """Publish how many users each room of ``app_ids`` has on node ``addr``."""

    @abc.abstractmethod
    def room_sizes(self, app_id: int) -> "dict[str, int]":
        """Node address -> users of the room there, as last published."""

    def prune(self) -> None:
        """Drop expired entries; for stores that do not expire them by themselves."""

    def close(self) -> None:
        """Release connections."""


class Relay(abc.ABC):
    """Messages and questions to other nodes. ``peers`` are "ip:rpcPort" addresses; the
    caller leaves its own address out."""

    @abc.abstractmethod
    def send_to_user(self, peer: str, user_id: str, message: Message) -> bool:
        """Ask ``peer`` to push ``message`` to its local user ``user_id`` of
        ``message.app_id``; True if it was delivered. Raises RelayError when the peer
        cannot be reached in time."""

    @abc.abstractmethod
    def query_online(self, peer: str, app_id: int, user_id: str) -> bool:
        """Is the user connected to ``peer``? Raises RelayError when it cannot be asked."""

    @abc.abstractmethod
    def broadcast(self, peers: "list[str]", message: Message,
                  timeout: "float | None" = None) -> "list[RelayError]":
        """Ask every peer, in parallel, to push ``message`` to its users of
        ``message.app_id`` except ``message.sender``, within ``timeout`` seconds (default:
        the relay's own). Returns the failures, one per failed peer."""

    @abc.abstractmethod
    def user_lists(self, peers: "list[str]", app_id: int) -> "tuple[list[str], list[RelayError]]":
        """Users of ``app_id`` on the peers, asked in parallel: (user IDs, failures)."""

    @abc.abstractmethod
    def publish(self, peers: "list[str]", message: Message,
                timeout: "float | None" = None) -> "tuple[dict[str, int], list[RelayError]]":
        """Ask every peer, in parallel, to push a room's message (named room, or a stored
        one) to its members of ``message.room``: (peer -> members of the room there,
        failures). A peer of the original gets an app room's message as ``broadcast``
        would send it, and never a named room's."""

    @abc.abstractmethod
    def room_users(self, peers: "list[str]", app_id: int,
                   room: str) -> "tuple[list[str], list[RelayError]]":
        """Users of a named room on the peers, asked in parallel: (user IDs, failures)."""

    def forget(self, peer: str) -> None:
        """Drop what is kept for an unreachable peer (its channel)."""

    def suspects(self) -> "list[str]":
        """Peers that stopped answering: calls to them fail at once until one answers."""
        return []

    def close(self) -> None:
        """Close channels."""


class PeerService(abc.ABC):
    """What a node does for its peers: the server side of a Relay calls only these."""

    @abc.abstractmethod
    def deliver_to_user(self, user_id: str, message: Message) -> bool:
        """Push ``message`` to the local user; False when the user is not here."""

    @abc.abstractmethod
    def deliver_to_room(self, message: Message) -> int:
        """Push ``message`` to the local members of its room but its sender; how many."""

    @abc.abstractmethod
    def local_users(self, app_id: int) -> "list[str]":
        """Users of ``app_id`` connected here."""

    @abc.abstractmethod
    def publish_here(self, message: Message) -> int:
        """Push a room's message to its local members, in offset order; how many members
        the room has here."""

    @abc.abstractmethod
    def local_room_users(self, app_id: int, room: str) -> "list[str]":
        """Users of the room connected here."""

    @abc.abstractmethod
    def is_local(self, app_id: int, user_id: str) -> bool:
        """Is the user connected here?"""


# -- streams ---------------------------------------------------------------------------------


class StreamEntry(NamedTuple):
    offset: int
    payload: str  # what the node stored: the message's push data as JSON text


class StreamSlice(NamedTuple):
    """Entries of one stream, oldest first, with the stream's epoch and top offset as they
    were when the entries were read (one consistent view)."""
    entries: "list[StreamEntry]"
    epoch: str
    top: int


def new_epoch() -> str:
    """A stream's epoch: random, so that a stream made again (lost, expired, a restarted
    embedded node) never reuses one and old offsets are known to be void."""
    return secrets.token_urlsafe(6)


def room_stream(app_id: int, room: str) -> str:
    """The stream of a room ("" is the app's own room). The braces are a Redis Cluster hash
    tag: every key of one stream lands in one slot."""
    return f"stream:{{{app_id}:{room}}}"


def inbox_stream(app_id: int, user_id: str) -> str:
    """The stream of a user's private inbox."""
    return f"inbox:{{{app_id}_{user_id}}}"


class StreamStore(abc.ABC):
    """Streams of stored messages. Each append gets the next offset of its stream (1, 2, 3,
    ...) and the stream's epoch, fixed when the stream is made: a stream that holds nothing
    yet (or no longer exists) is made by ``position`` or ``append`` with a new epoch and top
    offset 0. A stream keeps its last ``size`` entries and disappears ``ttl`` seconds after
    its last append (its next use makes it again, with a new epoch). Every method may raise
    StoreError."""

    @abc.abstractmethod
    def append(self, stream: str, payload: str, size: int, ttl: float) -> "tuple[int, str]":
        """Store ``payload`` as the stream's next entry, in one atomic step: (offset, epoch)."""

    @abc.abstractmethod
    def position(self, stream: str, ttl: float) -> "tuple[int, str]":
        """(top offset, epoch), making the stream when it does not exist."""

    @abc.abstractmethod
    def since(self, stream: str, offset: int, limit: int) -> StreamSlice:
        """The kept entries with offsets above ``offset``, oldest first, at most ``limit``.
        A stream that does not exist answers no entries, top 0 and epoch ""."""

    @abc.abstractmethod
    def before(self, stream: str, offset: "int | None", limit: int) -> StreamSlice:
        """The newest ``limit`` kept entries with offsets below ``offset`` (below none: the
        newest of all), oldest first: history, paged backwards."""

    def prune(self) -> None:
        """Drop expired streams; for stores that do not expire them by themselves."""
