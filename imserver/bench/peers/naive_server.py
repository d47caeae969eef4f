"""Benchmark peer: the naive design, the floor any design must beat.

This project's wire protocol (docs/PROTOCOL.md: ``/acc``, ``login``,
``heartbeat``, ``ping``, pushed ``msg``/``enter``/``exit`` frames, the HTTP routes) served
the straightforward way with gevent-websocket + Flask, with no care for memory:

- each connection has two greenlets: the request handler reads frames, a writer greenlet
  writes them, and an unbounded ``gevent.queue.Queue`` sits between them;
- the queue holds Python objects; the writer does ``json.dumps`` per message per receiver
  and ``websocket.send`` through gevent-websocket (a room broadcast to N members is
  encoded N times);
- state is plain dicts in the one worker process; rooms are appIDs.

Start it with ``imserver/bench/peers/naive_gunicorn.conf.py`` (see README.md beside this file).
Environment: PEER_APP_IDS (default "101,102,103,104"), PEER_PRESENCE_MAX_ROOM (default
1000, as the project; 0 turns enter/exit events off), PEER_HEARTBEAT_TIMEOUT (360 s),
PEER_SWEEP_INTERVAL (30 s).
"""
if __name__ == "__main__":  # a quick manual run without gunicorn: patch before anything
    from gevent import monkey
    monkey.patch_all()

import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, Response, request  # noqa: E402
from gevent.queue import Queue  # noqa: E402

APP_IDS = frozenset(int(a) for a in os.environ.get("PEER_APP_IDS", "101,102,103,104").split(","))
MAX_USER_ID = 64
PRESENCE_MAX_ROOM = int(os.environ.get("PEER_PRESENCE_MAX_ROOM", "1000"))
HEARTBEAT_TIMEOUT = float(os.environ.get("PEER_HEARTBEAT_TIMEOUT", "360"))
SWEEP_INTERVAL = float(os.environ.get("PEER_SWEEP_INTERVAL", "30"))
MSG_ID_TTL = 12 * 3600

CODE_MSG = {200: "Success", 1000: "未登录", 1001: "参数不合法", 1002: "非法的用户ID",
            1003: "未授权", 1004: "系统错误", 1005: "没有数据", 1006: "添加错误",
            1007: "删除错误", 1008: "存储错误", 1009: "操作失败", 1010: "路由不存在"}
ENTER_MESSAGE = "哈喽~"
EXIT_MESSAGE = "用户已经离开~"

app = Flask(__name__)

connections = set()  # every open connection
users = {}           # (appID, userID) -> Connection
rooms = {}           # appID -> {userID: Connection}
seen_msg_ids = {}    # msgID -> expiry (unix seconds)
_seq = itertools.count(1)


class Close:
    """A queue item telling the writer to close the connection."""

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason


_STOP = object()  # queue item: the reader is done, the writer ends


class Connection:
    def __init__(self, ws, environ):
        self.ws = ws
        self.queue = Queue()
        self.addr = environ.get("REMOTE_ADDR", "")
        self.app_id = 0
        self.user_id = ""
        self.connect_time = self.heartbeat_time = time.time()
        self.closing = False
        self.writer = gevent.spawn(self._write_forever)

    def put(self, obj) -> None:
        self.queue.put(obj)

    def close(self, code, reason) -> None:
        if not self.closing:
            self.closing = True
            self.queue.put(Close(code, reason))

    def _write_forever(self):
        ws = self.ws
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, Close):
                    # gevent-websocket 0.10.1's close() leaves the code out of the close
                    # frame, so the frame is written here; the reader ends when the
                    # client answers the close (or the socket breaks)
                    ws.send_frame(struct.pack("!H", item.code) + item.reason.encode(),
                                  ws.OPCODE_CLOSE)
                    ws.closed = True
                    return
                ws.send(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
            except UnicodeEncodeError:
                continue  # a lone surrogate from some client: skip that message
            except Exception:  # the socket is gone
                return


def next_seq() -> str:
    return f"{int(time.time() * 1000)}-{next(_seq)}"


def reply(seq, cmd, code, data=None) -> dict:
    return {"seq": seq, "cmd": cmd,
            "response": {"code": code, "codeMsg": CODE_MSG[code], "data": data}}


def push_frame(seq, cmd, message, sender) -> dict:
    return {"seq": seq, "cmd": cmd, "response": {"code": 200, "codeMsg": "Ok", "data": {
        "target": "", "type": "text", "msg": message, "from": sender}}}


def push_to_room(app_id, sender, seq, cmd, message) -> int:
    room = rooms.get(app_id)
    if not room:
        return 0
    frame = push_frame(seq, cmd, message, sender)
    delivered = 0
    for user_id, conn in list(room.items()):
        if user_id != sender:
            conn.put(frame)
            delivered += 1
    return delivered


def announce(app_id, user_id, cmd, message) -> None:
    if PRESENCE_MAX_ROOM and len(rooms.get(app_id, ())) <= PRESENCE_MAX_ROOM:
        push_to_room(app_id, user_id, next_seq(), cmd, message)


# -- commands ---------------------------------------------------------------------------

def _app_id(value):
    """appID as an int, None for a wrong type; 0 stands for a missing one."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit() and len(value) < 11:
        return int(value)
    return None


def cmd_login(conn, data):
    if not isinstance(data, dict):
        return 1001, None
    fields = {k.lower(): v for k, v in data.items()}
    user_id = fields.get("userid")
    app_id = _app_id(fields.get("appid"))
    if (user_id is not None and not isinstance(user_id, str)) or app_id is None:
        return 1001, None
    if not user_id or len(user_id) > MAX_USER_ID:
        return 1002, None
    if app_id not in APP_IDS:
        return 1003, None
    if conn.user_id or conn.closing:
        return 1009, None
    conn.app_id, conn.user_id = app_id, user_id
    conn.heartbeat_time = time.time()
    old = users.get((app_id, user_id))
    users[(app_id, user_id)] = conn
    rooms.setdefault(app_id, {})[user_id] = conn
    if old is not None:
        old.close(1008, "logged in elsewhere")
    else:
        announce(app_id, user_id, "enter", ENTER_MESSAGE)
    return 200, None


def cmd_heartbeat(conn, data):
    if not conn.user_id:
        return 1000, None
    if data is not None and not isinstance(data, dict):
        return 1001, None
    conn.heartbeat_time = time.time()
    return 200, None


def cmd_ping(conn, data):
    return 200, "pong"


COMMANDS = {"login": cmd_login, "heartbeat": cmd_heartbeat, "ping": cmd_ping}


def dispatch(conn, message) -> None:
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):
        conn.put(reply("", "", 1001))
        return
    if not isinstance(obj, dict):
        conn.put(reply("", "", 1001))
        return
    seq, cmd = obj.get("seq"), obj.get("cmd")
    if not isinstance(seq, str) or not isinstance(cmd, str) or not cmd:
        conn.put(reply(seq if isinstance(seq, str) else "", cmd if isinstance(cmd, str) else "",
                       1001))
        return
    handler = COMMANDS.get(cmd)
    if handler is None:
        conn.put(reply(seq, cmd, 1010))
        return
    try:
        code, data = handler(conn, obj.get("data"))
    except Exception:
        app.logger.exception("command %r failed", cmd)
        code, data = 1004, None
    conn.put(reply(seq, cmd, code, data))


def disconnected(conn) -> None:
    connections.discard(conn)
    key = (conn.app_id, conn.user_id)
    if conn.user_id and users.get(key) is conn:
        del users[key]
        room = rooms.get(conn.app_id)
        if room is not None:
            room.pop(conn.user_id, None)
            if not room:
                del rooms[conn.app_id]
        announce(conn.app_id, conn.user_id, "exit", EXIT_MESSAGE)


# -- WebSocket endpoint -----------------------------------------------------------------

@app.route("/acc", websocket=True)
def acc():
    ws = request.environ.get("wsgi.websocket")
    if ws is None:
        return acc_plain()
    _start_background()
    conn = Connection(ws, request.environ)
    connections.add(conn)
    try:
        while True:
            message = ws.receive()
            if message is None:
                break
            dispatch(conn, message)
    except Exception:  # a broken socket, or one the writer closed under our feet
        pass
    finally:
        disconnected(conn)
        conn.put(_STOP)
    return Response()


@app.route("/acc", methods=["GET", "POST", "HEAD"])
def acc_plain():
    return Response("/acc is a WebSocket endpoint\n", status=400, mimetype="text/plain")


# -- HTTP API ---------------------------------------------------------------------------

class BadParameter(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def answer(code=200, data=None) -> Response:
    body = json.dumps({"code": code, "msg": CODE_MSG[code], "data": data},
                      ensure_ascii=False, separators=(",", ":"))
    response = Response(body, content_type="application/json; charset=utf-8")
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@app.errorhandler(BadParameter)
def bad_parameter(exc):
    return answer(exc.code)


def params() -> dict:
    """Query string, form and JSON object body in one dict (later wins), keys lower case."""
    sources = [request.args, request.form]
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        sources.append(body)
    return {str(k).lower(): v for source in sources for k, v in source.items()}


def param_app_id(p, required=True):
    raw = p.get("appid")
    if raw in (None, ""):
        if required:
            raise BadParameter(1001)
        return None
    try:
        app_id = int(raw)
    except (TypeError, ValueError):
        raise BadParameter(1001) from None
    if app_id not in APP_IDS:
        raise BadParameter(1003)
    return app_id


def param_text(p, name, required=True) -> str:
    value = p.get(name)
    if value is None or value == "":
        if required:
            raise BadParameter(1001)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadParameter(1001)
    return str(value)


def param_user_id(p) -> str:
    user_id = param_text(p, "userid")
    if len(user_id) > MAX_USER_ID:
        raise BadParameter(1002)
    return user_id


def claim_msg_id(msg_id) -> bool:
    if not msg_id:
        return True
    expiry = seen_msg_ids.get(msg_id)
    now = time.time()
    if expiry is not None and expiry > now:
        return False
    seen_msg_ids[msg_id] = now + MSG_ID_TTL
    return True


def send_params(p) -> tuple:
    """(appID, userID, msgID, message) of a send; BadParameter as imserver answers."""
    return (param_app_id(p), param_user_id(p), param_text(p, "msgid", required=False),
            param_text(p, "message"))


DUPLICATE = {"sendResults": False, "duplicate": True}


@app.route("/user/sendMessageAll", methods=["POST"])
def send_message_all():
    app_id, sender, msg_id, message = send_params(params())
    if not claim_msg_id(msg_id):
        return answer(data=DUPLICATE)
    push_to_room(app_id, sender, msg_id or next_seq(), "msg", message)
    return answer(data={"sendResults": True})


@app.route("/user/sendMessage", methods=["POST"])
def send_message():
    p = params()
    app_id, user_id, msg_id, message = send_params(p)
    sender = param_text(p, "from", required=False)
    if not claim_msg_id(msg_id):
        return answer(data=DUPLICATE)
    conn = users.get((app_id, user_id))
    if conn is None:
        seen_msg_ids.pop(msg_id, None)  # a later retry may still deliver it
        return answer(data={"sendResults": False, "sendResultsErr": "user is not online"})
    conn.put(push_frame(msg_id or next_seq(), "msg", message, sender))
    return answer(data={"sendResults": True})


@app.route("/user/list", methods=["GET", "POST"])
def user_list():
    user_ids = list(rooms.get(param_app_id(params()), {}))
    return answer(data={"userCount": len(user_ids), "userList": user_ids})


@app.route("/user/online", methods=["GET", "POST"])
def user_online():
    p = params()
    user_id = param_user_id(p)
    app_id = param_app_id(p, required=False)
    app_ids = [app_id] if app_id is not None else sorted(APP_IDS)
    return answer(data={"online": any((a, user_id) in users for a in app_ids),
                        "userID": user_id})


@app.route("/system/state")
def system_state():
    return answer(data={
        "connections": len(connections),
        "users": len(users),
        "rooms": {str(a): len(r) for a, r in rooms.items()},
        "greenlets": {"readers": len(connections), "writers": len(connections)},
        "sendQueue": {"queuedMessages": sum(c.queue.qsize() for c in list(connections))},
    })


# -- background -------------------------------------------------------------------------

_background = []


def _start_background() -> None:
    # Started at the first connection, inside the gunicorn worker (never in a master).
    if not _background:
        _background.append(gevent.spawn(_sweep_forever))


def _sweep_forever():
    while True:
        gevent.sleep(SWEEP_INTERVAL)
        now = time.time()
        limit = now - HEARTBEAT_TIMEOUT
        for conn in list(connections):
            if conn.heartbeat_time < limit:
                conn.close(1008, "heartbeat timeout")
        for msg_id, expiry in list(seen_msg_ids.items()):
            if expiry <= now:
                del seen_msg_ids[msg_id]


if __name__ == "__main__":
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler
    WSGIServer(("127.0.0.1", int(os.environ.get("PEER_PORT", "8091"))), app,
               handler_class=WebSocketHandler).serve_forever()
