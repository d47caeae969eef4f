"""Benchmark peer: the same chat/push service written the way a Python user would
write it with Flask-SocketIO, on gevent + gevent-websocket under gunicorn.

Start it with ``imserver/bench/peers/socketio_gunicorn.conf.py`` (see README.md beside this file).
The contract a load driver relies on:

- Engine.IO v4 / Socket.IO v5 on ``/socket.io/?EIO=4&transport=websocket``; the server
  pings (``2``) at the library's default interval, the client answers ``3``.
- event ``login`` ``{"userID": str, "appID": int}`` with an ack: the client joins room
  ``str(appID)`` and the ack is ``{"code": 200}`` (``{"code": 1001}`` for bad data).
- event ``heartbeat`` ``{}``: refreshes a timestamp, no reply.
- HTTP on the same port: ``POST /user/sendMessageAll``, ``POST /user/sendMessage``,
  ``GET /system/state``; pushes are the event ``msg`` carrying this project's envelope.

Everything here is the library's ordinary use: ``socketio.emit(..., to=room,
skip_sid=...)`` from an HTTP view, ``join_room`` in the event handler, an ack by
returning a value. State is three plain dicts in the one worker process.
"""
if __name__ == "__main__":  # a quick manual run without gunicorn: patch before anything
    from gevent import monkey
    monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402

app = Flask(__name__)
app.json.sort_keys = False  # answers keep the order {"code", "msg", "data"}
# async_mode is pinned (rather than detected) so that a missing gevent-websocket fails
# loudly instead of silently running another transport stack.
socketio = SocketIO(app, async_mode="gevent", cors_allowed_origins="*",
                    logger=False, engineio_logger=False)


def _websocket_stack() -> str:
    """Which WebSocket implementation Engine.IO's gevent driver uses."""
    from engineio.async_drivers import gevent as driver
    return "gevent-websocket" if driver.SimpleWebSocketWSGI is None else "simple-websocket"


if _websocket_stack() != "gevent-websocket":
    raise RuntimeError("Engine.IO's gevent driver does not use gevent-websocket; "
                       "install gevent-websocket (requirements.txt)")
logging.getLogger("gunicorn.error").info(
    "peer-socketio: async_mode=%s, WebSocket transport via %s",
    socketio.server.eio.async_mode, _websocket_stack())

# sid -> [appID, userID, last heartbeat (unix seconds)]; only logged-in sids
sessions = {}
# (appID, userID) -> sid of that user's latest login
user_sids = {}
# connected sids, logged in or not
connected = set()


def _params() -> dict:
    """Query string, form body and a JSON object body, merged (later wins)."""
    merged = dict(request.args.items())
    merged.update(request.form.items())
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            merged.update(body)
    # the article's spellings appId / userId / msgId are accepted too
    for canonical in ("appID", "userID", "msgID"):
        alt = canonical[:-1] + "d"
        if canonical not in merged and alt in merged:
            merged[canonical] = merged[alt]
    return merged


def _answer(code=200, msg="Success", data=None):
    response = jsonify({"code": code, "msg": msg, "data": data})
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _int(value):
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _push(msg_id, message, sender) -> dict:
    return {"seq": msg_id, "cmd": "msg", "response": {
        "code": 200, "codeMsg": "Ok",
        "data": {"target": "", "type": "text", "msg": message, "from": sender}}}


# -- Socket.IO events -------------------------------------------------------------------

@socketio.on("connect")
def on_connect(auth=None):
    connected.add(request.sid)


@socketio.on("disconnect")
def on_disconnect(*args):
    sid = request.sid
    connected.discard(sid)
    entry = sessions.pop(sid, None)
    if entry is not None:
        key = (entry[0], entry[1])
        if user_sids.get(key) == sid:
            del user_sids[key]


@socketio.on("login")
def on_login(data=None):
    if not isinstance(data, dict):
        return {"code": 1001}
    user_id = data.get("userID")
    app_id = _int(data.get("appID"))
    if not isinstance(user_id, str) or not user_id or app_id is None:
        return {"code": 1001}
    sid = request.sid
    previous = sessions.get(sid)
    if previous is not None:  # the same connection logs in again: move it
        old_key = (previous[0], previous[1])
        if user_sids.get(old_key) == sid:
            del user_sids[old_key]
    join_room(str(app_id))
    sessions[sid] = [app_id, user_id, time.time()]
    user_sids[(app_id, user_id)] = sid
    return {"code": 200}


@socketio.on("heartbeat")
def on_heartbeat(data=None):
    entry = sessions.get(request.sid)
    if entry is not None:
        entry[2] = time.time()


# -- HTTP -------------------------------------------------------------------------------

@app.route("/user/sendMessageAll", methods=["POST"])
def send_message_all():
    p = _params()
    app_id = _int(p.get("appID"))
    sender = p.get("userID") or ""
    message = p.get("message")
    if app_id is None or message is None:
        return _answer(1001, "参数不合法")
    msg_id = str(p.get("msgID") or "")
    socketio.emit("msg", _push(msg_id, message, sender), to=str(app_id),
                  skip_sid=user_sids.get((app_id, sender)))
    return _answer(data={"sendResults": True})


@app.route("/user/sendMessage", methods=["POST"])
def send_message():
    p = _params()
    app_id = _int(p.get("appID"))
    recipient = p.get("userID")
    message = p.get("message")
    if app_id is None or not recipient or message is None:
        return _answer(1001, "参数不合法")
    sid = user_sids.get((app_id, recipient))
    if sid is None:
        return _answer(data={"sendResults": False})
    msg_id = str(p.get("msgID") or "")
    socketio.emit("msg", _push(msg_id, message, p.get("from") or ""), to=sid)
    return _answer(data={"sendResults": True})


@app.route("/system/state")
def system_state():
    return _answer(data={"connections": len(connected), "users": len(user_sids)})


if __name__ == "__main__":
    socketio.run(app, host="127.0.0.1", port=int(os.environ.get("PEER_PORT", "8090")))
