"""WebSocket commands: ``cmd`` -> handler. A new command is one ``@commands.register``.

A handler takes (node, connection, data) and returns (code, reply data); an exception
becomes a 1004 reply and a logged traceback.
"""
import time
from typing import Any, Callable, Dict, Tuple

from .cluster import StoreError
from .protocol import Code, fold_keys

Handler = Callable[[Any, Any, Any], Tuple[Code, Any]]


class CommandRegistry:
    def __init__(self):
        self._handlers: "Dict[str, Handler]" = {}

    def register(self, cmd: str):
        def decorator(fn: Handler) -> Handler:
            self._handlers[cmd] = fn
            return fn
        return decorator

    def get(self, cmd: str):
        return self._handlers.get(cmd)

    def names(self):
        return sorted(self._handlers)


commands = CommandRegistry()


def _app_id(value):
    """appID as an int, or None when it has the wrong type. JSON numbers and digit
    strings are accepted; 0 stands for a missing appID."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit() and len(value) < 11:
        return int(value)
    return None


@commands.register("login")
def login(node, conn, data):
    if not isinstance(data, dict):
        return Code.PARAMETER_ILLEGAL, None
    fields = fold_keys(data)
    user_id = fields.get("userid")
    app_id = _app_id(fields.get("appid"))
    if user_id is not None and not isinstance(user_id, str) or app_id is None:
        return Code.PARAMETER_ILLEGAL, None
    if not node.valid_user_id(user_id):
        return Code.UNAUTHORIZED_USER_ID, None
    if app_id not in node.app_ids:
        return Code.UNAUTHORIZED, None
    if conn.user_id or conn.closing:
        return Code.OPERATION_FAILURE, None
    try:
        node.login(conn, app_id, user_id)
    except StoreError:
        return Code.SERVER_ERROR, None
    return Code.OK, None


@commands.register("heartbeat")
def heartbeat(node, conn, data):
    if not conn.user_id:
        return Code.NOT_LOGGED_IN, None
    if data is not None and not isinstance(data, dict):
        return Code.PARAMETER_ILLEGAL, None
    node.heartbeat(conn, time.time())
    return Code.OK, None


@commands.register("ping")
def ping(node, conn, data):
    return Code.OK, "pong"
