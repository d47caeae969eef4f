"""Node state for operators: ``/system/state``."""
from flask import Blueprint, request

from .extension import get_node
from .responses import add_cors, json_answer, truthy

bp = Blueprint("system", __name__)
bp.after_request(add_cors)


@bp.route("/system/state")
def state():
    return json_answer(data=get_node().state(debug=truthy(request.args.get("isDebug"))))
