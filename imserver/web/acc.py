"""The WebSocket endpoint ``/acc``."""
import logging
from typing import Optional

from flask import Blueprint, Response, request

from .extension import get_node, node_of

bp = Blueprint("acc", __name__)
log = logging.getLogger("imserver.acc")


@bp.route("/acc", websocket=True)
def acc():
    ws = request.environ.get("wsgi.websocket")
    if ws is None:
        return plain_get()
    get_node().sessions.adopt(ws)  # served by a greenlet of its own from here on
    return Response()


# Werkzeug matches a websocket=True rule only for upgrade requests; this rule answers
# everything else on /acc.
@bp.route("/acc", methods=["GET", "POST", "HEAD"])
def plain_get():
    return Response("/acc is a WebSocket endpoint: connect with a WebSocket client "
                    "(Upgrade: websocket)\n", status=400, mimetype="text/plain")


def admit(app, environ) -> "Optional[tuple[str, bytes]]":
    """The one gate of every WebSocket upgrade, whatever its path (called by the worker's
    handler before the 101): None to go ahead, or (HTTP status, text body) to refuse it.
    Only ``/acc``, spelled exactly so, upgrades."""
    node = node_of(app)
    if node is None:
        return None
    if environ.get("PATH_INFO") != "/acc":
        return "404 Not Found", b"no WebSocket here: connect to /acc\n"
    origin = environ.get("HTTP_ORIGIN")
    if not node.auth.origin_allowed(origin):
        log.info("WebSocket upgrade refused: origin %r is not in auth.origins", origin)
        return "403 Forbidden", b"origin not allowed\n"
    if node.stopping:
        return "503 Service Unavailable", b"the node is shutting down; connect again\n"
    if len(node.hub.connections) >= node.max_connections:
        return "503 Service Unavailable", b"the node has reached app.maxConnections\n"
    return None
