"""The chat page: ``/home/index?appID=``."""
from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..protocol.envelope import parse_app_id
from .app import get_node

bp = Blueprint("home", __name__)


@bp.route("/")
def root():
    return redirect(url_for("home.index"))


@bp.route("/home/index")
def index():
    node = get_node()
    cfg = current_app.config["IMSERVER"]
    rooms = sorted(node.app_ids)
    app_id = parse_app_id(request.args.get("appID") or request.args.get("appId"))
    if app_id not in node.app_ids:
        app_id = rooms[0]
    return render_template(
        "index.html", app_id=app_id, rooms=rooms, ws_url=cfg["app.webSocketUrl"],
        ws_port=cfg["app.webSocketPort"], http_url=cfg["app.httpUrl"],
        heartbeat_interval=cfg["app.clientHeartbeatInterval"],
        presence_max_room=cfg["app.presenceMaxRoom"])
