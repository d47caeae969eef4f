"""deploy/nginx.conf in front of two cluster nodes: the production file, run by a real nginx
with only its ports and paths rewritten (tests/nginx_support.py). WebSocket clients and the
chat page in Chromium reach both nodes through one address and talk across them; the
operators' routes answer only the machine itself."""
import http.client
import json
import re

import pytest

from imserver.config import SCHEMA
from nginx_support import DEPLOY_CONF, NginxProcess, nginx_binary
from support import Clients, unique_id, without_place
from test_chat_page import assert_ok, run_scenario
from test_cluster import online_record, wait_push




@pytest.fixture
def start_nginx(tmp_path):
    """``start_nginx(nodes)``: nginx with deploy/nginx.conf in front of ``nodes``, on a
    free port; stopped after the test. With ``start=False`` it is made but not started
    (its port is known: a node's config may need it), for ``nginx.start()`` later."""
    try:
        nginx_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    started = []

    def make(nodes=(), start=True):
        proc = NginxProcess(tmp_path, nodes)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


def location_block(conf, path):
    match = re.search(r"location\s+(?:=\s*)?" + re.escape(path) + r"\s*\{(.*?)\n\s*\}", conf, re.S)
    assert match, f"no location {path} in deploy/nginx.conf"
    return match.group(1)


def test_deploy_conf_proxies_websockets_for_longer_than_the_heartbeat_timeout():
    with open(DEPLOY_CONF, encoding="utf-8") as fh:
        conf = fh.read()
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{", conf)
    assert re.search(r"(?m)^\s*listen\s+80\s*;", conf)
    assert "ip_hash" not in re.sub(r"#[^\n]*", "", conf)
    for name, ports in (("imserver_http", ("8080", "18080")), ("imserver_ws", ("8089", "18089"))):
        block = re.search(r"upstream\s+" + name + r"\s*\{(.*?)\}", conf, re.S).group(1)
        assert re.findall(r"server\s+127\.0\.0\.1:(\d+)", block) == list(ports)

    acc = location_block(conf, "/acc")
    assert "proxy_pass http://imserver_ws;" in acc
    assert "proxy_http_version 1.1;" in acc
    assert "proxy_set_header Upgrade $http_upgrade;" in acc
    assert "proxy_set_header Connection $connection_upgrade;" in acc
    heartbeat_timeout = SCHEMA["app.heartbeatTimeout"][0]
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = int(re.search(directive + r"\s+(\d+)s;", acc).group(1))
        assert seconds > heartbeat_timeout, f"{directive} {seconds}s"
    rest = location_block(conf, "/")
    assert "proxy_pass http://imserver_http;" in rest
    for block in (acc, rest):
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in block
        assert "proxy_set_header X-Real-IP $remote_addr;" in block


def test_websocket_clients_reach_both_nodes_and_chat_through_nginx(
        start_cluster_node, redis_server, start_nginx):
    one = start_cluster_node(name="one")
    two = start_cluster_node(name="two")
    nginx = start_nginx([one, two])
    redis = redis_server.client()
    app = 101

    with Clients() as connect:
        clients, users, ports = [], [], set()
        for _ in range(4):  # consecutive connections, all kept open
            client = connect(nginx, timeout=5)
            user = unique_id("n")
            assert client.login(user, app)["response"]["code"] == 200
            clients.append(client)
            users.append(user)
            ports.add(int(online_record(redis, app, user)["accPort"]))
        assert ports == {one.rpc_port, two.rpc_port}, "every connection went to one node"
        first = clients[0]
        port_of = {u: int(online_record(redis, app, u)["accPort"]) for u in users}
        # a user on the other node than the first one's
        other = next(i for i, u in enumerate(users) if port_of[u] != port_of[users[0]])

        # presence across the nodes, through nginx
        wait_push(first, "enter", users[other])

        # the HTTP API through nginx: the room message reaches the other node's user
        answer = nginx.post("/user/sendMessageAll", appID=app, userID=users[0],
                            msgID=unique_id("m"), message="via nginx")
        assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
        frame = wait_push(clients[other], "msg", users[0])
        assert frame["response"]["data"]["msg"] == "via nginx"
        msg_id = unique_id("m")
        answer = nginx.post("/user/sendMessage", appID=app, userID=users[0], msgID=msg_id,
                            message="to you", **{"from": users[other]})
        assert answer["code"] == 200 and answer["data"]["sendResults"] is True, answer
        assert wait_push(first, "msg", users[other])["seq"] == msg_id
        for _ in range(2):  # either node answers for the whole cluster
            answer = nginx.get("/user/list", appID=app)
            assert sorted(answer["data"]["userList"]) == sorted(users), answer

        # a plain GET on /acc passes through to the node's 400
        status, _, _ = nginx.request("GET", "/acc")
        assert status == 400

        clients[other].close()
        wait_push(first, "exit", users[other])


def test_chat_page_through_nginx_with_its_two_pages_on_different_nodes(
        start_cluster_node, redis_server, start_nginx, tmp_path):
    # the page opens its WebSocket on app.webSocketUrl: nginx's address, not a node's port
    nginx = start_nginx(start=False)
    page_config = {"app": {"webSocketUrl": f"127.0.0.1:{nginx.port}", "httpUrl": ""}}
    nodes = [start_cluster_node(page_config, name=name) for name in ("one", "two")]
    nginx.nodes = nodes
    nginx.start()

    report = run_scenario("chat", nginx, tmp_path / "shots")
    assert_ok(report)
    facts = report["facts"]
    name_a, name_b = facts["name_a"], facts["name_b"]
    assert sorted(facts["a_online_after_join"]) == sorted([name_a, name_b])
    assert facts["line_delivered"] and facts["enter_key_sends"]
    assert facts["a_online_after_leave"] == [name_a]

    # the records (kept after logout) say on which node each page was
    redis = redis_server.client()
    ports = {name: int(online_record(redis, 101, name)["accPort"]) for name in (name_a, name_b)}
    assert set(ports.values()) == {n.rpc_port for n in nodes}, ports


# -- operators' routes and pushes ---------------------------------------------------------------

def test_deploy_conf_keeps_state_and_metrics_to_this_machine_and_resends_refused_pushes():
    with open(DEPLOY_CONF, encoding="utf-8") as fh:
        conf = re.sub(r"#[^\n]*", "", fh.read())
    for path in ("/system/", "/metrics"):
        block = re.search(r"location\s+\^~\s+" + re.escape(path) + r"\s*\{(.*?)\}", conf, re.S)
        assert block, f"no location ^~ {path}"
        lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
        assert lines[:3] == ["allow 127.0.0.1;", "allow ::1;", "deny all;"], lines
        assert "proxy_pass http://imserver_http;" in lines
    push = re.search(r"location\s+~\s+\^/user/sendMessage\(All\)\?\$\s*\{(.*?)\}", conf, re.S)
    assert push, "no location for the pushes"
    directive = re.search(r"proxy_next_upstream\s+([^;]+);", push.group(1)).group(1).split()
    assert {"error", "timeout", "http_503", "non_idempotent"} <= set(directive), directive


def request_from(nginx, source, method, path, body=None):
    """(status, body) of one request to nginx from the loopback address ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10,
                                      source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_state_and_metrics_answer_only_this_machine_through_nginx(make_node, start_nginx):
    nginx = start_nginx([make_node()])
    operators = ["/system/state", "/system/state?isDebug=true", "/metrics"]
    for path in operators:
        status, body = request_from(nginx, "127.0.0.1", "GET", path)
        assert status == 200, (path, body[:200])
    assert json.loads(request_from(nginx, "127.0.0.1", "GET", operators[1])[1])["data"][
        "connectionList"] == []
    # another address, however it spells the path: nginx's 403, nothing from the node
    spellings = ["//system/state?isDebug=true", "/system/%73tate?isDebug=true",
                 "/system/./state?isDebug=true", "/system/x/../state", "/metrics/", "//metrics"]
    for path in operators + spellings:
        status, body = request_from(nginx, "127.0.0.2", "GET", path)
        assert status == 403, (path, status, body[:200])
    # the rest stays open to everyone
    status, body = request_from(nginx, "127.0.0.2", "GET", "/user/list?appID=101")
    assert status == 200 and json.loads(body)["code"] == 200
    status, body = request_from(nginx, "127.0.0.2", "POST", "/user/sendMessageAll",
                                b"appID=101&userID=ops&msgID=" + unique_id("m").encode()
                                + b"&message=hi")
    assert status == 200 and without_place(json.loads(body)["data"]) == {"sendResults": True}, body

