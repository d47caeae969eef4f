"""The WebSocket endpoint ``/acc``."""
from flask import Blueprint, Response, request

from .app import get_node

bp = Blueprint("acc", __name__)


@bp.route("/acc", websocket=True)
def acc():
    ws = request.environ.get("wsgi.websocket")
    if ws is None:
        return plain_get()
    get_node().adopt(ws)  # served by a greenlet of its own from here on
    return Response()


# Werkzeug matches a websocket=True rule only for upgrade requests; this rule answers
# everything else on /acc.
@bp.route("/acc", methods=["GET", "POST", "HEAD"])
def plain_get():
    return Response("/acc is a WebSocket endpoint: connect with a WebSocket client "
                    "(Upgrade: websocket)\n", status=400, mimetype="text/plain")
