"""The HTTP API under abuse, on real nodes (docs/SECURITY.md, "What a node promises under
abuse"): a msgID belongs to its sender, bodies are bounded (chunked ones too), JSON nested
without end is a 1001, user IDs hold no control characters and the logs write none, and a
stopping node refuses pushes so that callers send them elsewhere."""
import json
import logging
import logging.config
import re
import signal
import socket
import time
import urllib.parse

import pytest

from imserver.logsetup import logging_dict
from support import Clients, reply, unique_id, wait_until, without_place
from test_auth import API_KEY, NEW, log_text, mint, page_config

JSON_TYPE = "application/json; charset=utf-8"
MIB = 1 << 20


class RawHttp:
    """One HTTP/1.1 connection on a plain socket: for bodies sent in parts, chunked bodies,
    bytes urllib refuses to send, and seeing when the node closes."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> bool:
        """False when the node no longer takes what is sent (it closed)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        self.buf += chunk
        return chunk

    def response(self, timeout=10) -> "tuple[int, dict, bytes]":
        """(status, headers with lower-case names, body) of the next response."""
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                       (line.partition(":") for line in lines[1:]))
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def closed_within(self, timeout) -> bool:
        """True when the node ends the connection within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True
        return False

    def close(self):
        self.sock.close()


def head(method, path, headers) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def json_error(status, headers, body, code, http_status=200) -> dict:
    assert status == http_status, body[:300]
    assert headers["Content-Type" if "Content-Type" in headers else "content-type"] == JSON_TYPE
    answer = json.loads(body)
    assert answer["code"] == code and answer["data"] is None and answer["detail"], answer
    return answer


# -- 5. a msgID belongs to its sender ---------------------------------------------------------

def send(proc, path, headers, **form):
    status, _, body = proc.request("POST", path, body=urllib.parse.urlencode(form).encode(),
                                   headers={"Content-Type": "application/x-www-form-urlencoded",
                                            **headers})
    assert status == 200, body
    return json.loads(body)


def test_a_guest_cannot_squat_the_back_ends_msg_id(start_cluster_node, redis_server):
    proc = start_cluster_node({"auth": {"secret": NEW, "apiKey": API_KEY}})
    redis = redis_server.client()
    key = {"X-API-Key": API_KEY}
    member = unique_id("member")
    with Clients() as connect:
        client = connect(proc)
        assert client.login(member, 101, mint(member))["response"]["code"] == 200
        guest = page_config(proc)[0]  # what anyone who loads the chat page gets
        bearer = {"Authorization": "Bearer " + guest["token"]}
        answer = send(proc, "/user/sendMessageAll", bearer, appID=101, userID=guest["userID"],
                      msgID="order-1", message="squat")
        assert without_place(answer["data"]) == {"sendResults": True}
        assert client.push("msg")["response"]["data"]["msg"] == "squat"

        # the back end's send with the same msgID is its own, and delivered
        answer = send(proc, "/user/sendMessage", key, appID=101, userID=member,
                      msgID="order-1", message="your order shipped")
        assert answer["data"] == {"sendResults": True}, answer
        frame = client.push("msg")
        assert (frame["seq"], frame["response"]["data"]["msg"]) == ("order-1", "your order shipped")
        # ... in the original's key, shared with the original's nodes
        assert redis.get("acc:submit:again:seq:order-1") == "1"
        assert redis.get(f"acc:submit:again:seq:\x1f101\x1f{guest['userID']}\x1forder-1") == "1"

        # each sender's repeat is still a duplicate, and delivers nothing
        duplicate = {"sendResults": False, "duplicate": True}
        assert send(proc, "/user/sendMessage", key, appID=101, userID=member, msgID="order-1",
                    message="again")["data"] == duplicate
        assert send(proc, "/user/sendMessageAll", bearer, appID=101, userID=guest["userID"],
                    msgID="order-1", message="again")["data"] == duplicate
        assert client.flush() == []

        # nor can one guest suppress another's, or the back end a guest's
        other = page_config(proc)[0]
        answer = send(proc, "/user/sendMessageAll", {"Authorization": "Bearer " + other["token"]},
                      appID=101, userID=other["userID"], msgID="order-1", message="mine")
        assert without_place(answer["data"]) == {"sendResults": True}
        assert client.push("msg")["response"]["data"]["msg"] == "mine"
        assert without_place(send(proc, "/user/sendMessageAll", key, appID=101, userID="ops",
                                  msgID="order-2", message="ops")["data"]) == {"sendResults": True}
        assert without_place(send(proc, "/user/sendMessageAll", bearer, appID=101,
                                  userID=guest["userID"], msgID="order-2",
                                  message="guest")["data"]) == {"sendResults": True}
        assert [f["response"]["data"]["msg"] for f in client.flush()] == ["ops", "guest"]

        # no msgID can reach into a user's own ids
        answer = send(proc, "/user/sendMessage", key, appID=101, userID=member,
                      msgID=f"\x1f101\x1f{guest['userID']}\x1forder-3", message="x")
        assert answer["code"] == 1001 and "control characters" in answer["detail"]


# -- 6. bounded bodies ------------------------------------------------------------------------

def test_bodies_over_max_body_bytes_are_413_json(node):
    big_json = json.dumps({"appID": 101, "pad": "x" * (2 * MIB)}).encode()
    big_form = urllib.parse.urlencode({"appID": 101, "pad": "x" * (2 * MIB)}).encode()
    for path, body, ctype in (("/user/list", big_json, "application/json"),
                              ("/user/list", big_form, "application/x-www-form-urlencoded"),
                              ("/system/state", big_json, "application/json")):
        status, headers, raw = node.request("POST" if path != "/system/state" else "GET", path,
                                            body=body, headers={"Content-Type": ctype})
        answer = json_error(status, headers, raw, 1001, http_status=413)
        assert "app.maxBodyBytes (1048576 bytes)" in answer["detail"]
        assert headers["Access-Control-Allow-Origin"] == "*"


def test_a_declared_length_over_the_bound_is_refused_before_the_body(node):
    conn = RawHttp(node.http_port)
    try:
        conn.send(head("POST", "/user/list", {"Content-Type": "application/json",
                                               "Content-Length": 50 * MIB}))
        status, headers, body = conn.response(timeout=5)  # not one byte of the body sent
        json_error(status, headers, body, 1001, http_status=413)
        assert headers["connection"] == "close"
        assert conn.closed_within(5)
    finally:
        conn.close()


@pytest.mark.parametrize("ctype,first", [("application/json", b'{"appID":101,"pad":"'),
                                         ("application/x-www-form-urlencoded", b"appID=101&pad=")])
def test_a_chunked_body_over_the_bound_is_413_and_the_rest_is_not_read(node, ctype, first):
    conn = RawHttp(node.http_port)
    try:
        conn.send(head("POST", "/user/list", {"Content-Type": ctype,
                                               "Transfer-Encoding": "chunked"}) + chunk(first))
        sent, piece = 0, b"x" * 65536
        while sent < 3 * MIB and conn.send(chunk(piece)):  # no last chunk: it never ends
            sent += len(piece)
        status, headers, body = conn.response(timeout=5)
        answer = json_error(status, headers, body, 1001, http_status=413)
        assert "app.maxBodyBytes" in answer["detail"]
        assert conn.closed_within(5), "the node kept reading a body it refused"
    finally:
        conn.close()


def test_bodies_up_to_the_bound_are_read_chunked_or_not(make_node):
    proc = make_node({"app": {"maxBodyBytes": 4096}})
    user = unique_id()
    with Clients() as connect:
        assert connect(proc).login(user, 102)["response"]["code"] == 200
        for size, expected in ((4000, 200), (5000, 413)):
            form = urllib.parse.urlencode({"appID": 102, "pad": "x" * size})[:size].encode()
            status, _, body = proc.request("POST", "/user/list", body=form, headers={
                "Content-Type": "application/x-www-form-urlencoded"})
            assert status == expected, body
            conn = RawHttp(proc.http_port)
            try:
                conn.send(head("POST", "/user/list", {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Transfer-Encoding": "chunked"}) + chunk(form[:1000]) + chunk(form[1000:])
                    + b"0\r\n\r\n")
                status, _, body = conn.response()
                assert status == expected, body
                if expected == 200:  # the chunked form reached the route whole
                    assert json.loads(body)["data"]["userList"] == [user]
            finally:
                conn.close()


def peak_rss_kib(pid) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmHWM:\s+(\d+) kB", fh.read()).group(1))


def test_big_chunked_bodies_do_not_grow_the_worker(make_node):
    proc = make_node()
    worker = proc.worker_pids()[0]
    proc.get("/user/list", appID=101)
    before = peak_rss_kib(worker)
    statuses = []
    for _ in range(4):
        conn = RawHttp(proc.http_port)
        try:
            conn.send(head("POST", "/user/list", {"Content-Type": "application/json",
                                                   "Transfer-Encoding": "chunked"}))
            conn.send(chunk(b'{"appID":101,"pad":"'))
            piece = chunk(b"x" * (1 << 18))
            for _ in range(80):  # 20 MiB
                if not conn.send(piece):
                    break
            conn.send(chunk(b'"}') + b"0\r\n\r\n")
            statuses.append(conn.response()[0])
        finally:
            conn.close()
    grown = (peak_rss_kib(worker) - before) // 1024
    assert grown < 10, f"the worker's peak memory grew by {grown} MiB"
    assert statuses == [413] * 4


# -- 8. JSON nested without end ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/user/list", "/user/online", "/user/sendMessage",
                                  "/user/sendMessageAll"])
@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"appID":' * 100_000 + b"1" + b"}" * 100_000],
                         ids=["arrays", "objects"])
def test_json_nested_100000_levels_is_1001(node, path, body):
    status, headers, raw = node.request("POST", path, body=body,
                                        headers={"Content-Type": "application/json"})
    answer = json_error(status, headers, raw, 1001)
    assert "nested" in answer["detail"]


# -- 7. control characters --------------------------------------------------------------------

CONTROL_IDS = ["a\nb", "x\r\n2024-01-01 00:00:00 CRITICAL forged", "\x1b[31mred", "tab\there",
               "nul\x00", "del\x7f", "c1\x85", "line\u2028sep", "para\u2029sep"]


@pytest.mark.parametrize("user_id", CONTROL_IDS)
def test_a_user_id_with_control_characters_is_1002(node, user_id):
    with Clients() as connect:
        client = connect(node)
        assert client.request("login", {"appID": 101, "userID": user_id}, seq="c") == reply(
            "c", "login", 1002)
        assert client.login(unique_id("名字-é"))["response"]["code"] == 200  # still open
    for method, path, form in (
            ("GET", "/user/online", {"appID": 101, "userID": user_id}),
            ("POST", "/user/sendMessage", {"appID": 101, "userID": user_id, "message": "m"}),
            ("POST", "/user/sendMessageAll", {"appID": 101, "userID": user_id, "message": "m"})):
        status, headers, raw = node.request(
            method, path, params=form if method == "GET" else None,
            body=urllib.parse.urlencode(form).encode() if method == "POST" else None,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert "control characters" in json_error(status, headers, raw, 1002)["detail"]


def test_a_msg_id_with_control_characters_is_1001(node):
    answer = node.post("/user/sendMessageAll", appID=101, userID="ops", msgID="m\n1", message="x")
    assert answer["code"] == 1001 and "msgID" in answer["detail"]


LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] [A-Z]+ ")


def assert_one_line_per_record(text):
    for line in text.splitlines():
        assert LINE_START.match(line) or line.startswith("    "), repr(line)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", text)


def test_the_access_log_writes_control_characters_escaped(make_node):
    proc = make_node()
    conn = RawHttp(proc.http_port)
    try:
        conn.send(b"GET /system/state?x=\x1b[2J HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"User-Agent: agent\x1b[31m\x85end\r\n\r\n")
        assert conn.response()[0] == 200
    finally:
        conn.close()
    text = wait_until(lambda: "/system/state?x=" in log_text(proc) and log_text(proc),
                      what="the access log line")
    assert_one_line_per_record(text)
    line = next(line for line in text.splitlines() if "/system/state?x=" in line)
    assert "/system/state?x=\\x1b[2J" in line and '"agent\\x1b[31m\\x85end"' in line, line


def test_log_records_are_one_line_each(tmp_path):
    """The formatter the node's logging config installs (imserver/logsetup.py), writing to a
    real file: a message cannot start a line of its own; a traceback keeps its lines,
    indented under its record."""
    path = tmp_path / "app.log"
    logging.config.dictConfig(logging_dict({"app.logLevel": "info", "app.logFile": str(path),
                                            "app.accessLog": True}))
    try:
        log = logging.getLogger("imserver.test")
        log.warning("user %s", "a\n2024-01-01 00:00:00,000 [1] CRITICAL imserver: forged\x1b[2J")
        try:
            raise ValueError("bad\nCRITICAL forged")
        except ValueError:
            log.exception("failed for %r", "x")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    text = path.read_text(encoding="utf-8")
    assert_one_line_per_record(text)
    assert "user a\\n2024-01-01 00:00:00,000 [1] CRITICAL imserver: forged\\x1b[2J" in text
    assert "\n    ValueError: bad\n    CRITICAL forged" in text


# -- a stopping node refuses pushes ------------------------------------------------------------

def test_a_stopping_node_refuses_pushes_with_503_and_1102(make_node):
    proc = make_node({"app": {"drainWindow": 30}})  # drains for 30 s: stopping all along
    user = unique_id()
    with Clients() as connect:
        client = connect(proc)
        assert client.login(user, 101)["response"]["code"] == 200
        assert proc.post("/user/sendMessage", appID=101, userID=user, message="before")[
            "data"] == {"sendResults": True}
        # Two pushes under way when the stop comes: their bodies are still arriving.
        pushes = []
        for path, form in (("/user/sendMessage", {"appID": 101, "userID": user}),
                           ("/user/sendMessageAll", {"appID": 101, "userID": "ops"})):
            body = urllib.parse.urlencode({**form, "msgID": unique_id("m"),
                                           "message": "during"}).encode()
            conn = RawHttp(proc.http_port, timeout=15)
            conn.send(head("POST", path, {"Content-Type": "application/x-www-form-urlencoded",
                                          "Content-Length": len(body)}) + body[:5])
            pushes.append((conn, body))
        try:
            proc.proc.send_signal(signal.SIGTERM)
            assert client.wait_closed(10)[0] == 1001  # the node is stopping
            for conn, body in pushes:
                conn.send(body[5:])
                status, headers, raw = conn.response()
                answer = json_error(status, headers, raw, 1102, http_status=503)
                assert answer["msg"] == "节点正在关闭" and "another node" in answer["detail"]
                assert headers["connection"] == "close"
        finally:
            for conn, _ in pushes:
                conn.close()
            proc.stop(signal.SIGQUIT)  # not the 30 s drain
