"""The chat page: ``/home/index?appID=``, and ``/home/token``, which the page asks for a
name the user chose. The server checks page names and, when logins need a token
(auth.secret), mints one for the name and room; then every page name is a guest name,
``guest-<name>``, so that nobody can take a real user's name from the page."""
import secrets
import unicodedata

from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for

from ..protocol import Code
from ..protocol.envelope import parse_app_id
from .extension import get_node
from .responses import add_cors, json_answer

bp = Blueprint("home", __name__)

MAX_NAME_CHARS = 20
GUEST_PREFIX = "guest-"
MAX_SHOWN_ROOM_CHARS = 32  # of an unknown appID echoed in the page's notice
ADJECTIVES = ("Brave", "Calm", "Clever", "Cosmic", "Eager", "Fuzzy", "Gentle", "Happy",
              "Jolly", "Lucky", "Mellow", "Nimble", "Quiet", "Rapid", "Sunny", "Witty", "Zesty",
              "Bold", "Swift", "Kind", "Misty", "Noble", "Perky", "Shy")
ANIMALS = ("Otter", "Panda", "Falcon", "Koala", "Lynx", "Fox", "Heron", "Tiger", "Whale",
           "Gecko", "Badger", "Robin", "Yak", "Owl", "Seal", "Crane", "Bison", "Moose", "Lemur",
           "Finch")
# Control, format (zero-width, bidi overrides), surrogate, private-use and unassigned
# characters, and line breaks: invisible or misleading in a name shown to others.
_NOT_IN_NAMES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def random_name() -> str:
    """"SunnyOtter42": ASCII, so that it shows in any font, at most 14 characters."""
    return secrets.choice(ADJECTIVES) + secrets.choice(ANIMALS) + str(10 + secrets.randbelow(90))


def _prefix(node) -> str:
    return GUEST_PREFIX if node.auth.tokens_required else ""


def name_limit(node) -> int:
    """Characters a user may type for a name: 20, fewer when app.maxUserIDLength leaves
    less room (after the guest prefix)."""
    return max(1, min(MAX_NAME_CHARS, node.sessions.max_user_id - len(_prefix(node))))


def page_user_id(node, typed) -> "tuple[str, str]":
    """(userID, "") for a name typed on the page, or ("", why it cannot be used)."""
    limit = name_limit(node)
    name = typed.strip() if isinstance(typed, str) else ""
    prefix = _prefix(node)
    if prefix and name.startswith(prefix):
        name = name[len(prefix):].strip()  # a guest name given back as it was shown
    if not name:
        return "", "a name is needed"
    if len(name) > limit:
        return "", f"a name is at most {limit} characters"
    if any(unicodedata.category(ch) in _NOT_IN_NAMES for ch in name):
        return "", "a name cannot hold control or invisible characters"
    return prefix + name, ""


def _room(node, raw) -> "tuple[int, str]":
    """(appID of the page, the requested appID that is not a room, or "")."""
    rooms = sorted(node.app_ids)
    app_id = parse_app_id(raw)
    if app_id in node.app_ids:
        return app_id, ""
    return rooms[0], (str(raw)[:MAX_SHOWN_ROOM_CHARS] if raw not in (None, "") else "")


@bp.route("/")
def root():
    return redirect(url_for("home.index"))


@bp.route("/home/index")
def index():
    node = get_node()
    cfg = current_app.config["IMSERVER"]
    app_id, not_a_room = _room(node, request.args.get("appID") or request.args.get("appId"))
    name = _prefix(node) + random_name()[:name_limit(node)]
    page = make_response(render_template(
        "index.html", app_id=app_id, rooms=sorted(node.app_ids), ws_url=cfg["app.webSocketUrl"],
        ws_port=cfg["app.webSocketPort"], http_url=cfg["app.httpUrl"],
        heartbeat_interval=cfg["app.clientHeartbeatInterval"],
        presence_max_room=cfg["app.presenceMaxRoom"], user_id=name,
        token=node.auth.mint(app_id, name), room_not_found=not_a_room,
        max_message_length=cfg["app.maxMessageLength"], name_max_length=name_limit(node),
        guest_prefix=_prefix(node)))
    # Each load is a new default name (and token): no cache may hand one page to two people.
    page.headers["Cache-Control"] = "no-store"
    return page


@bp.route("/home/token", methods=["GET", "OPTIONS"])
def token():
    """The userID and login token the page uses for a name the user chose (or kept from
    an earlier page of this tab), in room ``appID``."""
    if request.method == "OPTIONS":
        return add_cors(make_response("", 204))
    node = get_node()
    raw = request.args.get("appID") or request.args.get("appId")
    app_id = parse_app_id(raw)
    if raw in (None, ""):
        answer = json_answer(Code.PARAMETER_ILLEGAL, None, "appID is required")
    elif app_id not in node.app_ids:
        answer = json_answer(Code.UNAUTHORIZED, None, "appID must be one of "
                             + ", ".join(map(str, sorted(node.app_ids))))
    else:
        user_id, problem = page_user_id(node, request.args.get("name"))
        if problem:
            answer = json_answer(Code.UNAUTHORIZED_USER_ID, None, problem)
        else:
            answer = json_answer(data={"userID": user_id,
                                       "token": node.auth.mint(app_id, user_id)})
    answer.headers["Cache-Control"] = "no-store"
    return add_cors(answer)
