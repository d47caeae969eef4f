"""The HTTP API of rooms for back-end systems: publish to a named room, read a room's
history, list a room's users over the cluster (PROTOCOL.md, "Rooms, history and
recovery"). Keys, errors and CORS as the ``/user`` API."""
from flask import Blueprint

from ..cluster import RelayError, StoreError
from ..protocol import Code
from ..protocol.envelope import HISTORY_LIMIT, HISTORY_MAX_LIMIT, MAX_TYPE_LENGTH
from . import api
from .extension import get_node
from .params import app_id_param, room_param, send_fields, text_param, user_id_param, whole_param
from .responses import ApiError, add_cors, json_answer, params

bp = Blueprint("rooms", __name__, url_prefix="/room")
bp.after_request(add_cors)
bp.before_request(api.preflight_and_key)
bp.register_error_handler(StoreError, api.store_error)
bp.register_error_handler(RelayError, api.relay_error)


@bp.route("/publish", methods=["POST", "OPTIONS"])
def publish():
    p = params()
    app_id = app_id_param(p)
    room = room_param(p, required=True)
    sender = user_id_param(p)
    msg_id, text = send_fields(p)
    msg_type = text_param(p, "type", "type", required=False) or "text"
    if len(msg_type) > MAX_TYPE_LENGTH:
        raise ApiError(Code.PARAMETER_ILLEGAL, f"type must be at most {MAX_TYPE_LENGTH} characters")
    api.refuse_while_stopping()
    node = get_node()
    delivery = node.delivery
    fresh = delivery.claim_msg_id(msg_id)  # a store that fails answers 1004: nothing is kept
    if not fresh:
        return json_answer(data={"sendResults": False, "duplicate": True})
    message = api.new_message(delivery, app_id, msg_id, text, sender, msg_type, room)
    try:
        message = node.history.append(message)
    except StoreError:
        delivery.release_msg_id(msg_id)
        raise
    data = {"sendResults": True, "msgID": message.seq, "offset": message.offset,
            "epoch": message.epoch}
    try:
        missed = delivery.push_to_room(message)
    except StoreError as exc:
        data["sendResultsErr"] = f"stored, delivered on this node only: cluster store ({exc})"
        return json_answer(data=data)
    if missed:
        data["sendResultsErr"] = "stored; not delivered on nodes that did not answer in time"
        data["unreachableNodes"] = missed
    return json_answer(data=data)


@bp.route("/history", methods=["GET", "POST", "OPTIONS"])
def history():
    p = params()
    app_id = app_id_param(p)
    room = room_param(p, required=False)
    before = whole_param(p, "before", 1)
    limit = whole_param(p, "limit", 1, HISTORY_MAX_LIMIT) or HISTORY_LIMIT
    page = get_node().history.page(app_id, room, before, limit)
    return json_answer(data={"room": room, "epoch": page.epoch, "offset": page.top,
                             "publications": [m.data for m in page.messages]})


@bp.route("/users", methods=["GET", "POST", "OPTIONS"])
def users():
    p = params()
    app_id = app_id_param(p)
    room = room_param(p, required=False)
    return api.users_answer(*get_node().delivery.room_users(app_id, room))
