"""Authentication (docs/SECURITY.md), on real nodes: login tokens (auth.secret, rotation),
the open demo mode's warning, the chat page's server-minted name and token, the push API's
key (auth.apiKey, auth.protectLists, Bearer tokens), the gRPC secret between nodes
(auth.rpcSecret) and the WebSocket Origin allow-list (auth.origins)."""
import json
import re
import secrets
import time

import jwt
import pytest
import websocket

import test_chat_page as chat_page
from imserver.config import ConfigError, load_config
from support import Clients, NodeProcess, grpc_api, unique_id, wait_until, without_place

NEW = secrets.token_urlsafe(32)  # auth.secret: [NEW, OLD], NEW signs the page's tokens
OLD = secrets.token_urlsafe(32)
UNKNOWN = secrets.token_urlsafe(32)
API_KEY = "key-" + secrets.token_urlsafe(24)
API_KEY_OLD = "key-" + secrets.token_urlsafe(24)
RPC_SECRET = "rpc-" + secrets.token_urlsafe(24)
OPEN_WARNING = "auth.secret is not set: logins are not authenticated (open demo mode)"
UNAUTHORIZED = {"code": 1003, "msg": "未授权", "data": None}

minted = []  # every token a test made, none of which may reach a log


def mint(user_id, app_id=101, key=NEW, ttl=3600, **claims):
    body = {"userID": user_id, "appID": app_id, "exp": int(time.time()) + ttl}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    token = jwt.encode(body, key, algorithm="HS256")
    minted.append(token)
    return token


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """Logins need a token (secret rotation [NEW, OLD]); pushes need a key (two, rotation)."""
    proc = NodeProcess(tmp_path_factory.mktemp("secure"), name="secure", config={
        "auth": {"secret": [NEW, OLD], "apiKey": [API_KEY, API_KEY_OLD]}}).start()
    yield proc
    proc.stop()


def log_text(proc) -> str:
    with open(proc.config["app"]["logFile"], encoding="utf-8") as fh:
        return fh.read()


def page_config(proc, app_id=101) -> "tuple[dict, dict]":
    status, headers, body = proc.request("GET", "/home/index", params={"appID": app_id})
    assert status == 200
    found = re.search(rb'<script id="config" type="application/json">(.*?)</script>', body, re.S)
    return json.loads(found.group(1)), headers


def send_all(proc, headers=None, **form):
    """POST /user/sendMessageAll with ``headers``: (HTTP status, headers, JSON body)."""
    import urllib.parse
    status, got, body = proc.request(
        "POST", "/user/sendMessageAll", body=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    return status, got, json.loads(body)


def call(proc, method, path, headers=None, **form):
    import urllib.parse
    body = urllib.parse.urlencode(form).encode() if method == "POST" else None
    status, got, data = proc.request(
        method, path, params=form if method == "GET" else None, body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    return status, got, json.loads(data)


def assert_401(status, headers, body, detail_part=""):
    assert status == 401, body
    assert {k: body[k] for k in ("code", "msg", "data")} == UNAUTHORIZED
    assert detail_part in body["detail"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"] == "application/json; charset=utf-8"


# -- login tokens ------------------------------------------------------------------------------

def test_valid_token_logs_in(secure):
    user = unique_id()
    with Clients() as connect:
        assert connect(secure).login(user, 102, mint(user, 102))["response"]["code"] == 200
        assert secure.get("/user/online", userID=user, appID=102)["data"]["online"] is True


BAD_TOKENS = {
    "wrong secret": lambda u: mint(u, key=UNKNOWN),
    "expired": lambda u: mint(u, ttl=-3600),
    "missing": lambda u: None,
    "empty": lambda u: "",
    "not a string": lambda u: 12345,
    "malformed": lambda u: "not-a-jwt",
    "three bad parts": lambda u: "abc.def.ghi",
    "cut short": lambda u: mint(u)[:-5],
    "another userID": lambda u: mint(u + "-x"),
    "another appID": lambda u: mint(u, app_id=102),
    "no exp": lambda u: mint(u, exp=None),
    "no userID claim": lambda u: mint(None),
    "alg none": lambda u: jwt.encode({"userID": u, "appID": 101, "exp": int(time.time()) + 60},
                                     None, algorithm="none"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_token_is_1003_and_the_connection_stays(secure, case):
    user = unique_id()
    token = BAD_TOKENS[case](user)
    data = {"appID": 101, "userID": user}
    if token is not None:
        data["serviceToken"] = token
    with Clients() as connect:
        client = connect(secure)
        assert client.request("login", data)["response"]["code"] == 1003
        assert client.request("ping")["response"]["data"] == "pong"
        assert secure.get("/user/online", userID=user, appID=101)["data"]["online"] is False
        # the same connection may still log in with a good token
        assert client.login(user, 101, mint(user))["response"]["code"] == 200


def test_check_order_userid_and_appid_come_before_the_token(secure):
    with Clients() as connect:
        client = connect(secure)
        assert client.login("", 101, "")["response"]["code"] == 1002
        assert client.login(unique_id(), 999, "")["response"]["code"] == 1003
        user = unique_id()
        assert client.login(user, 101, mint(user))["response"]["code"] == 200
        # already logged in: 1009, whatever the token
        other = unique_id()
        assert client.login(other, 101, mint(other))["response"]["code"] == 1009


def test_token_appid_claim_may_be_a_digit_string(secure):
    user = unique_id()
    with Clients() as connect:
        assert connect(secure).login(user, 101, mint(user, "101"))["response"]["code"] == 200


def test_rotation_old_secret_still_accepted(secure):
    user = unique_id()
    with Clients() as connect:
        assert connect(secure).login(user, 101, mint(user, key=OLD))["response"]["code"] == 200
        assert connect(secure).login(user + "-u", 101,
                                     mint(user + "-u", key=UNKNOWN))["response"]["code"] == 1003


def test_open_mode_says_so_and_ignores_tokens(node, secure):
    user = unique_id()
    with Clients() as connect:
        assert connect(node).login(user, 101, "garbage")["response"]["code"] == 200
    assert OPEN_WARNING in log_text(node)
    assert "auth.secret is not set" not in log_text(secure)


def test_auth_config_errors_never_show_the_secret(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text("auth:\n  secret: short-secret-value\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    message = str(info.value)
    assert "auth.secret must be at least 32 bytes" in message and "token_urlsafe" in message
    assert "short-secret-value" not in message
    with pytest.raises(ConfigError, match="auth.origins must list origins"):
        load_config(str(path), env={}, overrides={"auth.secret": NEW,
                                                  "auth.origins": ["https://a.example/path"]})


# -- the chat page -----------------------------------------------------------------------------

def test_page_gets_a_server_chosen_name_and_its_token(secure):
    cfg, headers = page_config(secure, 102)
    assert headers["Cache-Control"] == "no-store"
    name, token = cfg["userID"], cfg["token"]
    assert 0 < len(name) <= 20
    claims = jwt.decode(token, NEW, algorithms=["HS256"])
    assert claims["userID"] == name and claims["appID"] == 102
    assert 86400 - 60 < claims["exp"] - time.time() <= 86400
    with Clients() as connect:
        assert connect(secure).login(name, 102, token)["response"]["code"] == 200
    # a reload is a new name
    names = {page_config(secure, 102)[0]["userID"] for _ in range(4)}
    assert len(names | {name}) > 1


def test_open_page_has_a_name_and_no_token(node):
    cfg, _ = page_config(node)
    assert cfg["userID"] and cfg["token"] == ""


def test_two_users_chat_on_a_secured_node(secure, tmp_path):
    """The browser scenario of test_chat_page.py, with tokens and an API key required."""
    chat_page.test_two_users_chat(secure, tmp_path)
    # the page has no API key: it sends over its login, made with its token (publish), and
    # never through the push API
    posts = [line for line in log_text(secure).splitlines()
             if '"POST /user/sendMessageAll ' in line and "Chrome" in line]
    assert posts == [], posts


# -- the push API key --------------------------------------------------------------------------

def test_send_message_needs_the_key(secure):
    user = unique_id()
    with Clients() as connect:
        client = connect(secure)
        assert client.login(user, 101, mint(user))["response"]["code"] == 200
        form = {"appID": 101, "userID": user, "message": "hi"}
        assert_401(*call(secure, "POST", "/user/sendMessage", **form), "X-API-Key header")
        assert_401(*call(secure, "POST", "/user/sendMessage", {"X-API-Key": "nope"}, **form),
                   "does not hold a key")
        # Bearer tokens are for the page's own sends to its room only
        assert_401(*call(secure, "POST", "/user/sendMessage",
                         {"Authorization": "Bearer " + mint(user)}, **form))
        assert client.no_push(0.2)
        for key in (API_KEY, API_KEY_OLD):  # both keys of the rotation
            status, _, body = call(secure, "POST", "/user/sendMessage", {"X-API-Key": key}, **form)
            assert status == 200 and without_place(body["data"]) == {"sendResults": True}
            assert client.push("msg")["response"]["data"]["msg"] == "hi"


def test_send_message_all_needs_the_key_or_the_senders_token(secure):
    sender, member = unique_id("s"), unique_id("m")
    with Clients() as connect:
        client = connect(secure)
        assert client.login(member, 103, mint(member, 103))["response"]["code"] == 200
        form = {"appID": 103, "userID": sender, "message": "to all"}
        assert_401(*send_all(secure, **form), "X-API-Key header")
        assert_401(*send_all(secure, {"X-API-Key": API_KEY + "x"}, **form))
        refused = {"another user": mint(member, 103), "another appID": mint(sender, 101),
                   "expired": mint(sender, 103, ttl=-3600), "unknown key": mint(sender, 103, UNKNOWN),
                   "garbage": "garbage"}
        for why, token in refused.items():
            status, headers, body = send_all(secure, {"Authorization": "Bearer " + token}, **form)
            assert_401(status, headers, body, "Authorization token is refused")
        assert client.no_push(0.2)

        status, _, body = send_all(secure, {"X-API-Key": API_KEY}, **form)
        assert status == 200 and without_place(body["data"]) == {"sendResults": True}
        assert client.push("msg")["response"]["data"]["from"] == sender
        status, _, body = send_all(secure, {"Authorization": "Bearer " + mint(sender, 103)}, **form)
        assert status == 200 and body["code"] == 200
        assert client.push("msg")["response"]["data"]["msg"] == "to all"


def test_lists_are_open_without_protect_lists(secure):
    assert secure.get("/user/list", appID=101)["code"] == 200
    assert secure.get("/user/online", appID=101, userID="x")["code"] == 200


def test_protect_lists(make_node):
    proc = make_node({"auth": {"secret": NEW, "apiKey": API_KEY, "protectLists": True}})
    for path, form in (("/user/list", {"appID": 101}), ("/user/online", {"userID": "x"})):
        assert_401(*call(proc, "GET", path, **form))
        status, _, body = call(proc, "GET", path, {"X-API-Key": API_KEY}, **form)
        assert status == 200 and body["code"] == 200
    # the chat page reads its room's list with its token
    status, _, body = call(proc, "GET", "/user/list", {"Authorization": "Bearer " + mint("me")},
                           appID=101)
    assert status == 200 and body["code"] == 200
    assert_401(*call(proc, "GET", "/user/list", {"Authorization": "Bearer " + mint("me", 102)},
                     appID=101))


def test_preflight_allows_the_auth_headers(secure):
    for asked in ("x-api-key, authorization", None):
        headers = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
        if asked:
            headers["Access-Control-Request-Headers"] = asked
        status, got, body = secure.request("OPTIONS", "/user/sendMessageAll", headers=headers)
        assert status == 204 and body == b""
        allowed = {h.strip().lower() for h in got["Access-Control-Allow-Headers"].split(",")}
        assert {"x-api-key", "authorization"} <= allowed
        assert got["Access-Control-Allow-Origin"] == "*"


def test_open_api_without_a_key(node):
    status, _, body = call(node, "POST", "/user/sendMessageAll", appID=101, userID="ops",
                           message="open")
    assert status == 200 and body["code"] == 200


# -- node to node --------------------------------------------------------------------------------

def grpc_call(port, metadata=()):
    """GetUserList on the node at ``port`` with ``metadata``: the reply, or the grpc error."""
    grpc, pb, pb_grpc = grpc_api()

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        return pb_grpc.AccServerStub(channel).GetUserList(pb.GetUserListReq(appID=101),
                                                          timeout=5, metadata=metadata)
    except grpc.RpcError as exc:
        return exc
    finally:
        channel.close()


def test_rpc_secret(start_cluster_node):
    """start_cluster_node: make_cluster_node with an rpc port outside the ephemeral range."""
    grpc, _, _ = grpc_api()
    secured = {"auth": {"rpcSecret": RPC_SECRET}}
    a, b = start_cluster_node(secured, name="a"), start_cluster_node(secured, name="b")
    user = unique_id()
    with Clients() as connect:
        client = connect(b)
        assert client.login(user, 101)["response"]["code"] == 200
        wait_until(lambda: user in a.get("/user/list", appID=101)["data"]["userList"],
                   what="a lists b's user over gRPC")
        assert without_place(a.post("/user/sendMessage", appID=101, userID=user,
                                    message="relayed")["data"]) == {"sendResults": True}
        assert client.push("msg")["response"]["data"]["msg"] == "relayed"

        # a plain client without the secret, or with a wrong one, is refused
        for metadata in ((), (("x-imserver-secret", RPC_SECRET + "x"),)):
            refused = grpc_call(b.rpc_port, metadata)
            assert isinstance(refused, grpc.RpcError)
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = grpc_call(b.rpc_port, (("x-imserver-secret", RPC_SECRET),))
        assert list(answer.userID) == [user]
        assert "refused gRPC call /protobuf.AccServer/GetUserList" in log_text(b)

        # a node with another secret cannot deliver to b: the message waits in the inbox,
        # and the answer says why it did not go further
        c = start_cluster_node({"auth": {"rpcSecret": "other-" + RPC_SECRET}}, name="c")
        answer = c.post("/user/sendMessage", appID=101, userID=user, message="intruder")
        assert answer["code"] == 200 and answer["data"]["sendResults"] is False, answer
        assert answer["data"]["unreachableNodes"] == [f"127.0.0.1:{b.rpc_port}"]
        reason = answer["data"]["sendResultsErr"]
        assert "UNAUTHENTICATED" in reason and "auth.rpcSecret" in reason
        assert client.no_push(0.5)
    for proc in (a, b, c):
        assert RPC_SECRET not in log_text(proc)


def test_refused_grpc_calls_do_not_flood_the_log(start_cluster_node):
    """2,000 refused calls (a scan, a misconfigured peer) write a line now and then, not one each."""
    grpc, pb, pb_grpc = grpc_api()

    node = start_cluster_node({"auth": {"rpcSecret": RPC_SECRET}})
    with grpc.insecure_channel(f"127.0.0.1:{node.rpc_port}") as channel:
        stub = pb_grpc.AccServerStub(channel)
        for _ in range(2000):
            try:
                stub.GetUserList(pb.GetUserListReq(appID=101), timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                raise AssertionError("a call without the secret was served")
    lines = [line for line in log_text(node).splitlines() if "refused gRPC call" in line]
    assert 1 <= len(lines) <= 3, lines
    assert "more like it" in lines[-1] or len(lines) == 1


# -- WebSocket origins ---------------------------------------------------------------------------

def test_origin_allow_list(make_node):
    proc = make_node({"auth": {"origins": ["http://good.example"]}})
    ws = websocket.create_connection(proc.ws_url, timeout=5, origin="http://good.example")
    ws.close()
    for kw in ({"origin": "http://evil.example"}, {"suppress_origin": True}):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(proc.ws_url, timeout=5, **kw)
        assert info.value.status_code == 403
    assert "origin 'http://evil.example' is not in auth.origins" in log_text(proc)


# -- nothing secret in the log (last: it reads what the tests above did) -------------------------

def test_log_holds_no_secret_and_no_token(secure):
    user = unique_id()
    with Clients() as connect:
        client = connect(secure)
        assert client.login(user, 101, mint(user, ttl=-3600))["response"]["code"] == 1003
        assert client.login(user, 101, mint(user, key=UNKNOWN))["response"]["code"] == 1003
        assert client.login(user, 101, mint(user))["response"]["code"] == 200
    send_all(secure, {"Authorization": "Bearer " + mint(user)}, appID=101, userID=user, message="x")
    send_all(secure, {"X-API-Key": API_KEY}, appID=101, userID=user, message="x")
    cfg, _ = page_config(secure)
    text = log_text(secure)
    assert "token expired" in text and "token signature does not match auth.secret" in text
    for secret in (NEW, OLD, API_KEY, API_KEY_OLD):
        assert secret not in text
    for token in minted + [cfg["token"]]:
        if isinstance(token, str) and token.count(".") == 2:
            assert token not in text and token.rsplit(".", 1)[1] not in text


def test_check_masks_every_secret(tmp_path):
    import subprocess
    import sys

    from support import ROOT
    secret, key, rpc = "s" * 40, "k" * 20, "r" * 20
    env = {"PATH": "/usr/bin:/bin", "IMSERVER_AUTH_SECRET": secret, "IMSERVER_AUTH_APIKEY": key,
           "IMSERVER_AUTH_RPCSECRET": rpc, "IMSERVER_REDIS_PASSWORD": "pw-123456",
           "IMSERVER_CONFIG": str(tmp_path / "none.yaml")}
    (tmp_path / "none.yaml").write_text("")
    out = subprocess.run([sys.executable, "-m", "imserver", "--check"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for value in (secret, key, rpc, "pw-123456"):
        assert value not in out.stdout
    assert "auth.secret: '***'" in out.stdout
