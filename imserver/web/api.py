"""The HTTP API for back-end systems: who is online, and pushes to a user or a room."""
import time
from dataclasses import replace

from flask import Blueprint, Response, g, request

from ..cluster import RelayError, StoreError
from ..protocol import Code, Message
from ..protocol.envelope import parse_app_id
from .extension import get_node
from .params import app_id_param, send_fields, text_param, type_param, user_id_param
from .responses import ApiError, add_cors, json_answer, params

bp = Blueprint("api", __name__, url_prefix="/user")
bp.after_request(add_cors)


# Routes that need the API key (auth.apiKey) when one is set; the lists only with
# auth.protectLists. The chat page has no key: a login token of its user stands in for it
# (Authorization: Bearer) where the page needs one.
PUSH_ROUTES = {"api.send_message", "api.send_message_all", "rooms.publish", "rooms.history",
               "uploads.upload"}
LIST_ROUTES = {"api.user_list", "api.online", "rooms.users"}
BEARER_ROUTES = {"api.send_message_all", "api.user_list", "uploads.upload"}


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
    if route in BEARER_ROUTES:
        return unauthorized("send the key of auth.apiKey in the X-API-Key header, or a login "
                            "token in Authorization: Bearer")
    return unauthorized("send the key of auth.apiKey in the X-API-Key header")


def _bearer_refusal(auth, token: str, route: str) -> str:
    """"" when ``token`` is a login token of the sender (``userID``, ``appID``) of a
    sendMessageAll, of a member of the room (``appID``) of a user list, or of any user of
    an allowed appID for an upload; else why not."""
    if not auth.tokens_required:
        return "tokens need auth.secret to be set"
    claims, reason = auth.token_claims(token)
    if claims is None:
        return reason
    if route == "uploads.upload":
        user_id = claims.get("userID")
        if not isinstance(user_id, str) or not user_id or "appID" not in claims:
            return "token has no userID or appID claim"
        if parse_app_id(claims.get("appID")) not in get_node().app_ids:
            return "token is for an appID this server does not serve"
        return ""
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


@bp.route("/list", methods=["GET", "POST", "OPTIONS"])
def user_list():
    p = params()
    return users_answer(*get_node().delivery.user_list(app_id_param(p)))


def users_answer(users: "list[str]", unreachable: "list[str]"):
    """A user list over the cluster, with the nodes that did not answer, if any."""
    data = {"userCount": len(users), "userList": users}
    if unreachable:
        data["unreachableNodes"] = unreachable
    return json_answer(data=data)


@bp.route("/online", methods=["GET", "POST", "OPTIONS"])
def online():
    p = params()
    user_id = user_id_param(p)
    app_id = app_id_param(p, required=False)
    node = get_node()
    app_ids = [app_id] if app_id is not None else sorted(node.app_ids)
    is_online = any(node.delivery.is_online(a, user_id) for a in app_ids)
    return json_answer(data={"online": is_online, "userID": user_id})


def new_message(delivery, app_id: int, msg_id: str, text: str, sender: str,
                msg_type: str = "text", room: str = "") -> Message:
    """A pushed ``msg``: its seq is the msgID, or a fresh one when none was given."""
    return Message(app_id, msg_id or delivery.next_seq(), "msg", text, sender, msg_type,
                   room=room, msg_id=msg_id, time=time.time())


def _claim_id(msg_id: str) -> str:
    """The id this send claims: a msgID of the back end (the API key, or anyone when the
    API is open) as it is, in the key the original nodes use too; a msgID of a user who
    sends with a login token within that user's own ids."""
    owner = g.get("msg_id_owner")
    if not msg_id or owner is None:
        return msg_id
    return get_node().delivery.user_claim_id(owner[0], owner[1], msg_id)


def claim(delivery, claim_id: str) -> "tuple[bool, str]":
    """(msgID is new, store error text). Without the store, a send is delivered anyway
    (at least once rather than lost): users of this node keep chatting through an outage."""
    try:
        return delivery.claim_msg_id(claim_id), ""
    except StoreError as exc:
        return True, f"cluster store unavailable ({exc}); msgID not deduplicated"


def refuse_while_stopping() -> None:
    """A stopping node takes no more pushes: its clients are leaving, and a caller told so
    (HTTP 503, code 1102) sends again to another node (nginx does it on its own)."""
    if get_node().stopping:
        raise ApiError(Code.NODE_STOPPING, "this node is shutting down and delivers no more "
                       "messages: send again, to another node", status=503, close=True)


@bp.route("/sendMessage", methods=["POST", "OPTIONS"])
def send_message():
    p = params()
    app_id = app_id_param(p)
    user_id = user_id_param(p)
    msg_id, text = send_fields(p)
    sender = text_param(p, "from", "from", required=False)
    msg_type = type_param(p)
    refuse_while_stopping()
    node = get_node()
    delivery = node.delivery
    claim_id = _claim_id(msg_id)
    fresh, store_error = claim(delivery, claim_id)
    if not fresh:
        return json_answer(data={"sendResults": False, "duplicate": True})
    message = replace(new_message(delivery, app_id, msg_id, text, sender, msg_type),
                      target=user_id)
    if node.history.inbox_size > 0:
        return _send_to_inbox(node, message, claim_id, store_error)
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


def _send_to_inbox(node, message: Message, claim_id: str, store_error: str):
    """A private message stored in the receiver's inbox before the answer; pushed to the
    receiver's connections, and kept for its devices that are offline."""
    delivery = node.delivery
    try:
        stored = node.history.append(message.in_inbox(message.target))
    except StoreError:
        delivery.release_msg_id(claim_id)  # not stored: a retry may store it
        raise
    data = {"sendResults": False, "stored": True, "offset": stored.offset,
            "epoch": stored.epoch}
    unreachable = []
    try:
        data["sendResults"], unreachable = delivery.push_private(stored)
    except StoreError as exc:
        store_error = store_error or f"stored; the cluster store could not say where the user is ({exc})"
    if unreachable:
        data["unreachableNodes"] = [exc.peer for exc in unreachable]
    if not data["sendResults"]:
        data["sendResultsErr"] = (f"the user's node did not take it ({unreachable[0]}): the "
                                  "message waits in the inbox" if unreachable else
                                  "user is not online: the message waits in the inbox")
        # As in the original, a send that reached nobody may be sent again (a back end
        # that does not know the inbox retries); a device drops the repeat by its msgID.
        delivery.release_msg_id(claim_id)
    if store_error:
        data["sendResultsErr"] = store_error
    return json_answer(data=data)


@bp.route("/sendMessageAll", methods=["POST", "OPTIONS"])
def send_message_all():
    p = params()
    app_id = app_id_param(p)
    sender = user_id_param(p)
    msg_id, text = send_fields(p)
    refuse_while_stopping()
    node = get_node()
    delivery = node.delivery
    claim_id = _claim_id(msg_id)
    fresh, store_error = claim(delivery, claim_id)
    if not fresh:
        return json_answer(data={"sendResults": False, "duplicate": True})
    message = new_message(delivery, app_id, msg_id, text, sender)
    try:
        # With history on, a message is accepted once stored: a store that fails is a 1004.
        message = node.history.append(message)
    except StoreError:
        delivery.release_msg_id(claim_id)
        raise
    data = {"sendResults": True}
    if message.offset:
        data.update(offset=message.offset, epoch=message.epoch)
    try:
        missed = delivery.push_to_room(message)
    except StoreError as exc:
        missed = []
        store_error = store_error or f"cluster store unavailable ({exc})"
    if store_error:
        data["sendResultsErr"] = store_error + "; delivered on this node only"
    elif missed:
        data["sendResultsErr"] = "not delivered on nodes that did not answer in time"
        data["unreachableNodes"] = missed
    return json_answer(data=data)
