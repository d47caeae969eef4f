"""The HTTP API for back-end systems: who is online, and pushes to a user or a room."""
import time

from flask import Blueprint, Response, g, request

from ..cluster import RelayError, StoreError
from ..protocol import Code, Message
from ..protocol.envelope import has_control_chars, is_encodable, parse_app_id
from .extension import get_node
from .responses import ApiError, add_cors, json_answer, params

bp = Blueprint("api", __name__, url_prefix="/user")
bp.after_request(add_cors)


# Routes that need the API key (auth.apiKey) when one is set; the lists only with
# auth.protectLists. The chat page has no key: a login token of its user stands in for it
# (Authorization: Bearer) where the page needs one.
PUSH_ROUTES = {"api.send_message", "api.send_message_all"}
LIST_ROUTES = {"api.user_list", "api.online"}
BEARER_ROUTES = {"api.send_message_all", "api.user_list"}


@bp.before_request
def preflight_and_key():
    if request.method == "OPTIONS":
        return Response(status=204)  # CORS headers are added by add_cors
    auth = get_node().auth
    if not auth.api_key_required:
        return None
    route = request.endpoint
    if route not in PUSH_ROUTES and not (auth.protect_lists and route in LIST_ROUTES):
        return None
    if auth.api_key_ok(request.headers.get("X-API-Key")):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and route in BEARER_ROUTES:
        refused = _bearer_refusal(auth, token.strip(), route)
        if not refused:
            return None
        return unauthorized(f"the Authorization token is refused: {refused}")
    if "X-API-Key" in request.headers:
        return unauthorized("the X-API-Key header does not hold a key of auth.apiKey")
    return unauthorized("send the key of auth.apiKey in the X-API-Key header")


def _bearer_refusal(auth, token: str, route: str) -> str:
    """"" when ``token`` is a login token of the sender (``userID``, ``appID``) of a
    sendMessageAll, or of a member of the room (``appID``) of a user list; else why not."""
    if not auth.tokens_required:
        return "tokens need auth.secret to be set"
    claims, reason = auth.token_claims(token)
    if claims is None:
        return reason
    p = params()
    app_id = parse_app_id(claims.get("appID"))
    if app_id is None or app_id != parse_app_id(p.get("appid")):
        return "the token is for another appID"
    user_id = claims.get("userID")
    if route == "api.send_message_all":
        if user_id is None or user_id != p.get("userid"):
            return "the token is for another userID than the sender"
        g.msg_id_owner = (app_id, user_id)  # this send's msgID is the user's own
    return ""


def unauthorized(detail: str) -> Response:
    return json_answer(Code.UNAUTHORIZED, None, detail, status=401)


@bp.errorhandler(StoreError)
def store_error(exc: StoreError):
    return json_answer(Code.SERVER_ERROR, None, f"cluster store unavailable: {exc}")


@bp.errorhandler(RelayError)
def relay_error(exc: RelayError):
    return json_answer(Code.NODE_UNREACHABLE, {"sendResults": False}, f"the user's node is unreachable: {exc}")


def _app_id(p: dict, required: bool = True):
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


def _text(p: dict, name: str, label: str, required: bool = True) -> str:
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


def _user_id(p: dict, name="userID") -> str:
    user_id = _text(p, name, name)
    sessions = get_node().sessions
    if not sessions.valid_user_id(user_id):
        raise ApiError(Code.UNAUTHORIZED_USER_ID, f"{name} must be 1 to {sessions.max_user_id} "
                       "characters, without control characters")
    return user_id


@bp.route("/list", methods=["GET", "POST", "OPTIONS"])
def user_list():
    p = params()
    users, unreachable = get_node().delivery.user_list(_app_id(p))
    data = {"userCount": len(users), "userList": users}
    if unreachable:
        data["unreachableNodes"] = unreachable
    return json_answer(data=data)


@bp.route("/online", methods=["GET", "POST", "OPTIONS"])
def online():
    p = params()
    user_id = _user_id(p)
    app_id = _app_id(p, required=False)
    node = get_node()
    app_ids = [app_id] if app_id is not None else sorted(node.app_ids)
    is_online = any(node.delivery.is_online(a, user_id) for a in app_ids)
    return json_answer(data={"online": is_online, "userID": user_id})


def _send_fields(p: dict):
    msg_id = _text(p, "msgID", "msgID", required=False)
    message = _text(p, "message", "message")
    limit = get_node().cfg["app.maxMessageLength"]
    if len(message) > limit:
        raise ApiError(Code.PARAMETER_ILLEGAL,
                       f"message is {len(message)} characters, more than app.maxMessageLength ({limit})")
    if len(msg_id) > 256:
        raise ApiError(Code.PARAMETER_ILLEGAL, "msgID must be at most 256 characters")
    if has_control_chars(msg_id):
        raise ApiError(Code.PARAMETER_ILLEGAL, "msgID must not hold control characters")
    return msg_id, message


def _message(delivery, app_id: int, msg_id: str, text: str, sender: str) -> Message:
    """A pushed ``msg``: its seq is the msgID, or a fresh one when none was given."""
    return Message(app_id, msg_id or delivery.next_seq(), "msg", text, sender,
                   msg_id=msg_id, time=time.time())


# Separates the parts of a user's own msgID claim. Neither a userID nor a msgID may hold it,
# so a user's claims can never equal the back end's or another user's.
OWNER_SEPARATOR = "\x1f"


def _claim_id(msg_id: str) -> str:
    """The id this send claims: a msgID of the back end (the API key, or anyone when the
    API is open) as it is, in the key the original nodes use too; a msgID of a user who
    sends with a login token within that user's own ids (``<sep>appID<sep>userID<sep>msgID``),
    so that nobody can claim, and so suppress, another sender's msgID."""
    owner = g.get("msg_id_owner")
    if not msg_id or owner is None:
        return msg_id
    return OWNER_SEPARATOR.join(("", str(owner[0]), owner[1], msg_id))


def _claim(delivery, claim_id: str) -> "tuple[bool, str]":
    """(msgID is new, store error text). Without the store, a send is delivered anyway
    (at least once rather than lost): users of this node keep chatting through an outage."""
    try:
        return delivery.claim_msg_id(claim_id), ""
    except StoreError as exc:
        return True, f"cluster store unavailable ({exc}); msgID not deduplicated"


def _refuse_while_stopping() -> None:
    """A stopping node takes no more pushes: its clients are leaving, and a caller told so
    (HTTP 503, code 1102) sends again to another node (nginx does it on its own)."""
    if get_node().stopping:
        raise ApiError(Code.NODE_STOPPING, "this node is shutting down and delivers no more "
                       "messages: send again, to another node", status=503, close=True)


@bp.route("/sendMessage", methods=["POST", "OPTIONS"])
def send_message():
    p = params()
    app_id = _app_id(p)
    user_id = _user_id(p)
    msg_id, text = _send_fields(p)
    sender = _text(p, "from", "from", required=False)
    _refuse_while_stopping()
    delivery = get_node().delivery
    claim_id = _claim_id(msg_id)
    fresh, store_error = _claim(delivery, claim_id)
    if not fresh:
        return json_answer(data={"sendResults": False, "duplicate": True})
    message = _message(delivery, app_id, msg_id, text, sender)
    try:
        delivered, reason = delivery.push_to_user(user_id, message)
    except (StoreError, RelayError):
        delivery.release_msg_id(claim_id)  # a later retry may still deliver it
        raise
    if not delivered:
        delivery.release_msg_id(claim_id)
        return json_answer(data={"sendResults": False, "sendResultsErr": reason})
    data = {"sendResults": True}
    if store_error:
        data["sendResultsErr"] = store_error
    return json_answer(data=data)


@bp.route("/sendMessageAll", methods=["POST", "OPTIONS"])
def send_message_all():
    p = params()
    app_id = _app_id(p)
    sender = _user_id(p)
    msg_id, text = _send_fields(p)
    _refuse_while_stopping()
    delivery = get_node().delivery
    fresh, store_error = _claim(delivery, _claim_id(msg_id))
    if not fresh:
        return json_answer(data={"sendResults": False, "duplicate": True})
    data = {"sendResults": True}
    try:
        missed = delivery.push_to_room(_message(delivery, app_id, msg_id, text, sender))
    except StoreError as exc:
        missed = []
        store_error = store_error or f"cluster store unavailable ({exc})"
    if store_error:
        data["sendResultsErr"] = store_error + "; delivered on this node only"
    elif missed:
        data["sendResultsErr"] = "not delivered on nodes that did not answer in time"
        data["unreachableNodes"] = missed
    return json_answer(data=data)
