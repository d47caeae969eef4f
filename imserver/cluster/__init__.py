"""Cluster layer: a presence store and a relay behind small contracts (``base``), with
in-memory implementations for one node (``memory``) and Redis/gRPC ones for many."""
from .base import PresenceStore, Relay, RelayError, StoreError, record_is_online, user_record
from .memory import MemoryPresenceStore, NoPeersRelay

__all__ = ["MemoryPresenceStore", "NoPeersRelay", "PresenceStore", "Relay", "RelayError",
           "StoreError", "record_is_online", "user_record"]
