"""What a socket meets before it is a WebSocket, on a real node: one gate for every upgrade
(only /acc, exactly), a deadline on request heads, a bound on sockets that send nothing,
kept-alive connections that end, and requests whose length could be read two ways refused.
The floods are bounded in count and time and stay on loopback."""
import socket
import time

import pytest
import websocket

from support import unique_id

UPGRADE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n{extra}\r\n")


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new socket and read the answer until the server closes (or
    ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b" 101 " in chunks[0][:20]:
                break
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


# -- one gate for every upgrade --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["//acc", "///acc", "/ACC", "/acc/", "/x/../acc", "/acc;x",
                                  "/user/list", "/"])
def test_only_acc_upgrades(node, path):
    answer = raw_exchange(node.ws_port, UPGRADE.format(path=path, extra="").encode())
    assert status_of(answer) == 404, answer[:200]
    assert b"Upgrade: websocket" not in answer


def test_acc_still_upgrades(node):
    answer = raw_exchange(node.ws_port, UPGRADE.format(path="/acc", extra="").encode(), timeout=2)
    assert status_of(answer) == 101


def test_a_doubled_slash_does_not_pass_the_limits_or_the_origin_check(make_node):
    guarded = make_node({"app": {"maxConnections": 2}, "auth": {"origins": ["https://ok.example"]}})
    held = [websocket.create_connection(guarded.ws_url, timeout=5,
                                        origin="https://ok.example") for _ in range(2)]
    try:
        for path in ("//acc", "///acc"):
            for extra in ("", "Origin: https://evil.example\r\n"):
                answer = raw_exchange(guarded.ws_port,
                                      UPGRADE.format(path=path, extra=extra).encode())
                assert status_of(answer) == 404, (path, extra, answer[:200])
        answer = raw_exchange(guarded.ws_port, UPGRADE.format(
            path="/acc", extra="Origin: https://ok.example\r\n").encode())
        assert status_of(answer) == 503  # the limit holds for the real path
        assert guarded.state()["connections"] == 2
    finally:
        for ws in held:
            ws.close()


# -- heads that never come -------------------------------------------------------------------------

def open_idle_sockets(port: int, count: int, partial: bool) -> "list[socket.socket]":
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if partial and i % 2:
            sock.sendall(b"GET /acc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True  # reset


def test_a_flood_of_silent_sockets_does_not_lock_logins_out(make_node):
    # The defaults (workerConnections 1000, maxPendingSockets 400) against 1,100 sockets
    # that send nothing or stop in the middle of a handshake.
    node = make_node({"app": {"headerTimeout": 3}})
    socks = open_idle_sockets(node.ws_port, 1100, partial=True)
    socks += open_idle_sockets(node.http_port, 100, partial=False)
    try:
        started = time.monotonic()
        for _ in range(3):
            client = node.client(timeout=5)
            try:
                assert client.login(unique_id(), 101)["response"]["code"] == 200
            finally:
                client.close()
        assert time.monotonic() - started < 10
        # None of the silent sockets is kept past the head deadline (plus slack).
        assert all(closed_by_server(s, timeout=8) for s in socks)
        drops = node.state()["drops"]
        assert drops.get("header_timeout", 0) + drops.get("pending_evicted", 0) >= 1100
    finally:
        for sock in socks:
            sock.close()


def test_a_head_sent_too_slowly_is_cut_off(make_node):
    node = make_node({"app": {"headerTimeout": 1}})
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as sock:
        started = time.monotonic()
        for piece in (b"GET /system/state HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n"):
            sock.sendall(piece)
            time.sleep(0.4)
        assert closed_by_server(sock, timeout=5)
        assert time.monotonic() - started < 4
    assert node.state()["drops"].get("header_timeout", 0) >= 1


def test_a_kept_alive_connection_ends_when_idle(node):
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as sock:
        sock.sendall(b"GET /system/state HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert closed_by_server(sock, timeout=15)
        assert 3 < time.monotonic() - started < 10  # gunicorn's keepalive, 5 s


# -- lengths that parse two ways -------------------------------------------------------------------

SMUGGLING = {
    "two Content-Length": b"POST /user/list HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
                          b"Content-Length: 60\r\n\r\nappID=101",
    "xchunked with Content-Length": b"POST /user/list HTTP/1.1\r\nHost: x\r\n"
                                    b"Transfer-Encoding: xchunked\r\nContent-Length: 9\r\n\r\n"
                                    b"appID=101",
    "CL.TE": b"POST /user/list HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /system/state HTTP/1.1\r\nHost: x\r\n\r\n",
    "two Transfer-Encoding": b"POST /user/list HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_an_ambiguous_request_is_refused_and_closed(node, case):
    answer = raw_exchange(node.http_port, SMUGGLING[case])
    assert status_of(answer) == 400, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1  # no hidden second request ran


def test_a_plain_chunked_request_still_works(node):
    body = b"appID=101"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = raw_exchange(node.http_port, b"POST /user/list HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/x-www-form-urlencoded\r\n"
                          b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert status_of(answer) == 200 and b'"code":200' in answer

