"""The hub: this node's connections and logged-in users. Local only; what spans the
cluster lives in ``imserver.cluster``."""
from typing import Dict, Optional

from .connection import Connection


class Hub:
    def __init__(self):
        self.connections: "Dict[int, Connection]" = {}
        # appID -> every logged-in connection of the app: its own room (the original's).
        self.rooms: "Dict[int, Dict[Connection, None]]" = {}
        # appID -> userID -> deviceID ("" for a login without one) -> connection. A user
        # has one connection per device on this node: a new login replaces the old one.
        self.users: "Dict[int, Dict[str, Dict[str, Connection]]]" = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def login(self, conn: Connection, app_id: int, user_id: str,
              device: str = "") -> Optional[Connection]:
        """Bind ``conn`` to the user's device; returns the connection it replaces, if any."""
        devices = self.users.setdefault(app_id, {}).setdefault(user_id, {})
        old = devices.get(device)
        conn.app_id = app_id
        conn.user_id = user_id
        conn.device = device
        devices[device] = conn
        room = self.rooms.setdefault(app_id, {})
        room[conn] = None
        if old is None or old is conn:
            return None
        # The old connection stays open until it is closed, but is no longer the user's.
        room.pop(old, None)
        old.user_id = ""
        return old

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; True if it was the connection of a logged-in user's device."""
        self.connections.pop(conn.id, None)
        if not conn.user_id:
            return False
        users = self.users.get(conn.app_id)
        devices = users.get(conn.user_id) if users else None
        if devices is None or devices.get(conn.device) is not conn:
            return False
        del devices[conn.device]
        if not devices:
            del users[conn.user_id]
            if not users:
                del self.users[conn.app_id]
        room = self.rooms.get(conn.app_id)
        if room is not None:
            room.pop(conn, None)
            if not room:
                del self.rooms[conn.app_id]
        return True

    def detach(self, conn: Connection) -> None:
        """``conn`` is no longer the user's (a login elsewhere took its device): out of the
        user's devices and the app's room at once, though it stays open until closed."""
        if self.remove(conn):
            self.connections[conn.id] = conn
        conn.user_id = ""

    def devices(self, app_id: int, user_id: str) -> "Dict[str, Connection]":
        """The user's connections here by deviceID (empty when none)."""
        users = self.users.get(app_id)
        return users.get(user_id, {}) if users else {}

    def user(self, app_id: int, user_id: str) -> Optional[Connection]:
        """One connection of the user here (the newest), or None."""
        devices = self.devices(app_id, user_id)
        return next(reversed(devices.values())) if devices else None

    def user_ids(self, app_id: int) -> "list[str]":
        users = self.users.get(app_id)
        return list(users) if users else []

    def room_size(self, app_id: int) -> int:
        """Users of the app here (a user with several devices counts once)."""
        users = self.users.get(app_id)
        return len(users) if users else 0

    @property
    def user_count(self) -> int:
        return sum(len(users) for users in self.users.values())
