"""Cluster layer: a presence store, a relay and a peer service behind small contracts
(``base``), with in-memory implementations for one node (``memory``) and Redis/gRPC ones
for many."""
from .base import (PeerService, PresenceStore, Relay, RelayError, StoreError, record_is_online,
                   user_record)
from .memory import MemoryPresenceStore, NoPeersRelay

__all__ = ["MemoryPresenceStore", "NoPeersRelay", "PeerService", "PresenceStore", "Relay",
           "RelayError", "StoreError", "record_is_online", "user_record"]
