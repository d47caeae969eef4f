"""The WebSocket commands (login, heartbeat, ping, unknown ones) against a real node,
checked against PROTOCOL.md: codes, the order of the login checks, the reply envelope."""
import json
import time

import pytest

from support import Clients, compact, reply, unique_id

LOGIN_OK = '{{"seq":"{seq}","cmd":"login","response":{{"code":200,"codeMsg":"Success","data":null}}}}'


@pytest.fixture
def connect():
    with Clients() as clients:
        yield clients


def login_data(user_id, app_id=101, token=""):
    return {"serviceToken": token, "appID": app_id, "userID": user_id}


def online_users(node, app_id):
    return node.get("/user/list", appID=app_id)["data"]["userList"]


def assert_alive(client):
    assert client.request("ping", seq="alive") == reply("alive", "ping", 200, "pong")


# -- login -----------------------------------------------------------------------------

def test_login_success_reply_is_the_exact_envelope(node, connect):
    c = connect(node)
    user = unique_id()
    c.send_json({"seq": "1565336219141-266129", "cmd": "login", "data": login_data(user)})
    opcode, raw = c.recv_raw()
    assert opcode == 0x1  # a text frame
    assert raw.decode() == LOGIN_OK.format(seq="1565336219141-266129")
    assert user in online_users(node, 101)
    assert c.request("heartbeat", {}, seq="hb") == reply("hb", "heartbeat")


@pytest.mark.parametrize("app_key,user_key", [
    ("appId", "userId"), ("appid", "userid"), ("APPID", "USERID"), ("AppID", "UserID"),
    ("appID", "userID")])
def test_login_keys_match_without_regard_to_case(node, connect, app_key, user_key):
    c = connect(node)
    user = unique_id()
    assert c.request("login", {"serviceToken": "", app_key: 102, user_key: user},
                     seq="k") == reply("k", "login")
    assert user in online_users(node, 102)


@pytest.mark.parametrize("frame", [
    {"seq": "d", "cmd": "login"},  # data missing
    {"seq": "d", "cmd": "login", "data": None},
    {"seq": "d", "cmd": "login", "data": "userID=alice&appID=101"},
    {"seq": "d", "cmd": "login", "data": [{"userID": "alice", "appID": 101}]},
    {"seq": "d", "cmd": "login", "data": 101},
    {"seq": "d", "cmd": "login", "data": True},
], ids=["missing", "null", "string", "list", "number", "bool"])
def test_login_data_not_an_object_is_1001(node, connect, frame):
    c = connect(node)
    c.send_json(frame)
    assert c.reply("d") == reply("d", "login", 1001)
    # the connection is not logged in, and still usable
    assert c.request("heartbeat", seq="h") == reply("h", "heartbeat", 1000)
    assert c.login(unique_id())["response"]["code"] == 200


@pytest.mark.parametrize("data", [
    {"serviceToken": "", "appID": 101, "userID": ""},
    {"serviceToken": "", "appID": 101},
    {"appID": 101, "userID": None},
    {},
], ids=["empty", "missing", "null", "empty-data"])
def test_login_user_id_empty_or_missing_is_1002(node, connect, data):
    c = connect(node)
    assert c.request("login", data, seq="e") == reply("e", "login", 1002)
    assert c.request("heartbeat", seq="h") == reply("h", "heartbeat", 1000)


def test_login_user_id_length_is_counted_in_characters(node, connect):
    c = connect(node)
    tag = unique_id("")
    ascii_64 = (tag + "x" * 64)[:64]
    assert c.request("login", login_data(ascii_64 + "y"), seq="a65") == reply("a65", "login", 1002)
    chinese_65 = "用" * 65
    assert c.request("login", login_data(chinese_65), seq="c65") == reply("c65", "login", 1002)
    assert c.request("login", login_data(ascii_64), seq="a64") == reply("a64", "login")
    assert ascii_64 in online_users(node, 101)

    # 64 Chinese characters are 192 bytes of UTF-8: still a valid ID
    d = connect(node)
    chinese_64 = (tag + "中" * 64)[:64]
    assert len(chinese_64) == 64 and len(chinese_64.encode()) > 64
    assert d.request("login", login_data(chinese_64, 103), seq="c64") == reply("c64", "login")
    assert chinese_64 in online_users(node, 103)


@pytest.mark.parametrize("user_id", [12345, 1.5, True, ["alice"], {"id": "alice"}],
                         ids=["number", "float", "bool", "list", "object"])
def test_login_user_id_of_wrong_type_is_1001(node, connect, user_id):
    c = connect(node)
    assert c.request("login", login_data(user_id), seq="w") == reply("w", "login", 1001)
    assert_alive(c)


@pytest.mark.parametrize("app_id", [105, 100, 0, -101, 4294967397, 99999999999],
                         ids=["105", "100", "zero", "negative", "over-uint32", "huge"])
def test_login_app_id_not_allowed_is_1003(node, connect, app_id):
    c = connect(node)
    assert c.request("login", login_data(unique_id(), app_id), seq="n") == reply("n", "login", 1003)
    assert c.request("heartbeat", seq="h") == reply("h", "heartbeat", 1000)


def test_login_app_id_missing_is_1003(node, connect):
    c = connect(node)
    assert c.request("login", {"serviceToken": "", "userID": unique_id()},
                     seq="m") == reply("m", "login", 1003)
    assert c.request("login", {"userID": unique_id(), "appID": None},
                     seq="n") == reply("n", "login", 1003)


@pytest.mark.parametrize("app_id", ["abc", True, False, "", "10 1", "-101", [101], {"id": 101}, 101.5,
                                    "１０１", "²", "1_01"],
                         ids=["letters", "true", "false", "empty-string", "space", "minus-string",
                              "list", "object", "fraction", "fullwidth-digits", "superscript",
                              "underscore"])
def test_login_app_id_of_wrong_type_is_1001(node, connect, app_id):
    c = connect(node)
    assert c.request("login", login_data(unique_id(), app_id), seq="t") == reply("t", "login", 1001)
    assert_alive(c)


def test_login_app_id_as_digit_string_is_accepted(node, connect):
    c = connect(node)
    user = unique_id()
    assert c.request("login", login_data(user, "101"), seq="s") == reply("s", "login")
    assert user in online_users(node, 101)


def test_login_checks_run_in_the_documented_order(node, connect):
    c = connect(node)
    # data first, then userID, then appID
    assert c.request("login", {"appID": 999, "userID": ""}, seq="1") == reply("1", "login", 1002)
    assert c.request("login", {"appID": 999, "userID": "x" * 65}, seq="2") == reply("2", "login", 1002)
    assert c.request("login", {"appID": 999, "userID": unique_id()}, seq="3") == reply("3", "login", 1003)
    user = unique_id()
    assert c.request("login", login_data(user), seq="4") == reply("4", "login")
    # logged in: an invalid userID or appID is still reported before "already logged in"
    assert c.request("login", login_data(""), seq="5") == reply("5", "login", 1002)
    assert c.request("login", login_data(unique_id(), 999), seq="6") == reply("6", "login", 1003)
    assert c.request("login", login_data(unique_id()), seq="7") == reply("7", "login", 1009)


def test_second_login_on_one_connection_is_1009_and_changes_nothing(node, connect):
    c = connect(node)
    first, second = unique_id("first"), unique_id("second")
    assert c.login(first)["response"]["code"] == 200
    assert c.request("login", login_data(second), seq="again") == reply("again", "login", 1009)
    assert c.request("login", login_data(first), seq="same") == reply("same", "login", 1009)
    assert c.request("login", login_data(second, 102), seq="room") == reply("room", "login", 1009)
    users_101 = online_users(node, 101)
    assert first in users_101 and second not in users_101
    assert second not in online_users(node, 102)
    # still logged in as the first user
    assert c.request("heartbeat", seq="hb") == reply("hb", "heartbeat")
    assert node.get("/user/online", appID=101, userID=first)["data"]["online"] is True


def test_service_token_is_optional_and_of_any_value(node, connect):
    c = connect(node)
    assert c.request("login", {"appID": 101, "userID": unique_id()}, seq="a") == reply("a", "login")
    d = connect(node)
    assert d.request("login", login_data(unique_id(), token="anything"), seq="b") == reply("b", "login")


def test_custom_app_ids_from_config(make_node, connect):
    custom = make_node({"app": {"appIDs": [7]}})
    c = connect(custom)
    assert c.request("login", login_data(unique_id(), 101), seq="d") == reply("d", "login", 1003)
    user = unique_id()
    assert c.request("login", login_data(user, 7), seq="c") == reply("c", "login")
    assert custom.get("/user/list", appID=7)["data"] == {"userCount": 1, "userList": [user]}
    assert custom.get("/user/list", appID=101)["code"] == 1003


# -- heartbeat -------------------------------------------------------------------------

def test_heartbeat_before_login_is_1000(node, connect):
    c = connect(node)
    c.send_json({"seq": "hb-1", "cmd": "heartbeat", "data": {}})
    _, raw = c.recv_raw()
    assert raw.decode() == ('{"seq":"hb-1","cmd":"heartbeat","response":'
                            '{"code":1000,"codeMsg":"未登录","data":null}}')
    c.send_json({"seq": "hb-2", "cmd": "heartbeat"})
    assert c.reply("hb-2") == reply("hb-2", "heartbeat", 1000)


@pytest.mark.parametrize("frame", [
    {"seq": "h", "cmd": "heartbeat", "data": {}},
    {"seq": "h", "cmd": "heartbeat"},
    {"seq": "h", "cmd": "heartbeat", "data": {"userID": "someone-else"}},
    {"seq": "h", "cmd": "heartbeat", "data": {"anything": [1, 2]}},
], ids=["empty-object", "missing", "other-userID", "other-keys"])
def test_heartbeat_after_login_is_200(node, connect, frame):
    c = connect(node)
    assert c.login(unique_id())["response"]["code"] == 200
    c.send_json(frame)
    _, raw = c.recv_raw()
    assert raw.decode() == '{"seq":"h","cmd":"heartbeat","response":{"code":200,"codeMsg":"Success","data":null}}'


@pytest.mark.parametrize("frame", [{"cmd": "heartbeat", "data": {}}, {"cmd": "heartbeat"},
                                   {"seq": None, "cmd": "heartbeat"}],
                         ids=["no-seq", "no-seq-no-data", "null-seq"])
def test_heartbeat_without_seq_is_200_with_an_empty_seq(node, connect, frame):
    c = connect(node)
    assert c.login(unique_id())["response"]["code"] == 200
    c.send_json(frame)
    _, raw = c.recv_raw()
    assert raw.decode() == '{"seq":"","cmd":"heartbeat","response":{"code":200,"codeMsg":"Success","data":null}}'


def test_heartbeats_without_seq_keep_the_connection_open(make_node, connect):
    """A client of the original that never sends seq stays connected past the heartbeat
    timeout, as long as it sends heartbeats."""
    quick = make_node({"app": {"heartbeatTimeout": 1.5, "sweepInterval": 0.25}})
    c = connect(quick)
    user = unique_id()
    c.send_json({"cmd": "login", "data": login_data(user)})
    assert c.recv_frame() == reply("", "login")
    for _ in range(12):  # 3 s, twice the timeout
        c.send_json({"cmd": "heartbeat", "data": {}})
        assert c.recv_frame(timeout=2) == reply("", "heartbeat")
        time.sleep(0.25)
    assert user in online_users(quick, 101)
    assert_alive(c)


@pytest.mark.parametrize("data", ["x", 1, [], [{}], True], ids=["string", "number", "list",
                                                                 "list-of-object", "bool"])
def test_heartbeat_data_of_wrong_type_is_1001(node, connect, data):
    c = connect(node)
    assert c.login(unique_id())["response"]["code"] == 200
    assert c.request("heartbeat", data, seq="w") == reply("w", "heartbeat", 1001)
    assert c.request("heartbeat", {}, seq="ok") == reply("ok", "heartbeat")


# -- ping ------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [None, {}, "x", 7, [1, "a"], {"userID": 5}, False],
                         ids=["missing", "object", "string", "number", "list", "odd-object",
                              "false"])
def test_ping_answers_pong_before_and_after_login(node, connect, data):
    c = connect(node)
    frame = {"seq": "p1", "cmd": "ping"}
    if data is not None:
        frame["data"] = data
    c.send_json(frame)
    _, raw = c.recv_raw()
    assert raw.decode() == '{"seq":"p1","cmd":"ping","response":{"code":200,"codeMsg":"Success","data":"pong"}}'
    assert c.login(unique_id())["response"]["code"] == 200
    frame["seq"] = "p2"
    c.send_json(frame)
    assert c.reply("p2") == reply("p2", "ping", 200, "pong")


def test_ping_with_explicit_null_data(node, connect):
    c = connect(node)
    c.send_raw('{"seq":"n","cmd":"ping","data":null}')
    assert c.reply("n") == reply("n", "ping", 200, "pong")


# -- dispatch --------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["nosuch", "LOGIN", "Ping", "msg", "enter", " ping", "用户"])
def test_unknown_cmd_is_1010_with_seq_and_cmd_echoed(node, connect, cmd):
    c = connect(node)
    c.send_json({"seq": "u-1", "cmd": cmd, "data": {}})
    _, raw = c.recv_raw()
    assert raw.decode() == compact({"seq": "u-1", "cmd": cmd, "response": {
        "code": 1010, "codeMsg": "路由不存在", "data": None}})
    assert_alive(c)


def test_unknown_cmd_after_login_keeps_the_session(node, connect):
    c = connect(node)
    assert c.login(unique_id())["response"]["code"] == 200
    assert c.request("logout", seq="x") == reply("x", "logout", 1010)
    assert c.request("heartbeat", seq="h") == reply("h", "heartbeat")


@pytest.mark.parametrize("seq", ["", "1565336219141-266129", "序号 with spaces", "a\"b\\c", "x" * 300])
def test_seq_is_echoed_exactly(node, connect, seq):
    c = connect(node)
    c.send_json({"seq": seq, "cmd": "ping"})
    _, raw = c.recv_raw()
    assert json.loads(raw) == reply(seq, "ping", 200, "pong")
    assert raw.decode() == compact(reply(seq, "ping", 200, "pong"))


def test_pipelined_requests_are_answered_in_order(node, connect):
    c = connect(node)
    user = unique_id()
    frames = [{"seq": "1", "cmd": "heartbeat"},
              {"seq": "2", "cmd": "login", "data": login_data(user)},
              {"seq": "3", "cmd": "heartbeat", "data": {}},
              {"seq": "4", "cmd": "ping"},
              {"seq": "5", "cmd": "nope"}]
    for frame in frames:
        c.send_json(frame)
    answers = [c.recv_frame() for _ in frames]
    assert answers == [reply("1", "heartbeat", 1000), reply("2", "login"),
                       reply("3", "heartbeat"), reply("4", "ping", 200, "pong"),
                       reply("5", "nope", 1010)]


def test_extra_top_level_keys_are_ignored(node, connect):
    c = connect(node)
    c.send_json({"seq": "x", "cmd": "ping", "data": {}, "extra": 1, "response": {"code": 1}})
    assert c.reply("x") == reply("x", "ping", 200, "pong")


def test_same_user_in_two_rooms_is_two_independent_users(node, connect):
    user = unique_id()
    a, b = connect(node), connect(node)
    assert a.request("login", login_data(user, 101), seq="a") == reply("a", "login")
    assert b.request("login", login_data(user, 102), seq="b") == reply("b", "login")
    assert user in online_users(node, 101) and user in online_users(node, 102)
    # neither replaced the other
    assert a.request("heartbeat", seq="ha") == reply("ha", "heartbeat")
    assert b.request("heartbeat", seq="hb") == reply("hb", "heartbeat")
    assert f"101_{user}" in node.state(debug=True)["userKeys"]
    assert f"102_{user}" in node.state(debug=True)["userKeys"]
