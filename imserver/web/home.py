"""The chat page: ``/home/index?appID=``. The server picks the page's random name and,
when logins need a token (auth.secret), mints one for that name and room."""
import secrets

from flask import Blueprint, current_app, make_response, redirect, render_template, request, url_for

from ..protocol.envelope import parse_app_id
from .extension import get_node

bp = Blueprint("home", __name__)

MAX_NAME_CHARS = 20
ADJECTIVES = ("Brave", "Calm", "Clever", "Cosmic", "Eager", "Fuzzy", "Gentle", "Happy",
              "Jolly", "Lucky", "Mellow", "Nimble", "Quiet", "Rapid", "Sunny", "Witty", "Zesty",
              "Bold", "Swift", "Kind", "Misty", "Noble", "Perky", "Shy")
ANIMALS = ("Otter", "Panda", "Falcon", "Koala", "Lynx", "Fox", "Heron", "Tiger", "Whale",
           "Gecko", "Badger", "Robin", "Yak", "Owl", "Seal", "Crane", "Bison", "Moose", "Lemur",
           "Finch")
SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马",
            "朱", "胡", "郭", "何", "林", "高", "罗", "欧阳", "司马")
GIVEN_NAMES = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军",
               "杰", "涛", "明", "超", "秀兰", "霞", "平", "刚", "小龙", "子涵", "浩然", "雨萱",
               "梓轩", "欣怡")


def random_name() -> str:
    """"SunnyOtter42" or a Chinese name with a number, at most 20 characters."""
    if secrets.randbelow(2) == 0:
        name = secrets.choice(ADJECTIVES) + secrets.choice(ANIMALS) + str(10 + secrets.randbelow(90))
    else:
        name = (secrets.choice(SURNAMES) + secrets.choice(GIVEN_NAMES)
                + str(100 + secrets.randbelow(900)))
    return name[:MAX_NAME_CHARS]


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
    name = random_name()
    page = make_response(render_template(
        "index.html", app_id=app_id, rooms=rooms, ws_url=cfg["app.webSocketUrl"],
        ws_port=cfg["app.webSocketPort"], http_url=cfg["app.httpUrl"],
        heartbeat_interval=cfg["app.clientHeartbeatInterval"],
        presence_max_room=cfg["app.presenceMaxRoom"], user_id=name,
        token=node.auth.mint(app_id, name)))
    # Each load is a new name (and token): no cache may hand one page to two people.
    page.headers["Cache-Control"] = "no-store"
    return page
