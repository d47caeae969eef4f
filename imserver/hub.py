"""The hub: this node's connections and logged-in users. Local only; what spans the
cluster lives in ``imserver.cluster``."""
from typing import Dict, Optional

from .connection import Connection


class Hub:
    def __init__(self):
        self.connections: "Dict[int, Connection]" = {}
        # appID -> userID -> connection: a room is an appID, and a user has one
        # connection per appID on this node (a new login replaces the old one).
        self.rooms: "Dict[int, Dict[str, Connection]]" = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def login(self, conn: Connection, app_id: int, user_id: str) -> Optional[Connection]:
        """Bind ``conn`` to the user; returns the connection it replaces, if any."""
        room = self.rooms.setdefault(app_id, {})
        old = room.get(user_id)
        conn.app_id = app_id
        conn.user_id = user_id
        room[user_id] = conn
        if old is conn:
            return None
        if old is not None:
            # The old connection stays open until it is closed, but is no longer the user's.
            old.user_id = ""
        return old

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; True if it was the connection of a logged-in user."""
        self.connections.pop(conn.id, None)
        if not conn.user_id:
            return False
        room = self.rooms.get(conn.app_id)
        if room is None or room.get(conn.user_id) is not conn:
            return False
        del room[conn.user_id]
        if not room:
            del self.rooms[conn.app_id]
        return True

    def user(self, app_id: int, user_id: str) -> Optional[Connection]:
        room = self.rooms.get(app_id)
        return room.get(user_id) if room else None

    def user_ids(self, app_id: int) -> "list[str]":
        room = self.rooms.get(app_id)
        return list(room) if room else []

    def room_size(self, app_id: int) -> int:
        room = self.rooms.get(app_id)
        return len(room) if room else 0

    @property
    def user_count(self) -> int:
        return sum(len(r) for r in self.rooms.values())
