"""WebSocket commands: ``cmd`` -> handler. A new command is one ``@commands.register``.

A handler takes (sessions, connection, data) and returns (code, reply data), or (code, reply
data, after) where ``after()`` runs right after the reply is written; it raises CommandError
for an error reply with a ``detail``. The node's Sessions give it the login, heartbeat,
rooms, history, limits and auth it may need. Any other exception becomes a 1004 reply and a
logged traceback.
"""
import logging
import time
from typing import Any, Callable, Dict, Tuple

from ..cluster import StoreError
from ..protocol import Code, fold_keys
from ..protocol.envelope import parse_app_id

Handler = Callable[[Any, Any, Any], Tuple[Code, Any]]

log = logging.getLogger("imserver.commands")


class CommandError(Exception):
    """Raised by a handler: the reply carries ``code`` and ``detail``, a sentence saying
    what to fix."""

    def __init__(self, code: Code, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


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


@commands.register("login")
def login(sessions, conn, data):
    if not isinstance(data, dict):
        return Code.PARAMETER_ILLEGAL, None
    fields = fold_keys(data)
    user_id = fields.get("userid")
    raw_app_id = fields.get("appid")
    app_id = 0 if raw_app_id is None else parse_app_id(raw_app_id)  # 0: missing, so 1003
    if user_id is not None and not isinstance(user_id, str) or app_id is None:
        return Code.PARAMETER_ILLEGAL, None
    if not sessions.valid_user_id(user_id):
        return Code.UNAUTHORIZED_USER_ID, None
    if app_id not in sessions.app_ids:
        return Code.UNAUTHORIZED, None
    refused = sessions.auth.check_token(fields.get("servicetoken"), app_id, user_id)
    if refused:
        log.info("%r: login of appID %d userID %r refused: %s", conn, app_id, user_id, refused)
        return Code.UNAUTHORIZED, None
    if conn.user_id or conn.closing:
        return Code.OPERATION_FAILURE, None
    try:
        sessions.login(conn, app_id, user_id)
    except StoreError as exc:
        log.warning("%r: login of %s_%s refused, cluster store failed: %s",
                    conn, app_id, user_id, exc)
        return Code.SERVER_ERROR, None
    return Code.OK, None


@commands.register("heartbeat")
def heartbeat(sessions, conn, data):
    if not conn.user_id:
        return Code.NOT_LOGGED_IN, None
    if data is not None and not isinstance(data, dict):
        return Code.PARAMETER_ILLEGAL, None
    sessions.heartbeat(conn, time.time())
    return Code.OK, None


@commands.register("ping")
def ping(sessions, conn, data):
    return Code.OK, "pong"
