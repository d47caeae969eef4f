"""A node's stop on a bad day, with real processes: every client gets its 1001 over the drain
window whatever the cluster store does, Ctrl+C drains as SIGTERM does, and an idle HTTP
keep-alive connection does not hold the exit."""
import os
import signal
import socket
import time

from support import unique_id

CLIENTS = 200


def logged_in_clients(node, count=CLIENTS):
    clients = []
    for _ in range(count):
        client = node.client(timeout=10)
        assert client.login(unique_id("d"), 101)["response"]["code"] == 200
        clients.append(client)
    return clients


def close_codes(clients, timeout=15) -> "dict[int, int]":
    codes = {}
    for client in clients:
        try:
            code, _ = client.wait_closed(timeout)
        except TimeoutError:
            code = None
        codes[code] = codes.get(code, 0) + 1
        client.close()
    return codes


def test_a_frozen_store_does_not_skip_the_drain(start_cluster_node, redis_server):
    node = start_cluster_node({"app": {"drainWindow": 1}})
    clients = logged_in_clients(node)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        node.proc.send_signal(signal.SIGTERM)
        assert close_codes(clients) == {1001: CLIENTS}
        assert node.proc.wait(30) == 0
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)


def test_sigterm_drains_every_client_while_the_store_is_slow_to_answer(start_cluster_node,
                                                                        redis_server):
    # The store answers, but only after the node's own timeout: the leave fails late.
    node = start_cluster_node({"app": {"drainWindow": 0.5}})
    clients = logged_in_clients(node, 50)
    redis_server.client().execute_command("CLIENT", "PAUSE", "3000", "ALL")
    node.proc.send_signal(signal.SIGTERM)
    assert close_codes(clients) == {1001: 50}
    assert node.proc.wait(30) == 0


def test_ctrl_c_drains_like_sigterm(make_node):
    node = make_node()
    clients = logged_in_clients(node, 20)
    # A terminal's Ctrl+C reaches the whole process group: master and worker.
    for pid in [node.pid] + node.worker_pids():
        os.kill(pid, signal.SIGINT)
    assert close_codes(clients) == {1001: 20}
    assert node.proc.wait(30) == 0


def test_an_idle_keep_alive_connection_does_not_hold_the_exit(make_node):
    node = make_node()
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as sock:
        sock.sendall(b"GET /system/state HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(30) == 0
        took = time.monotonic() - started
    assert took < 4, f"exit took {took:.1f}s with an idle keep-alive connection open"
