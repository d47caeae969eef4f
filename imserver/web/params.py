"""Request parameters shared by the API blueprints: checked, with a ``detail`` saying what
to fix when they are wrong."""
from ..protocol import Code
from ..protocol.envelope import (MAX_MSG_ID_LENGTH, has_control_chars, is_encodable,
                                  parse_app_id, room_error)
from .extension import get_node
from .responses import ApiError


def app_id_param(p: dict, required: bool = True):
    raw = p.get("appid")
    if raw in (None, ""):
        if required:
            raise ApiError(Code.PARAMETER_ILLEGAL, "appID is required")
        return None
    node = get_node()
    app_id = parse_app_id(raw)
    if app_id is None:
        raise ApiError(Code.PARAMETER_ILLEGAL, f"appID must be a whole number, got {raw!r}")
    if app_id not in node.app_ids:
        raise ApiError(Code.UNAUTHORIZED, "appID must be one of "
                           + ", ".join(map(str, sorted(node.app_ids))))
    return app_id


def text_param(p: dict, name: str, label: str, required: bool = True) -> str:
    value = p.get(name.lower())
    if value is None or value == "":
        if required:
            raise ApiError(Code.PARAMETER_ILLEGAL, f"{label} is required")
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ApiError(Code.PARAMETER_ILLEGAL, f"{label} must be a string")
    if not is_encodable(value):
        raise ApiError(Code.PARAMETER_ILLEGAL, f"{label} holds a lone UTF-16 surrogate")
    return str(value)


def user_id_param(p: dict, name="userID") -> str:
    user_id = text_param(p, name, name)
    sessions = get_node().sessions
    if not sessions.valid_user_id(user_id):
        raise ApiError(Code.UNAUTHORIZED_USER_ID, f"{name} must be 1 to {sessions.max_user_id} "
                       "characters, without control characters")
    return user_id


def send_fields(p: dict):
    msg_id = text_param(p, "msgID", "msgID", required=False)
    message = text_param(p, "message", "message")
    limit = get_node().cfg["app.maxMessageLength"]
    if len(message) > limit:
        raise ApiError(Code.PARAMETER_ILLEGAL,
                       f"message is {len(message)} characters, more than app.maxMessageLength ({limit})")
    if len(msg_id) > MAX_MSG_ID_LENGTH:
        raise ApiError(Code.PARAMETER_ILLEGAL,
                       f"msgID must be at most {MAX_MSG_ID_LENGTH} characters")
    if has_control_chars(msg_id):
        raise ApiError(Code.PARAMETER_ILLEGAL, "msgID must not hold control characters")
    return msg_id, message


def room_param(p: dict, required: bool) -> str:
    """A room name ("" is the app's room, allowed unless ``required``)."""
    room = p.get("room")
    if room is None or room == "":
        if required:
            raise ApiError(Code.PARAMETER_ILLEGAL, "room is required (a named room)")
        return ""
    error = room_error(room)
    if error:
        raise ApiError(Code.PARAMETER_ILLEGAL, error)
    return room


def whole_param(p: dict, name: str, low: int, high: "int | None" = None) -> "int | None":
    """An optional whole number within [low, high]."""
    raw = p.get(name.lower())
    if raw is None or raw == "":
        return None
    value = parse_app_id(raw)  # a JSON integer or ASCII digits
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ApiError(Code.PARAMETER_ILLEGAL, f"{name} must be a whole number {span}")
    return value
