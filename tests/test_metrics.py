"""/metrics in the Prometheus text format, summed over gunicorn workers."""
import re

from support import unique_id, wait_until


def scrape(node) -> "dict[str, float]":
    status, headers, body = node.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_counters_and_gauges_follow_the_traffic(make_node):
    node = make_node()
    a, b = node.client(), node.client()
    try:
        a.login(unique_id("a"))
        b.login(unique_id("b"))
        a.request("ping")
        a.request("no-such-command")
        assert node.post("/user/sendMessageAll", appID=101, userID="ops", message="hi")["code"] == 200
        m = scrape(node)
        assert m["imserver_connections"] == 2
        assert m["imserver_users"] == 2
        assert m['imserver_messages_in_total{cmd="login"}'] == 2
        assert m['imserver_messages_in_total{cmd="ping"}'] == 1
        assert m['imserver_messages_in_total{cmd="other"}'] == 1  # made-up cmds share one label
        assert m['imserver_messages_out_total{cmd="msg"}'] == 1
        assert m["imserver_deliveries_total"] == 3  # b's enter to a, and the msg to both
        assert m['imserver_command_seconds_count{cmd="login"}'] == 2
        assert m['imserver_http_seconds_count{route="/user/sendMessageAll"}'] == 1
        a.close()
        wait_until(lambda: scrape(node)["imserver_connections"] == 1, what="the gauge to drop")
    finally:
        a.close()
        b.close()


def test_drops_are_counted_by_reason(make_node):
    node = make_node({"app": {"rateLimit": 0.1, "rateBurst": 1}})
    c = node.client()
    for seq in "abc":
        c.send_json({"seq": seq, "cmd": "ping"})
    assert c.wait_closed()[0] == 1008
    wait_until(lambda: scrape(node).get('imserver_drops_total{reason="rate_limit"}') == 1,
               what="the rate-limit drop to be counted")
    state = node.state()
    assert state["drops"] == {"rate_limit": 1}
    assert state["pid"] in node.worker_pids()
    assert state["limits"] == {"maxConnections": 10000, "maxFrameBytes": 65536,
                               "rateLimit": 0.1, "rateBurst": 1}
    assert state["stopping"] is False and "liveNodes" not in state


def test_workers_are_summed(start_cluster_node):
    node = start_cluster_node(workers=2)
    clients = [node.client() for _ in range(8)]
    try:
        for c in clients:
            assert c.login(unique_id("w"))["response"]["code"] == 200
        seen = set()
        wait_until(lambda: seen.add(node.state()["node"]) or len(seen) == 2, timeout=10,
                   interval=0.01, what="requests to reach both workers")
        # Each worker refreshes its gauges every 5 s; a scrape refreshes its own at once.
        wait_until(lambda: scrape(node)["imserver_connections"] == 8, timeout=12,
                   what="both workers' connections in one scrape")
        assert scrape(node)['imserver_messages_in_total{cmd="login"}'] == 8
    finally:
        for c in clients:
            c.close()
