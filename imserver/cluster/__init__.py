"""Cluster layer: a presence store, a relay and a peer service behind small contracts
(``base``), with in-memory implementations for one node (``memory``) and Redis/gRPC ones
for many."""
from .base import (PeerService, PresenceStore, Relay, RelayError, StoreError, StreamEntry,
                   StreamSlice, StreamStore, inbox_stream, record_is_online, room_stream,
                   user_record)
from .memory import MemoryPresenceStore, MemoryStreamStore, NoPeersRelay

__all__ = ["MemoryPresenceStore", "MemoryStreamStore", "NoPeersRelay", "PeerService",
           "PresenceStore", "Relay", "RelayError", "StoreError", "StreamEntry", "StreamSlice",
           "StreamStore", "inbox_stream", "record_is_online", "room_stream", "user_record"]
