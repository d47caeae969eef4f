"""WebSocket commands of rooms and history: ``join``, ``leave``, ``publish``, ``history``
(PROTOCOL.md, "Rooms, history and recovery")."""
import time

from ..cluster import StoreError
from ..protocol import Code, Message, fold_keys
from ..protocol.envelope import (HISTORY_LIMIT, HISTORY_MAX_LIMIT, MAX_MSG_ID_LENGTH,
                                  MAX_TYPE_LENGTH, has_control_chars, is_encodable, room_error)
from .commands import CommandError, commands
from .history import Recovery



def _fields(conn, data) -> dict:
    if not conn.user_id:
        raise CommandError(Code.NOT_LOGGED_IN, "log in first")
    if not isinstance(data, dict):
        raise CommandError(Code.PARAMETER_ILLEGAL, "data must be an object")
    return fold_keys(data)


def _room(fields: dict) -> str:
    room = fields.get("room")
    if room is None:
        raise CommandError(Code.PARAMETER_ILLEGAL, 'room is required ("" is the app\'s room)')
    error = room_error(room)
    if error:
        raise CommandError(Code.PARAMETER_ILLEGAL, error)
    return room


def _whole(value, name: str, low: int, high: "int | None" = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise CommandError(Code.PARAMETER_ILLEGAL, f"{name} must be a whole number {span}")
    return value


def _since(fields: dict) -> "tuple[str, int] | None":
    since = fields.get("since")
    if since is None:
        return None
    if not isinstance(since, dict):
        raise CommandError(Code.PARAMETER_ILLEGAL,
                           'since must be an object {"epoch": "...", "offset": N}')
    since = fold_keys(since)
    epoch = since.get("epoch")
    if not isinstance(epoch, str) or not is_encodable(epoch):
        raise CommandError(Code.PARAMETER_ILLEGAL, "since.epoch must be a string")
    return epoch, _whole(since.get("offset"), "since.offset", 0)


def _store_failed(exc: StoreError) -> CommandError:
    return CommandError(Code.SERVER_ERROR, f"cluster store unavailable: {exc}")


def _reply(room: str, recovery: Recovery) -> dict:
    return {"room": room, "epoch": recovery.epoch, "offset": recovery.top,
            "recovered": recovery.recovered,
            "publications": [m.data for m in recovery.messages]}


@commands.register("join")
def join(sessions, conn, data):
    fields = _fields(conn, data)
    room = _room(fields)
    since = _since(fields)
    rooms, history = sessions.rooms, sessions.history
    app_id = conn.app_id
    if room and rooms.joined(conn, room):
        # In the room already: live messages reach it, so it has missed nothing.
        try:
            top, epoch = history.position(app_id, room)
        except StoreError as exc:
            raise _store_failed(exc) from None
        return Code.OK, _reply(room, Recovery(False, [], top, epoch))
    if room and rooms.is_full(conn):
        raise CommandError(Code.OPERATION_FAILURE, "a connection may be in at most "
                           f"{rooms.max_per_connection} rooms (app.maxRoomsPerConnection)")
    local = rooms.begin_join(conn, app_id, room)
    try:
        if since is not None:
            recovery = history.recover(app_id, room, *since)
        else:
            recovery = Recovery(False, [], *history.position(app_id, room))
    except StoreError as exc:
        rooms.abort_join(conn, local)
        raise _store_failed(exc) from None

    def after():
        rooms.finish_join(conn, local, recovery.top, recovery.epoch)
        if room:
            sessions.delivery.announce(app_id, conn.user_id, "enter", room, skip=conn)

    return Code.OK, _reply(room, recovery), after


@commands.register("leave")
def leave(sessions, conn, data):
    room = _room(_fields(conn, data))
    if not room:
        raise CommandError(Code.PARAMETER_ILLEGAL, "the app's room cannot be left")
    if not sessions.rooms.leave(conn, conn.app_id, room):
        raise CommandError(Code.PARAMETER_ILLEGAL, f"not in room {room!r}")
    sessions.delivery.announce(conn.app_id, conn.user_id, "exit", room)
    return Code.OK, None


def _text(fields: dict, name: str, limit: int, required: bool) -> str:
    value = fields.get(name.lower())
    if value is None or value == "":
        if required:
            raise CommandError(Code.PARAMETER_ILLEGAL, f"{name} is required")
        return ""
    if not isinstance(value, str) or not is_encodable(value):
        raise CommandError(Code.PARAMETER_ILLEGAL, f"{name} must be a string")
    if len(value) > limit:
        raise CommandError(Code.PARAMETER_ILLEGAL, f"{name} is {len(value)} characters, "
                           f"more than {limit}")
    return value


@commands.register("publish")
def publish(sessions, conn, data):
    fields = _fields(conn, data)
    room = _room(fields)
    text = _text(fields, "msg", sessions.max_message_length, required=True)
    msg_type = _text(fields, "type", MAX_TYPE_LENGTH, required=False) or "text"
    msg_id = _text(fields, "msgID", MAX_MSG_ID_LENGTH, required=False)
    if has_control_chars(msg_type) or has_control_chars(msg_id):
        raise CommandError(Code.PARAMETER_ILLEGAL, "type and msgID must not hold control "
                           "characters")
    if not sessions.rooms.joined(conn, room):
        raise CommandError(Code.UNAUTHORIZED, f"join room {room!r} before publishing to it")
    delivery = sessions.delivery
    claim = delivery.user_claim_id(conn.app_id, conn.user_id, msg_id)
    try:
        if not delivery.claim_msg_id(claim):
            return Code.OK, {"msgID": msg_id, "duplicate": True}
    except StoreError as exc:
        raise _store_failed(exc) from None
    seq = msg_id or delivery.next_seq()
    message = Message(conn.app_id, seq, "msg", text, conn.user_id, msg_type, room=room,
                      msg_id=seq, time=time.time())
    try:
        message = sessions.history.append(message)
    except StoreError as exc:
        delivery.release_msg_id(claim)  # nothing was stored: the same send may be retried
        raise _store_failed(exc) from None
    try:
        delivery.push_to_room(message, skip=conn)
    except StoreError:
        pass  # stored and delivered here; the peers recover it from the store
    return Code.OK, {"msgID": seq, "offset": message.offset, "epoch": message.epoch}


@commands.register("history")
def history(sessions, conn, data):
    fields = _fields(conn, data)
    room = _room(fields)
    before = fields.get("before")
    if before is not None:
        before = _whole(before, "before", 1)
    limit = fields.get("limit")
    limit = HISTORY_LIMIT if limit is None else _whole(limit, "limit", 1, HISTORY_MAX_LIMIT)
    try:
        page = sessions.history.page(conn.app_id, room, before, limit)
    except StoreError as exc:
        raise _store_failed(exc) from None
    return Code.OK, {"room": room, "epoch": page.epoch, "offset": page.top,
                     "publications": [m.data for m in page.messages]}
