"""The JSON envelope of WebSocket frames: parsing requests, encoding replies and pushes.

Pure functions, no I/O. Replies keep the key order of the original system
(``seq``, ``cmd``, ``response{code, codeMsg, data}``) because some clients compare
frames textually.
"""
import json
import re
from typing import Any, NamedTuple

from .codes import Code

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


class Request(NamedTuple):
    seq: str
    cmd: str
    data: Any  # whatever the client sent under "data"; None when missing


class ProtocolError(Exception):
    """A request that cannot be dispatched; answered with ``code`` in the envelope."""

    def __init__(self, code: Code, seq: str = "", cmd: str = "", detail: str = ""):
        super().__init__(detail or code.message)
        self.code = code
        self.seq = seq
        self.cmd = cmd


def parse_request(payload: "str | bytes") -> Request:
    """Parse one request frame. Raises ProtocolError(1001) for anything that is not a JSON
    object, or whose ``seq`` or ``cmd`` is there but not a string.

    A missing ``seq`` or ``cmd`` (or a JSON null) is ``""``, as the original's decoder has
    it: a heartbeat without ``seq`` is answered with ``seq`` ``""``, and a frame without
    ``cmd`` reaches the dispatch, which answers an unknown ``cmd`` with 1010."""
    try:
        obj = _loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(Code.PARAMETER_ILLEGAL, detail=f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(Code.PARAMETER_ILLEGAL, detail="request must be a JSON object")
    seq = obj.get("seq")
    cmd = obj.get("cmd")
    seq = "" if seq is None else seq
    cmd = "" if cmd is None else cmd
    echo_seq = seq if isinstance(seq, str) else ""
    echo_cmd = cmd if isinstance(cmd, str) else ""
    if not isinstance(seq, str):
        raise ProtocolError(Code.PARAMETER_ILLEGAL, echo_seq, echo_cmd, "seq must be a string")
    if not isinstance(cmd, str):
        raise ProtocolError(Code.PARAMETER_ILLEGAL, echo_seq, echo_cmd, "cmd must be a string")
    if _may_hold_surrogates(payload):
        # JSON may spell lone UTF-16 surrogates ("\ud800"), which no UTF-8 reply can carry:
        # the echoed fields must be clean; handlers check the data fields they use.
        seq_ok, cmd_ok = is_encodable(seq), is_encodable(cmd)
        if not (seq_ok and cmd_ok):
            raise ProtocolError(Code.PARAMETER_ILLEGAL, seq if seq_ok else "",
                                cmd if cmd_ok else "", "text with a lone UTF-16 surrogate")
    return Request(seq, cmd, obj.get("data"))


def _may_hold_surrogates(payload) -> bool:
    # Text came through a strict UTF-8 decoder, so only an escape can make one; bytes
    # (binary frames) may be UTF-16/32, which json decodes with surrogates passed through.
    return not isinstance(payload, str) or "\\u" in payload


# Characters that break or rewrite a line where text is shown or logged: C0 controls, DEL,
# C1 controls, and the Unicode line and paragraph separators.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_chars(text: str) -> bool:
    return CONTROL_CHARS.search(text) is not None


def is_encodable(value) -> bool:
    """True when ``value`` (a JSON value) can be written as UTF-8."""
    try:
        _dumps(value).encode()
    except UnicodeEncodeError:
        return False
    return True


_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_app_id(value) -> "int | None":
    """An ``appID`` given as a JSON integer or a string of ASCII digits; None for any other
    type or spelling (floats, booleans, "1_01", full-width digits). Range is the caller's."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def fold_keys(data: dict) -> dict:
    """Keys of ``data`` lower-cased: the protocol matches them without regard to case."""
    return {k.lower() if isinstance(k, str) else k: v for k, v in data.items()}


def encode_reply(seq: str, cmd: str, code: Code, data: Any = None, detail: str = "") -> bytes:
    """A reply; ``detail``, a sentence saying what to fix, follows ``data`` in an error reply
    of the commands that give one."""
    response = {"code": int(code), "codeMsg": code.message, "data": data}
    if detail:
        response["detail"] = detail
    return _dumps({"seq": seq, "cmd": cmd, "response": response}).encode()


def encode_push(seq: str, cmd: str, msg: str, sender: str, msg_type: str = "text",
                target: str = "", extra: "dict | None" = None) -> bytes:
    """A server-initiated frame (``msg``, ``enter``, ``exit``); encoded once per message
    however many connections receive it. ``extra`` keys (``room``, ``offset`` ...) follow
    the original's four."""
    data = {"target": target, "type": msg_type, "msg": msg, "from": sender}
    if extra:
        data.update(extra)
    return _dumps({"seq": seq, "cmd": cmd, "response": {
        "code": 200, "codeMsg": "Ok", "data": data}}).encode()


def encode_json(value: Any) -> str:
    """Compact JSON text, as the frames are written (non-ASCII kept as is)."""
    return _dumps(value)


MAX_ROOM_LENGTH = 64
MAX_TYPE_LENGTH = 32  # a message's "type"
MAX_MSG_ID_LENGTH = 256
HISTORY_LIMIT = 50  # messages a history page holds unless asked otherwise
HISTORY_MAX_LIMIT = 100


def room_error(room) -> str:
    """Why ``room`` is not a room name ("" when it is one: "" itself is the app's room)."""
    if not isinstance(room, str):
        return "room must be a string"
    if len(room) > MAX_ROOM_LENGTH:
        return f"room must be at most {MAX_ROOM_LENGTH} characters"
    if has_control_chars(room) or not is_encodable(room):
        return "room must not hold control characters or lone UTF-16 surrogates"
    return ""


ENTER_MESSAGE = "哈喽~"
EXIT_MESSAGE = "用户已经离开~"
