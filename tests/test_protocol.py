"""The JSON envelope (imserver.protocol): codes, request parsing, reply and push encoding.

Pure functions; every expectation is an exact value from PROTOCOL.md.
"""
import json

import pytest

from imserver.protocol import (Code, ProtocolError, Request, encode_push, encode_reply,
                               fold_keys, parse_request)
from imserver.protocol.envelope import ENTER_MESSAGE, EXIT_MESSAGE

# PROTOCOL.md, "Codes", row by row.
CODE_TABLE = [
    (200, "Success"),
    (1000, "未登录"),
    (1001, "参数不合法"),
    (1002, "非法的用户ID"),
    (1003, "未授权"),
    (1004, "系统错误"),
    (1005, "没有数据"),
    (1006, "添加错误"),
    (1007, "删除错误"),
    (1008, "存储错误"),
    (1009, "操作失败"),
    (1010, "路由不存在"),
]


# -- codes -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,message", CODE_TABLE)
def test_code_message_matches_protocol_table(value, message):
    assert Code(value).message == message
    assert int(Code(value)) == value


def test_code_enum_has_the_table_codes_and_only_new_ones_from_1100():
    # PROTOCOL.md: "New codes, if needed, start at 1100 and are added to this table."
    values = sorted(int(c) for c in Code)
    assert values[:len(CODE_TABLE)] == [v for v, _ in CODE_TABLE]
    for code in values[len(CODE_TABLE):]:
        assert code >= 1100
        assert Code(code).message
        assert Code(code).message not in dict(CODE_TABLE).values()


def test_code_names_used_by_the_node():
    assert Code.OK == 200
    assert Code.NOT_LOGGED_IN == 1000
    assert Code.PARAMETER_ILLEGAL == 1001
    assert Code.UNAUTHORIZED_USER_ID == 1002
    assert Code.UNAUTHORIZED == 1003
    assert Code.SERVER_ERROR == 1004
    assert Code.OPERATION_FAILURE == 1009
    assert Code.ROUTING_NOT_EXIST == 1010


# -- parse_request: valid frames ------------------------------------------------------------

def test_parse_login_request_from_protocol():
    req = parse_request('{"seq":"1565336219141-266129","cmd":"login",'
                        '"data":{"userID":"alice","appID":101,"serviceToken":""}}')
    assert req == Request("1565336219141-266129", "login",
                          {"userID": "alice", "appID": 101, "serviceToken": ""})
    assert req.seq == "1565336219141-266129"
    assert req.cmd == "login"


def test_parse_missing_data_is_none():
    assert parse_request('{"seq":"7","cmd":"heartbeat"}') == Request("7", "heartbeat", None)


def test_parse_empty_seq_is_allowed():
    assert parse_request('{"seq":"","cmd":"ping"}') == Request("", "ping", None)


@pytest.mark.parametrize("data", [{}, [], "x", 5, None, True, {"a": [1, {"b": None}]}])
def test_parse_data_is_passed_through_as_sent(data):
    req = parse_request(json.dumps({"seq": "s", "cmd": "ping", "data": data}))
    assert req.data == data
    assert type(req.data) is type(data)


def test_parse_bytes_input():
    req = parse_request('{"seq":"1","cmd":"login","data":{"userID":"张三"}}'.encode())
    assert req == Request("1", "login", {"userID": "张三"})


def test_parse_bytes_and_str_give_the_same_request():
    text = '{"seq":"ü","cmd":"ping","data":{"x":"哈喽~"}}'
    assert parse_request(text) == parse_request(text.encode("utf-8"))


def test_parse_ignores_extra_top_level_keys():
    assert parse_request('{"seq":"1","cmd":"ping","extra":1}') == Request("1", "ping", None)


# -- parse_request: rejected frames -------------------------------------------------------------

def _reject(payload) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_request(payload)
    return info.value


@pytest.mark.parametrize("payload", [
    "", "   ", "{", "not json", '{"seq":"1","cmd":"ping"', "{'seq':'1'}",
    '{"seq":"1","cmd":"ping"} trailing', b"\xff\xfe\x00garbage", b"\xc3\x28",
])
def test_invalid_json_is_1001_with_nothing_echoed(payload):
    err = _reject(payload)
    assert err.code is Code.PARAMETER_ILLEGAL
    assert (err.seq, err.cmd) == ("", "")


@pytest.mark.parametrize("payload", ["[]", '[{"seq":"1","cmd":"ping"}]', "1", "1.5", '"x"',
                                     "null", "true", "false"])
def test_json_that_is_not_an_object_is_1001(payload):
    err = _reject(payload)
    assert err.code == 1001
    assert (err.seq, err.cmd) == ("", "")


@pytest.mark.parametrize("seq_json", ["1", "1.5", "true", "[]", "{}", '["1"]'])
def test_non_string_seq_is_1001_echoing_cmd_only(seq_json):
    err = _reject('{"seq":%s,"cmd":"login"}' % seq_json)
    assert err.code == 1001
    assert err.seq == ""
    assert err.cmd == "login"


@pytest.mark.parametrize("payload", ['{"cmd":"heartbeat","data":{}}',
                                     '{"seq":null,"cmd":"heartbeat","data":{}}'],
                         ids=["missing", "null"])
def test_missing_seq_is_empty(payload):
    # As in the original, whose decoder leaves an absent (or null) string field empty:
    # clients that send heartbeats without seq must get their 200.
    assert parse_request(payload) == Request("", "heartbeat", {})


@pytest.mark.parametrize("payload", ['{"seq":"abc"}', '{"seq":"abc","cmd":null}',
                                     '{"seq":"abc","cmd":""}'],
                         ids=["missing", "null", "empty"])
def test_missing_or_empty_cmd_is_empty_for_the_dispatch_to_answer(payload):
    # The dispatch answers an unknown cmd, "" included, with 1010 as the original does.
    assert parse_request(payload) == Request("abc", "", None)


def test_neither_seq_nor_cmd_is_an_empty_request():
    assert parse_request('{"data":{"x":1}}') == Request("", "", {"x": 1})
    assert parse_request("{}") == Request("", "", None)


@pytest.mark.parametrize("cmd_json", ["1", "true", "[]", '{"a":1}', '["login"]'])
def test_non_string_cmd_is_1001_echoing_seq_only(cmd_json):
    err = _reject('{"seq":"s-1","cmd":%s}' % cmd_json)
    assert (err.code, err.seq, err.cmd) == (1001, "s-1", "")


def test_neither_seq_nor_cmd_string_echoes_nothing():
    err = _reject('{"seq":5,"cmd":6}')
    assert (err.code, err.seq, err.cmd) == (1001, "", "")


@pytest.mark.parametrize("payload", [
    "[" * 100000,
    "[" * 100000 + "]" * 100000,
    '{"a":' * 100000 + "1" + "}" * 100000,
    '{"seq":"1","cmd":"ping","data":' + "[" * 100000 + "]" * 100000 + "}",
])
def test_deeply_nested_json_is_1001_not_recursion_error(payload):
    err = _reject(payload)
    assert err.code is Code.PARAMETER_ILLEGAL


def test_deeply_nested_json_as_bytes_is_1001():
    assert _reject(b"[" * 100000).code == 1001


def test_protocol_error_message_defaults_to_code_message():
    err = ProtocolError(Code.UNAUTHORIZED)
    assert str(err) == "未授权"
    assert (err.code, err.seq, err.cmd) == (Code.UNAUTHORIZED, "", "")


# -- encode_reply ----------------------------------------------------------------------------

def test_encode_reply_exact_bytes():
    assert encode_reply("1", "login", Code.OK) == (
        b'{"seq":"1","cmd":"login","response":{"code":200,"codeMsg":"Success","data":null}}')


def test_encode_reply_data_and_error_code_exact_bytes():
    assert encode_reply("9", "ping", Code.OK, "pong") == (
        b'{"seq":"9","cmd":"ping","response":{"code":200,"codeMsg":"Success","data":"pong"}}')
    assert encode_reply("", "", Code.PARAMETER_ILLEGAL) == (
        '{"seq":"","cmd":"","response":{"code":1001,"codeMsg":"参数不合法","data":null}}'
        .encode("utf-8"))


def test_encode_reply_key_order():
    reply = json.loads(encode_reply("a", "b", Code.ROUTING_NOT_EXIST, {"z": 1, "a": 2}))
    assert list(reply) == ["seq", "cmd", "response"]
    assert list(reply["response"]) == ["code", "codeMsg", "data"]
    assert list(reply["response"]["data"]) == ["z", "a"]


@pytest.mark.parametrize("value,message", CODE_TABLE)
def test_encode_reply_every_code_message_as_utf8(value, message):
    raw = encode_reply("s", "c", Code(value))
    assert raw == ('{"seq":"s","cmd":"c","response":{"code":%d,"codeMsg":"%s","data":null}}'
                   % (value, message)).encode("utf-8")
    assert b"\\u" not in raw


def test_encode_reply_keeps_non_ascii_as_utf8():
    raw = encode_reply("序号", "login", Code.NOT_LOGGED_IN, {"名字": "张三"})
    assert raw == ('{"seq":"序号","cmd":"login","response":{"code":1000,"codeMsg":"未登录",'
                   '"data":{"名字":"张三"}}}').encode("utf-8")
    assert b"\\u" not in raw


def test_encode_reply_escapes_json_specials():
    raw = encode_reply('a"b\\c\n', "x", Code.OK)
    assert raw == (b'{"seq":"a\\"b\\\\c\\n","cmd":"x",'
                   b'"response":{"code":200,"codeMsg":"Success","data":null}}')
    assert json.loads(raw)["seq"] == 'a"b\\c\n'


def test_encode_reply_returns_bytes():
    assert isinstance(encode_reply("1", "x", Code.OK), bytes)


# Every string parse_request accepts must be echoable: the node answers every request frame
# (PROTOCOL.md: a bad frame gets a 1001 reply in the envelope). JSON's \u escapes can carry
# lone UTF-16 surrogates, which Python keeps in the str but cannot encode as UTF-8.
@pytest.mark.parametrize("payload", [
    '{"seq":"\\ud800","cmd":"ping"}',
    '{"seq":"1","cmd":"\\udfff"}',
    '{"seq":"\\ud83d","cmd":"\\ude00x"}',
    b'{"seq":"ok\\udc80","cmd":"login"}',
])
def test_every_parsed_request_can_be_answered(payload):
    try:
        req = parse_request(payload)
    except ProtocolError as exc:
        raw = encode_reply(exc.seq, exc.cmd, exc.code)
        expected_code = exc.code
    else:
        raw = encode_reply(req.seq, req.cmd, Code.OK)
        expected_code = Code.OK
    reply = json.loads(raw.decode("utf-8"))
    assert reply["response"]["code"] == expected_code


def test_surrogate_pair_escape_is_a_normal_character():
    req = parse_request('{"seq":"\\ud83d\\ude00","cmd":"ping"}')
    assert req.seq == "\U0001F600"
    assert encode_reply(req.seq, req.cmd, Code.OK) == (
        '{"seq":"\U0001F600","cmd":"ping","response":{"code":200,"codeMsg":"Success","data":null}}'
        .encode("utf-8"))


# -- encode_push ---------------------------------------------------------------------------

def test_encode_push_exact_bytes():
    assert encode_push("m-1", "msg", "hello", "alice") == (
        b'{"seq":"m-1","cmd":"msg","response":{"code":200,"codeMsg":"Ok",'
        b'"data":{"target":"","type":"text","msg":"hello","from":"alice"}}}')


def test_encode_push_enter_message_exact_bytes():
    assert ENTER_MESSAGE == "哈喽~"
    assert encode_push("1-2", "enter", ENTER_MESSAGE, "bob") == (
        '{"seq":"1-2","cmd":"enter","response":{"code":200,"codeMsg":"Ok",'
        '"data":{"target":"","type":"text","msg":"哈喽~","from":"bob"}}}').encode("utf-8")


def test_encode_push_exit_message_exact_bytes():
    assert EXIT_MESSAGE == "用户已经离开~"
    assert encode_push("3", "exit", EXIT_MESSAGE, "张三") == (
        '{"seq":"3","cmd":"exit","response":{"code":200,"codeMsg":"Ok",'
        '"data":{"target":"","type":"text","msg":"用户已经离开~","from":"张三"}}}').encode("utf-8")


def test_encode_push_type_and_target():
    raw = encode_push("s", "msg", "<b>x</b>", "a", msg_type="html", target="t1")
    assert raw == (b'{"seq":"s","cmd":"msg","response":{"code":200,"codeMsg":"Ok",'
                   b'"data":{"target":"t1","type":"html","msg":"<b>x</b>","from":"a"}}}')


def test_encode_push_key_order():
    push = json.loads(encode_push("s", "msg", "m", "f"))
    assert list(push) == ["seq", "cmd", "response"]
    assert list(push["response"]) == ["code", "codeMsg", "data"]
    assert list(push["response"]["data"]) == ["target", "type", "msg", "from"]


# -- fold_keys -----------------------------------------------------------------------------

def test_fold_keys_lowercases_keys_only():
    assert fold_keys({"userID": "Alice", "AppId": 101, "serviceToken": "T"}) == {
        "userid": "Alice", "appid": 101, "servicetoken": "T"}


@pytest.mark.parametrize("key", ["appId", "appID", "appid", "APPID", "AppID"])
def test_fold_keys_spellings_meet(key):
    assert fold_keys({key: 102}) == {"appid": 102}


def test_fold_keys_does_not_fold_nested_or_values():
    assert fold_keys({"Data": {"UserID": "X"}}) == {"data": {"UserID": "X"}}


def test_fold_keys_empty_and_non_string_keys():
    assert fold_keys({}) == {}
    assert fold_keys({1: "a", "B": 2}) == {1: "a", "b": 2}


def test_fold_keys_leaves_input_unchanged():
    data = {"UserID": "x"}
    fold_keys(data)
    assert data == {"UserID": "x"}
