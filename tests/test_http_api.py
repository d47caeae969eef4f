"""The HTTP API, the chat page and the plain-HTTP answers of a real node: every route
with its parameters from the query string, a form body and a JSON body."""
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from support import Clients, compact, push, reply, unique_id, without_place

JSON_TYPE = "application/json; charset=utf-8"
VIAS = ("query", "form", "json")


@pytest.fixture
def connect():
    with Clients() as clients:
        yield clients


def call(node, method, path, params=None, via="query", headers=None):
    """(status, headers, body bytes); ``params`` go in the query string, a form body or
    a JSON body."""
    params = params or {}
    headers = dict(headers or {})
    if via == "query":
        return node.request(method, path, params=params, headers=headers)
    if via == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urllib.parse.urlencode(params).encode()
    else:
        headers["Content-Type"] = "application/json"
        body = json.dumps(params).encode()
    return node.request(method, path, body=body, headers=headers)


def api(node, method, path, params=None, via="query", cors=True) -> dict:
    """A JSON answer of the API: HTTP 200 with the protocol's headers; its body.
    (``cors=False``: /system/state, whose header test_system_state_has_cors_header checks.)"""
    status, headers, body = call(node, method, path, params, via)
    assert status == 200, body
    assert headers["Content-Type"] == JSON_TYPE
    if cors:
        assert headers["Access-Control-Allow-Origin"] == "*"
    answer = json.loads(body)
    assert list(answer)[:3] == ["code", "msg", "data"]
    return answer


def ok(answer) -> dict:
    assert (answer["code"], answer["msg"]) == (200, "Success"), answer
    return answer["data"]


def login(connect, node, user, app_id=101):
    client = connect(node)
    assert client.request("login", {"appID": app_id, "userID": user}, seq="in") == reply("in", "login")
    return client


def method_for(via):
    return "GET" if via == "query" else "POST"


# -- /user/list ----------------------------------------------------------------------------

@pytest.mark.parametrize("via,app_key", [("query", "appID"), ("query", "appId"), ("form", "appID"),
                                         ("form", "appId"), ("json", "appID"), ("json", "appid")])
def test_user_list(node, connect, via, app_key):
    users = [unique_id("list"), unique_id("list")]
    for user in users:
        login(connect, node, user, 103)
    other = unique_id("other")
    login(connect, node, other, 104)
    data = ok(api(node, method_for(via), "/user/list", {app_key: 103}, via))
    assert list(data) == ["userCount", "userList"]
    assert data["userCount"] == len(data["userList"])
    assert len(set(data["userList"])) == len(data["userList"])  # each user once
    assert set(users) <= set(data["userList"]) and other not in data["userList"]


def test_user_list_of_an_empty_room_exact_answer(make_node):
    quiet = make_node({"app": {"appIDs": [5, 6]}})
    status, headers, body = quiet.request("GET", "/user/list", params={"appID": 6})
    assert status == 200
    assert body.decode() == '{"code":200,"msg":"Success","data":{"userCount":0,"userList":[]}}'


# -- /user/online --------------------------------------------------------------------------

@pytest.mark.parametrize("via,app_key,user_key", [
    ("query", "appID", "userID"), ("query", "appId", "userId"), ("form", "appID", "userID"),
    ("form", "appId", "userId"), ("json", "appID", "userID"), ("json", "appId", "userId")])
def test_user_online(node, connect, via, app_key, user_key):
    user = unique_id("on")
    client = login(connect, node, user, 102)
    method = method_for(via)
    assert ok(api(node, method, "/user/online", {app_key: 102, user_key: user}, via)) == {
        "online": True, "userID": user}
    assert ok(api(node, method, "/user/online", {app_key: 101, user_key: user}, via)) == {
        "online": False, "userID": user}
    # without appID: every allowed appID
    assert ok(api(node, method, "/user/online", {user_key: user}, via)) == {
        "online": True, "userID": user}
    client.close()
    assert ok(api(node, method, "/user/online", {user_key: user}, via))["online"] is False


def test_user_online_exact_answer(node):
    user = unique_id("off")
    status, headers, body = node.request("GET", "/user/online", params={"appID": 101, "userID": user})
    assert (status, headers["Content-Type"]) == (200, JSON_TYPE)
    assert body.decode() == compact({"code": 200, "msg": "Success",
                                     "data": {"online": False, "userID": user}})


# -- /user/sendMessage ---------------------------------------------------------------------

@pytest.mark.parametrize("via,keys", [
    ("query", ("appID", "userID", "msgID")), ("form", ("appID", "userID", "msgID")),
    ("json", ("appID", "userID", "msgID")), ("query", ("appId", "userId", "msgId")),
    ("form", ("appId", "userId", "msgId")), ("json", ("appId", "userId", "msgId"))])
def test_send_message_delivers_to_the_user(node, connect, via, keys):
    user = unique_id("to")
    client = login(connect, node, user, 101)
    msg_id = unique_id("msg")
    app_key, user_key, msg_key = keys
    params = {app_key: 101, user_key: user, msg_key: msg_id, "message": "你好 hello 👋",
              "from": "alice"}
    status, headers, body = call(node, "POST", "/user/sendMessage", params, via)
    assert (status, headers["Content-Type"], headers["Access-Control-Allow-Origin"]) == (200, JSON_TYPE, "*")
    assert body.decode() == '{"code":200,"msg":"Success","data":{"sendResults":true}}'
    opcode, raw = client.recv_raw()
    assert opcode == 0x1
    assert json.loads(raw) == push(msg_id, "msg", "你好 hello 👋", "alice")
    sent_at = json.loads(raw)["response"]["data"]["time"]
    assert raw.decode() == (f'{{"seq":"{msg_id}","cmd":"msg","response":{{"code":200,"codeMsg":"Ok",'
                            '"data":{"target":"","type":"text","msg":"你好 hello 👋","from":"alice",'
                            f'"room":"","msgID":"{msg_id}","time":{sent_at}}}}}}}')


def test_send_message_without_from_has_empty_from(node, connect):
    user = unique_id("to")
    client = login(connect, node, user, 102)
    msg_id = unique_id("msg")
    assert ok(node.post("/user/sendMessage", appID=102, userID=user, msgID=msg_id,
                        message="hi")) == {"sendResults": True}
    assert client.push("msg") == push(msg_id, "msg", "hi", "")


def test_send_message_reaches_only_that_user_in_that_room(node, connect):
    user, other = unique_id("to"), unique_id("other")
    target = login(connect, node, user, 101)
    same_name_other_room = login(connect, node, user, 102)
    bystander = login(connect, node, other, 101)
    msg_id = unique_id("msg")
    assert ok(node.post("/user/sendMessage", appID=101, userID=user, msgID=msg_id,
                        message="only you"))["sendResults"] is True
    assert target.push("msg")["seq"] == msg_id
    for other_client in (same_name_other_room, bystander):
        assert [f for f in other_client.flush() if f["seq"] == msg_id] == []


def test_send_message_to_an_offline_user(node):
    data = ok(node.post("/user/sendMessage", appID=101, userID=unique_id("nobody"),
                        msgID=unique_id("m"), message="hi"))
    assert data["sendResults"] is False
    assert isinstance(data["sendResultsErr"], str) and data["sendResultsErr"]
    assert set(data) == {"sendResults", "sendResultsErr"}


def test_send_message_msg_id_is_idempotent(node, connect):
    user = unique_id("to")
    client = login(connect, node, user, 101)
    msg_id = unique_id("once")
    assert ok(node.post("/user/sendMessage", appID=101, userID=user, msgID=msg_id,
                        message="first")) == {"sendResults": True}
    assert client.push("msg") == push(msg_id, "msg", "first", "")
    status, _, body = call(node, "POST", "/user/sendMessage",
                           {"appID": 101, "userID": user, "msgID": msg_id, "message": "again"}, "form")
    assert body.decode() == '{"code":200,"msg":"Success","data":{"sendResults":false,"duplicate":true}}'
    # the msgID is remembered whatever the spelling or transport
    assert ok(api(node, "POST", "/user/sendMessage",
                  {"appId": 101, "userId": user, "msgId": msg_id, "message": "json"}, "json")) == {
        "sendResults": False, "duplicate": True}
    assert [f for f in client.flush() if f["seq"] == msg_id] == []


def test_send_message_empty_msg_id_is_never_deduplicated(node, connect):
    user = unique_id("to")
    client = login(connect, node, user, 101)
    for params in ({"appID": 101, "userID": user, "message": "one"},
                   {"appID": 101, "userID": user, "message": "two", "msgID": ""},
                   {"appID": 101, "userID": user, "message": "three", "msgID": ""}):
        assert ok(api(node, "POST", "/user/sendMessage", params, "form")) == {"sendResults": True}
    frames = [client.push("msg") for _ in range(3)]
    assert [f["response"]["data"]["msg"] for f in frames] == ["one", "two", "three"]
    seqs = [f["seq"] for f in frames]
    assert all(isinstance(s, str) and s for s in seqs) and len(set(seqs)) == 3


def test_send_message_retry_after_a_failed_send_is_delivered(node, connect):
    user = unique_id("later")
    msg_id = unique_id("retry")
    first = ok(node.post("/user/sendMessage", appID=101, userID=user, msgID=msg_id, message="hi"))
    assert first["sendResults"] is False and "duplicate" not in first
    client = login(connect, node, user, 101)
    assert ok(node.post("/user/sendMessage", appID=101, userID=user, msgID=msg_id,
                        message="hi")) == {"sendResults": True}
    assert client.push("msg") == push(msg_id, "msg", "hi", "")
    # delivered now, so remembered
    assert ok(node.post("/user/sendMessage", appID=101, userID=user, msgID=msg_id,
                        message="hi")) == {"sendResults": False, "duplicate": True}


# -- /user/sendMessageAll ------------------------------------------------------------------

@pytest.mark.parametrize("via,keys", [("query", ("appID", "userID", "msgID")),
                                      ("form", ("appId", "userId", "msgId")),
                                      ("json", ("appID", "userID", "msgID")),
                                      ("json", ("appId", "userId", "msgId"))])
def test_send_message_all_reaches_the_room_but_the_sender(node, connect, via, keys):
    sender, b_user, c_user = unique_id("s"), unique_id("b"), unique_id("c")
    s = login(connect, node, sender, 102)
    b = login(connect, node, b_user, 102)
    c = login(connect, node, c_user, 102)
    elsewhere = login(connect, node, unique_id("e"), 103)
    sender_elsewhere = login(connect, node, sender, 104)
    msg_id = unique_id("all")
    app_key, user_key, msg_key = keys
    answer = api(node, "POST", "/user/sendMessageAll",
                 {app_key: 102, user_key: sender, msg_key: msg_id, "message": "to all 大家"}, via)
    stored = ok(answer)
    assert without_place(stored) == {"sendResults": True}
    expected = push(msg_id, "msg", "to all 大家", sender)
    for member in (b, c):
        frame = member.push("msg")
        assert frame == expected
        data = frame["response"]["data"]
        assert (data["offset"], data["epoch"], data["msgID"]) == (
            stored["offset"], stored["epoch"], msg_id)
        # the exact text, key order included
        assert compact(frame) == compact(push(msg_id, "msg", "to all 大家", sender)).replace(
            ',"room":""}', f',"room":"","msgID":"{msg_id}","time":{data["time"]},'
            f'"offset":{stored["offset"]},"epoch":"{stored["epoch"]}"}}')
    for outsider in (s, elsewhere, sender_elsewhere):
        assert [f for f in outsider.flush() if f["seq"] == msg_id] == []


def test_send_message_all_from_a_sender_who_is_not_online(node, connect):
    member = login(connect, node, unique_id("m"), 103)
    msg_id = unique_id("all")
    assert ok(node.post("/user/sendMessageAll", appID=103, userID=unique_id("system"),
                        msgID=msg_id, message="notice"))["sendResults"] is True
    assert member.push("msg")["seq"] == msg_id


def test_send_message_all_msg_id_is_idempotent(node, connect):
    member = login(connect, node, unique_id("m"), 104)
    msg_id = unique_id("all-once")
    assert without_place(ok(node.post("/user/sendMessageAll", appID=104, userID="sys",
                                      msgID=msg_id, message="one"))) == {"sendResults": True}
    assert member.push("msg")["seq"] == msg_id
    assert ok(node.post("/user/sendMessageAll", appID=104, userID="sys", msgID=msg_id,
                        message="one")) == {"sendResults": False, "duplicate": True}
    assert [f for f in member.flush() if f["seq"] == msg_id] == []


def test_send_message_all_empty_msg_id_is_never_deduplicated(node, connect):
    member_user = unique_id("m")
    member = login(connect, node, member_user, 104)
    sender = unique_id("sys")
    for text in ("one", "two"):
        assert without_place(ok(node.post("/user/sendMessageAll", appID=104, userID=sender,
                                          message=text))) == {"sendResults": True}
    mine = [f for f in (member.push("msg"), member.push("msg"))]
    assert [f["response"]["data"]["msg"] for f in mine] == ["one", "two"]
    assert mine[0]["seq"] != mine[1]["seq"]


def test_markup_characters_are_written_as_they_are(node, connect):
    """<, > and & travel as themselves in frames and answers (the original writes them as
    \\u003c, \\u003e, \\u0026: the same JSON strings). docs/PROTOCOL.md lists this."""
    sender, receiver = unique_id("m<&>"), unique_id("r")
    client = login(connect, node, receiver, 104)
    text = "<b>fish & chips</b>"
    status, _, body = call(node, "POST", "/user/sendMessage",
                           {"appID": 104, "userID": receiver, "message": text, "from": sender},
                           "form")
    assert status == 200 and b"\\u00" not in body
    _, raw = client.recv_raw()
    assert f'"msg":"{text}","from":"{sender}"'.encode() in raw
    status, _, body = node.request("GET", "/user/online", params={"appID": 104, "userID": sender})
    assert f'"userID":"{sender}"'.encode() in body


def test_user_list_without_app_id_exact_answer(node):
    """The original answers 200 with the (empty) list of appID 0; docs/PROTOCOL.md lists this."""
    status, _, body = node.request("GET", "/user/list")
    assert status == 200
    assert body.decode() == compact({"code": 1001, "msg": "参数不合法", "data": None,
                                     "detail": "appID is required"})


# -- bad parameters ------------------------------------------------------------------------

LONG = "x" * 65

BAD = [
    pytest.param("/user/list", {}, 1001, id="list-no-appID"),
    pytest.param("/user/list", {"appID": ""}, 1001, id="list-empty-appID"),
    pytest.param("/user/list", {"appID": "abc"}, 1001, id="list-appID-letters"),
    pytest.param("/user/list", {"appID": "101.0"}, 1001, id="list-appID-decimal"),
    pytest.param("/user/list", {"appID": "1_01"}, 1001, id="list-appID-underscore"),
    pytest.param("/user/list", {"appID": 999}, 1003, id="list-appID-999"),
    pytest.param("/user/list", {"appID": 0}, 1003, id="list-appID-0"),
    pytest.param("/user/online", {"appID": 101}, 1001, id="online-no-userID"),
    pytest.param("/user/online", {"appID": 101, "userID": ""}, 1001, id="online-empty-userID"),
    pytest.param("/user/online", {"appID": 101, "userID": LONG}, 1002, id="online-userID-65"),
    pytest.param("/user/online", {"appID": "x", "userID": "u"}, 1001, id="online-appID-letters"),
    pytest.param("/user/online", {"appID": 105, "userID": "u"}, 1003, id="online-appID-105"),
    pytest.param("/user/sendMessage", {"userID": "u", "message": "m"}, 1001, id="send-no-appID"),
    pytest.param("/user/sendMessage", {"appID": 101, "message": "m"}, 1001, id="send-no-userID"),
    pytest.param("/user/sendMessage", {"appID": 101, "userID": "u"}, 1001, id="send-no-message"),
    pytest.param("/user/sendMessage", {"appID": "abc", "userID": "u", "message": "m"}, 1001,
                 id="send-appID-letters"),
    pytest.param("/user/sendMessage", {"appID": 999, "userID": "u", "message": "m"}, 1003,
                 id="send-appID-999"),
    pytest.param("/user/sendMessage", {"appID": 101, "userID": LONG, "message": "m"}, 1002,
                 id="send-userID-65"),
    pytest.param("/user/sendMessageAll", {"userID": "u", "message": "m"}, 1001, id="all-no-appID"),
    pytest.param("/user/sendMessageAll", {"appID": 101, "message": "m"}, 1001, id="all-no-userID"),
    pytest.param("/user/sendMessageAll", {"appID": 101, "userID": "u"}, 1001, id="all-no-message"),
    pytest.param("/user/sendMessageAll", {"appID": 999, "userID": "u", "message": "m"}, 1003,
                 id="all-appID-999"),
    pytest.param("/user/sendMessageAll", {"appID": 101, "userID": LONG, "message": "m"}, 1002,
                 id="all-userID-65"),
]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("path,params,code", BAD)
def test_bad_parameters(node, path, params, code, via):
    method = "POST" if "send" in path or via != "query" else "GET"
    answer = api(node, method, path, params, via)
    assert answer["code"] == code
    assert answer["msg"] == {1001: "参数不合法", 1002: "非法的用户ID", 1003: "未授权"}[code]
    assert answer["data"] is None
    assert isinstance(answer.get("detail"), str) and answer["detail"]


def test_user_id_limit_counts_characters(node):
    assert ok(api(node, "GET", "/user/online", {"appID": 101, "userID": "中" * 64}))["online"] is False
    assert api(node, "GET", "/user/online", {"appID": 101, "userID": "中" * 65})["code"] == 1002


@pytest.mark.parametrize("app_id", [101.5, True, [101], {"id": 101}, "１０１"],
                         ids=["fraction", "bool", "list", "object", "fullwidth-digits"])
def test_json_app_id_of_wrong_type_is_1001(node, app_id):
    answer = api(node, "POST", "/user/list", {"appID": app_id}, "json")
    assert answer["code"] == 1001, answer


@pytest.mark.parametrize("body", [b"{not json", b"[101]", b'"appID=101"', b"null"],
                         ids=["malformed", "array", "string", "null"])
def test_json_body_that_is_not_an_object_gives_no_parameters(node, body):
    status, headers, raw = node.request("POST", "/user/list", body=body,
                                        headers={"Content-Type": "application/json"})
    assert (status, headers["Content-Type"]) == (200, JSON_TYPE)
    assert json.loads(raw)["code"] == 1001


@pytest.mark.parametrize("field", ["message", "from"])
def test_unencodable_text_is_refused_as_json(node, connect, field):
    """A JSON body may escape a lone surrogate (\\ud800); it cannot be sent on as UTF-8.
    The API must answer in JSON (refused, 1001, or delivered with the character replaced),
    never with a 500 page, and the recipient's connection must live on."""
    user = unique_id("to")
    client = login(connect, node, user, 101)
    fields = {"appID": 101, "userID": user, "message": "hi", "from": "a"}
    fields[field] = "\ud800"
    body = json.dumps(fields).encode()  # ensure_ascii: the surrogate travels as \ud800
    status, headers, raw = node.request("POST", "/user/sendMessage", body=body,
                                        headers={"Content-Type": "application/json"})
    assert (status, headers["Content-Type"]) == (200, JSON_TYPE), raw[:200]
    assert json.loads(raw)["code"] in (200, 1001)
    assert client.request("ping", seq="p") == reply("p", "ping", 200, "pong")


# -- HTTP details: methods, CORS, unknown routes ---------------------------------------------

@pytest.mark.parametrize("path", ["/user/list", "/user/online", "/user/sendMessage",
                                  "/user/sendMessageAll"])
def test_options_preflight(node, path):
    status, headers, body = node.request("OPTIONS", path, headers={
        "Origin": "https://example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 204 and body == b""
    assert headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
    assert {"POST", "OPTIONS"} <= methods
    if "send" not in path:
        assert "GET" in methods
    assert "content-type" in headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize("method,path", [("GET", "/user/sendMessage"), ("GET", "/user/sendMessageAll"),
                                         ("PUT", "/user/list"), ("DELETE", "/user/online")])
def test_wrong_method_is_405_json(node, method, path):
    status, headers, body = node.request(method, path)
    assert status == 405
    assert headers["Content-Type"] == JSON_TYPE
    assert headers["Access-Control-Allow-Origin"] == "*"
    answer = json.loads(body)
    assert (answer["code"], answer["msg"], answer["data"]) == (1010, "路由不存在", None)
    assert isinstance(answer["detail"], str) and answer["detail"]


@pytest.mark.parametrize("method,path,allowed", [("GET", "/user/sendMessage", {"POST"}),
                                                 ("PUT", "/user/list", {"GET", "POST"})])
def test_405_lists_the_allowed_methods(node, method, path, allowed):
    """RFC 9110 section 15.5.6: a 405 answer MUST carry an Allow header."""
    status, headers, _ = node.request(method, path)
    assert status == 405
    listed = {m.strip() for m in (headers.get("Allow") or "").split(",") if m.strip()}
    assert allowed <= listed, dict(headers)


@pytest.mark.parametrize("path", ["/nope", "/user", "/user/nope", "/system/nope"])
def test_unknown_route_is_404_json(node, path):
    status, headers, body = node.request("GET", path)
    assert status == 404
    assert headers["Content-Type"] == JSON_TYPE
    assert headers["Access-Control-Allow-Origin"] == "*"
    answer = json.loads(body)
    assert (answer["code"], answer["msg"], answer["data"]) == (1010, "路由不存在", None)


# -- /system/state -------------------------------------------------------------------------

def test_system_state(node, connect):
    user = unique_id("st")
    login(connect, node, user, 103)
    anonymous = connect(node)
    anonymous.request("ping")
    data = ok(api(node, "GET", "/system/state", cors=False))
    for key in ("connections", "users", "rooms", "greenlets", "sendQueue", "managerInfo"):
        assert key in data, key
    assert data["connections"] >= 2 and data["users"] >= 1
    assert data["rooms"]["103"] >= 1
    assert data["managerInfo"]["clientsLen"] == data["connections"]
    assert data["managerInfo"]["usersLen"] == data["users"]
    assert data["users"] == sum(data["rooms"].values())
    assert "connectionList" not in data and "userKeys" not in data


@pytest.mark.parametrize("flag", ["true", "1", "True"])
def test_system_state_debug_lists_connections_and_user_keys(node, connect, flag):
    user = unique_id("dbg")
    login(connect, node, user, 104)
    data = ok(api(node, "GET", "/system/state", {"isDebug": flag}, cors=False))
    assert f"104_{user}" in data["userKeys"]
    assert len(data["connectionList"]) == data["connections"]
    mine = [c for c in data["connectionList"] if c["userID"] == user]
    assert len(mine) == 1 and mine[0]["appID"] == 104


def test_system_state_without_debug_for_false(node):
    data = ok(api(node, "GET", "/system/state", {"isDebug": "false"}, cors=False))
    assert "connectionList" not in data and "userKeys" not in data


# -- /acc, the chat page, the two ports -------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST"])
def test_acc_without_upgrade_is_400_text(node, method):
    for port in (node.ws_port, node.http_port):
        status, headers, body = call_port(port, method, "/acc")
        assert status == 400
        assert headers["Content-Type"].startswith("text/plain")
        assert body.strip() and b"WebSocket" in body


def call_port(port, method, path):
    """Like NodeProcess.request, on either port."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_chat_page_for_a_room(node):
    status, headers, body = node.request("GET", "/home/index", params={"appID": 102})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert re.search(r'"appID":\s*102\b', body.decode())


def page_config(node, **params) -> dict:
    status, headers, body = node.request("GET", "/home/index", params=params)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    found = re.search(rb'<script id="config" type="application/json">(.*?)</script>', body, re.S)
    return json.loads(found.group(1))


@pytest.mark.parametrize("query,asked", [({"appID": 999}, "999"), ({"appID": "abc"}, "abc"),
                                         ({}, ""), ({"appID": "²"}, "²")],
                         ids=["unknown", "not-a-number", "missing", "superscript-digit"])
def test_chat_page_falls_back_to_the_first_room_and_says_so(node, query, asked):
    cfg = page_config(node, **query)
    assert cfg["appID"] == 101
    assert cfg["roomNotFound"] == asked  # the page shows a notice when it is not ""


def test_chat_page_names_are_ascii(node):
    for _ in range(30):
        name = page_config(node, appID=101)["userID"]
        assert re.fullmatch(r"[A-Za-z]+[0-9]{2}", name) and len(name) <= 20, name


def test_chat_page_has_the_limits_of_the_node(make_node):
    custom = make_node({"app": {"maxMessageLength": 300, "maxUserIDLength": 12}})
    cfg = page_config(custom, appID=101)
    assert (cfg["maxMessageLength"], cfg["nameMaxLength"], cfg["guestPrefix"]) == (300, 12, "")
    assert len(cfg["userID"]) <= 12


def test_page_token_for_a_chosen_name(node):
    status, headers, body = node.request("GET", "/home/token",
                                         params={"appID": 102, "name": "  Zoë Li  "})
    assert (status, headers["Content-Type"]) == (200, JSON_TYPE)
    assert headers["Cache-Control"] == "no-store"
    assert headers["Access-Control-Allow-Origin"] == "*"
    # without auth.secret there is no token to mint, and no guest prefix
    assert json.loads(body) == {"code": 200, "msg": "Success",
                                "data": {"userID": "Zoë Li", "token": ""}}


@pytest.mark.parametrize("params,code,detail", [
    ({"appID": 101, "name": "   "}, 1002, "a name is needed"),
    ({"appID": 101}, 1002, "a name is needed"),
    ({"appID": 101, "name": "x" * 21}, 1002, "a name is at most 20 characters"),
    ({"appID": 101, "name": "zero\u200bwidth"}, 1002,
     "a name cannot hold control or invisible characters"),
    ({"appID": 101, "name": "tab\there"}, 1002,
     "a name cannot hold control or invisible characters"),
    ({"appID": 101, "name": "rtl\u202eevil"}, 1002,
     "a name cannot hold control or invisible characters"),
    ({"name": "Bob"}, 1001, "appID is required"),
    ({"appID": 999, "name": "Bob"}, 1003, "appID must be one of 101, 102, 103, 104"),
], ids=["blank", "missing", "21-chars", "zero-width", "tab", "bidi-override", "no-appID",
        "appID-999"])
def test_page_token_refuses_names_that_cannot_be_shown(node, params, code, detail):
    answer = node.get("/home/token", **params)
    assert answer == {"code": code, "msg": {1001: "参数不合法", 1002: "非法的用户ID",
                                            1003: "未授权"}[code],
                      "data": None, "detail": detail}


def test_page_names_are_guest_names_where_logins_need_tokens(make_node, connect):
    import jwt
    secret = "s" * 40
    secure = make_node({"auth": {"secret": secret}})
    assert page_config(secure, appID=101)["guestPrefix"] == "guest-"
    assert page_config(secure, appID=101)["userID"].startswith("guest-")
    for typed in ("alice", "guest-alice", " guest-alice "):
        data = secure.get("/home/token", appID=103, name=typed)["data"]
        assert data["userID"] == "guest-alice"  # never "alice": a real user's name
        claims = jwt.decode(data["token"], secret, algorithms=["HS256"])
        assert (claims["userID"], claims["appID"]) == ("guest-alice", 103)
    client = connect(secure)
    assert client.request("login", {"appID": 103, "userID": "guest-alice",
                                    "serviceToken": data["token"]})["response"]["code"] == 200


def test_chat_page_article_spelling(node):
    status, _, body = node.request("GET", "/home/index", params={"appId": 103})
    assert status == 200 and re.search(r'"appID":\s*103\b', body.decode())


def test_chat_page_loads_nothing_from_another_site(node):
    page = node.request("GET", "/home/index", params={"appID": 101})[2].decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs
    for ref in refs:
        assert not re.match(r"(?i)^(https?:)?//", ref), ref
        if ref.startswith("/"):
            assert node.request("GET", ref)[0] == 200, ref


def test_root_redirects_to_the_chat_page(node):
    status, _, body = node.request("GET", "/")
    assert status == 200 and b"<html" in body.lower()


def test_both_ports_serve(node, connect):
    assert node.ws_url.endswith(f":{node.ws_port}/acc")
    assert node.http_url.endswith(f":{node.http_port}")
    assert node.ws_port != node.http_port
    user = unique_id("ports")
    client = login(connect, node, user, 101)  # the WebSocket endpoint on webSocketPort
    data = ok(api(node, "GET", "/user/online", {"appID": 101, "userID": user}))
    assert data["online"] is True  # the API on httpPort sees it
    assert client.request("ping", seq="p") == reply("p", "ping", 200, "pong")


def test_system_state_has_cors_header(node):
    """PROTOCOL.md: every JSON answer carries Access-Control-Allow-Origin: *."""
    status, headers, _ = node.request("GET", "/system/state")
    assert status == 200 and headers["Content-Type"] == JSON_TYPE
    assert headers.get("Access-Control-Allow-Origin") == "*"
