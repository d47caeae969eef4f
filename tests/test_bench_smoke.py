"""The load tool (``python -m imserver.bench``) against a real node, small and short: every
scenario runs, the numbers add up, and the result files are written."""
import json
import math
import os
import re
import subprocess
import sys
import time

from support import ROOT, free_port, wait_until

N = 200
BROADCASTS = 3
UNICASTS = 100


def bench(*args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    return subprocess.run([sys.executable, "-m", "imserver.bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_suite_against_a_node(make_node, tmp_path):
    node = make_node({"app": {"workerConnections": 2000, "logLevel": "info",
                              "accessLog": False}})
    out = tmp_path / "results"
    proc = bench("suite", "--scenarios", "connect,idle,broadcast,unicast,churn",
                 "--ws", node.ws_url, "--http", node.http_url, "-n", str(N),
                 "--concurrency", "100", "--heartbeat-interval", "1", "--duration", "1.5",
                 "--messages", str(BROADCASTS), "--interval", "0.2", "--idle-probe", "0.5",
                 "--unicast-messages", str(UNICASTS), "--rate", "200",
                 "--churn-rate", "20", "--churn-duration", "1", "--settle", "0.2",
                 "--wait", "10", "--max-seconds", "60", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| unicast | latency p50 / p99 / max (ms) |" in proc.stdout  # the summary table
    assert "| broadcast | server CPU per delivery, net of idle (µs) |" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    assert "aborted" not in results
    meta = results["meta"]
    # The server processes were found from the listening ports: the gunicorn master
    # (the node's pid) and its worker.
    assert node.pid in meta["server_pids"]
    assert set(node.worker_pids()) <= set(meta["server_pids"])
    sc = results["scenarios"]

    connect = sc["connect"]
    assert connect["connected"] == N and connect["failed"] == 0, connect
    assert connect["rate_per_s"] > 0 and connect["seconds_to_all_logged_in"] > 0
    assert connect["server_state_connections"] == N
    # The baseline, then one point after each of the --mem-steps (10) rounds, however
    # fast the connections come.
    assert [n for n, _ in connect["memory_curve"]] == \
        [0] + [math.ceil(N * (i + 1) / 10) for i in range(10)], connect["memory_curve"]

    idle = sc["idle"]
    assert idle["connections_at_end"] == N and idle["dropped"] == 0, idle
    assert idle["kb_per_conn"] > 0, idle
    assert idle["heartbeats_sent"] > 0
    assert idle["heartbeat_replies_total"].get("heartbeat 200", 0) > 0, idle

    broadcast = sc["broadcast"]
    assert broadcast["receivers"] == N
    assert broadcast["delivered"] == N * BROADCASTS == broadcast["expected_deliveries"], broadcast
    assert broadcast["send_errors"] == 0
    assert all(m["received"] == N and m["last_receive_ms"] > 0 for m in broadcast["per_message"])
    assert broadcast["deliveries_per_s"] > 0
    assert broadcast["cpu_us_per_delivery"] is not None and broadcast["cpu_us_per_delivery"] >= 0
    assert broadcast["cpu_us_per_delivery_gross"] >= broadcast["cpu_us_per_delivery"]
    assert broadcast["server_idle_cpu_per_s"] is not None

    unicast = sc["unicast"]
    assert unicast["sent_ok"] == UNICASTS and unicast["received"] == UNICASTS, unicast
    assert unicast["lost"] == 0
    lat = unicast["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] < 10_000, lat

    churn = sc["churn"]
    assert churn["logged_in"] > 0 and churn["failed"] == 0, churn
    assert churn["left"] == churn["logged_in"], churn
    assert churn["server_rss_start_kb"] > 0 and churn["server_rss_end_kb"] > 0

    assert results["close"]["closed"] == N
    for name in ("results.md", "latency.png", "memory.png", "samples.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| broadcast | delivered / expected | 600 / 600 |" in (out / "results.md").read_text()
    # Every bench connection went away with the close handshake.
    wait_until(lambda: node.state()["connections"] == 0, timeout=5, what="no connection left")


def test_refuses_a_remote_target_without_allow_remote(tmp_path):
    proc = bench("connect", "--ws", "ws://192.0.2.1:8089/acc", "--http", "http://192.0.2.1:8080",
                 "-n", "1", "--out", str(tmp_path / "r"), timeout=30)
    assert proc.returncode == 2
    assert "--allow-remote" in proc.stderr and "192.0.2.1" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_max_seconds_stops_the_run(make_node, tmp_path):
    node = make_node({"app": {"logLevel": "info", "accessLog": False}})
    out = tmp_path / "results"
    proc = bench("idle", "--ws", node.ws_url, "--http", node.http_url, "-n", "20",
                 "--duration", "120", "--max-seconds", "3", "--quiet", "--no-plots",
                 "--out", str(out), timeout=40)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert "max-seconds" in results["aborted"]
    assert results["scenarios"]["connect"]["connected"] == 20


def test_client_codec_reads_split_fragmented_and_control_frames():
    """The load client's WebSocket reader: frames cut anywhere, a fragmented message,
    a ping answered with a masked pong, the server's close frame answered."""
    import socket
    import struct

    from imserver.bench.wsclient import ClosedError, WSConnection, mask_frame
    from imserver.protocol.frames import close_frame, encode_frame, unmask

    a, b = socket.socketpair()
    conn = WSConnection()
    conn.sock = a
    big = b"x" * 70000
    stream = (encode_frame(0x1, b'{"a":1}') + bytes((0x01, 3)) + b"hel" + encode_frame(0x9, b"hi")
              + bytes((0x80, 2)) + b"lo" + encode_frame(0x2, big) + close_frame(4001, "bye"))
    got = []
    closed = None
    try:
        for i in range(0, len(stream), 61):  # 61-byte pieces, read after each
            conn._feed(stream[i:i + 61])
            while True:
                message = conn._next()
                if message is None:
                    break
                got.append(message)
    except ClosedError as exc:
        closed = exc.code
    assert closed == 4001 and conn.close_code == 4001
    assert got == [(0x1, b'{"a":1}'), (0x1, b"hello"), (0x2, big)]
    b.settimeout(1)
    sent = b.recv(100)
    # A masked pong with the ping's payload, then the masked close answer (same code).
    assert sent[0] == 0x8A and sent[1] == 0x82 and unmask(sent[6:8], sent[2:6]) == b"hi"
    rest = sent[8:]
    assert rest[0] == 0x88 and rest[1] & 0x80
    assert struct.unpack("!H", unmask(rest[6:8], rest[2:6]))[0] == 4001
    frame = mask_frame(0x1, b"abc")
    assert frame[1] == 0x83 and unmask(frame[6:], frame[2:6]) == b"abc"
    a.close()
    b.close()


def test_a_run_where_no_connection_succeeds_fails_and_says_why(tmp_path):
    port = free_port()  # nothing listens there
    out = tmp_path / "results"
    proc = bench("connect", "--ws", f"ws://127.0.0.1:{port}/acc", "--http",
                 f"http://127.0.0.1:{port}", "-n", "50", "--quiet", "--no-plots",
                 "--out", str(out), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"no connection succeeded: 0 of 50 to ws://127.0.0.1:{port}/acc" in proc.stderr
    assert "connect ECONNREFUSED: 50" in proc.stderr and "is a server listening" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["scenarios"]["connect"]["connected"] == 0
    assert results["aborted"].startswith("no connection succeeded")


def _rate(data: bytes, bar: bytes) -> float:
    """The rate the last state of a progress bar shows, in messages per second."""
    states = [s for s in re.split(rb"[\r\n]", data) if s.startswith(bar + b":")]
    assert states, f"no {bar} bar"
    value, prefix = re.search(rb"([\d.]+)([kMG]?)msg/s", states[-1]).groups()
    return float(value) * {b"": 1, b"k": 1e3, b"M": 1e6, b"G": 1e9}[prefix]


def test_progress_keeps_moving_and_its_rates_are_per_second_of_the_phase(make_node, tmp_path):
    node = make_node({"app": {"logLevel": "info", "accessLog": False}})
    err_path, out = tmp_path / "stderr", tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imserver.bench", "suite", "--scenarios",
             "idle,broadcast,unicast", "--ws", node.ws_url, "--http", node.http_url, "-n", "50",
             "--heartbeat-interval", "0", "--duration", "1.5", "--idle-probe", "1.5",
             "--messages", "4", "--interval", "1", "--unicast-messages", "40", "--rate", "20",
             "--wait", "10", "--max-seconds", "60", "--no-plots", "--out", str(out)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        growth = []  # (when, size) each time stderr grew
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            size = err_path.stat().st_size
            if not growth or size > growth[-1][1]:
                growth.append((time.monotonic(), size))
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
    data = err_path.read_bytes()
    assert proc.wait(5) == 0, data.decode(errors="replace")[-3000:]
    # The broadcast phase (idle CPU probe, then a send a second) shows something at least
    # every 2.5 s: it is not silent until the deliveries are counted.
    start, end = data.index(b"bench: broadcasting"), data.index(b"bench: broadcast:")
    times = [t for t, size in growth if start < size <= end + 1] + \
        [next(t for t, size in growth if size > end)]
    assert max(b - a for a, b in zip(times, times[1:])) < 2.5, growth
    # Receipts counted from the first send: 200 deliveries over at least 3 s, 40 unicasts
    # over at least 1.95 s; a bar of seconds shows no rate ("s/s").
    assert _rate(data, b"broadcast") <= 200 / 3 * 1.05
    assert _rate(data, b"unicast") <= 40 / 1.95 * 1.05
    assert not re.search(rb"[\d?]s/s", data), data.decode(errors="replace")[-3000:]


def test_the_http_pool_survives_the_servers_keep_alive_timeout(node):
    # The node closes idle kept-alive connections after 5 s; a pool holding several of them
    # must not fail the next send (each would be as stale as the first it tries).
    import gevent
    from imserver.bench.coordinator import HttpPool

    pool = HttpPool(node.http_url, size=8, timeout=5)
    jobs = [gevent.spawn(pool.request, "GET", "/system/state") for _ in range(4)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert all(job.value[0] == 200 for job in jobs)
    time.sleep(6.5)  # past the node's keep-alive: every pooled connection is closed
    status, body = pool.post("/user/sendMessageAll", appID=101, userID="pool-test",
                             msgID=f"pool-{time.time()}", message="after idle")
    assert (status, body["code"]) == (200, 200), body


def test_recovery_scenario_loses_and_repeats_nothing(tmp_path):
    """``recovery`` at small scale with its own Redis and two real nodes: node A is drained
    while the room gets messages through node B; every client comes back on B with
    ``since`` and ends with every message exactly once."""
    import shutil

    import pytest

    from imserver.bench.harness import alive, redis_server_path

    if redis_server_path() is None and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path / "recovery"
    clients, messages, stats = 20, 10, 20
    t0 = time.monotonic()
    proc = bench("recovery", "-n", str(clients), "--messages", str(messages),
                 "--publish-rate", "20", "--b-members", "3", "--stats-messages", str(stats),
                 "--stats-idle", "1", "--drain-window", "1", "--spread", "0.5", "--wait", "10",
                 "--quiet", "--max-seconds", "60", "--out", str(out), timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 30
    assert "| lost / duplicated / out of order | 0 / 0 / 0 |" in proc.stdout, proc.stdout
    r = json.loads((out / "results.json").read_text())
    assert r["verdict"] == {"ok": True, "problems": []}, r["verdict"]
    c, m = r["clients"], r["messages"]
    assert c["close_codes"] == {"1001": clients} and c["recovered"] == clients, c
    assert c["not_recovered"] == 0 and c["never_back"] == 0
    assert r["published"]["accepted_during_drain"] == messages
    # every client of A and B expects the warm-up, the stats publications and the drain's
    assert m["expected_deliveries"] == (clients + 3) * (1 + stats + messages), m
    assert m["delivered"] == m["expected_deliveries"]
    assert m["lost"] == m["duplicated"] == m["unexpected"] == m["out_of_order"] == 0, m
    times = r["times_ms"]
    assert 0 < times["drain_to_recovered"]["p50"] <= times["drain_to_last_recovered"]
    # one append script and one msgID claim per message, whatever the room's size
    for key in ("room_publish", "send_message_all"):
        per = r["redis_commands"][key]["per_message"]
        for name in ("evalsha", "xadd", "set"):
            assert abs(per[name]["net_per_msg"] - 1.0) < 0.05, per
    # everything it started is gone
    pids = r["meta"]["pids"]
    assert not any(alive(p) for p in [pids["redis"], *pids["a"], *pids["b"]])


def _need_redis():
    import shutil

    import pytest

    from imserver.bench.harness import redis_server_path

    if redis_server_path() is None and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")


def _gone(results):
    from imserver.bench.harness import alive

    pids = results["meta"]["pids"]
    started = [results["meta"].get("client_pids") or []]
    started += [pids[k] if isinstance(pids[k], list) else [pids[k]] for k in pids]
    return not any(alive(p) for group in started for p in group)


def _private(tmp_path, nodes, *extra):
    out = tmp_path / f"private-{nodes}"
    t0 = time.monotonic()
    proc = bench("private", "--nodes", str(nodes), "-n", "20", "--senders", "4",
                 "--messages", "60", "--rate", "40", "--wait", "5", "--quiet",
                 "--max-seconds", "60", "--out", str(out), *extra, timeout=90)
    return proc, json.loads((out / "results.json").read_text()), time.monotonic() - t0


def test_private_scenario_on_one_node_delivers_each_message_once(tmp_path):
    """``private`` at small scale on an embedded node: HTTP and WebSocket private messages
    each read once by their receiver, with latencies."""
    proc, r, seconds = _private(tmp_path, 1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seconds < 30
    assert r["verdict"] == {"ok": True, "problems": []}, r["verdict"]
    for phase in ("http", "ws"):
        p = r["phases"][phase]
        assert p["sent"] == p["accepted"] == p["received"] == p["received_once"] == 60, p
        assert p["lost"] == p["duplicated"] == p["misrouted"] == 0, p
        assert 0 < p["latency_ms"]["p50"] <= p["latency_ms"]["p99"] <= p["latency_ms"]["max"]
    assert r["phases"]["http"]["send_results_true"] == 60
    assert r["phases"]["ws"]["delivered_true"] == 60
    assert r["messages"] == {"lost": 0, "duplicated": 0, "misrouted": 0, "unexpected": 0,
                             "out_of_order": 0}
    assert _gone(r)


def test_private_scenario_on_two_nodes_delivers_each_message_once(tmp_path):
    _need_redis()
    proc, r, seconds = _private(tmp_path, 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seconds < 30
    for phase in ("http", "ws"):
        p = r["phases"][phase]
        assert p["accepted"] == p["received_once"] == 60 and p["lost"] == p["duplicated"] == 0, p
        assert set(p["server_cpu"]) == {"A", "B"}
    assert r["verdict"]["ok"], r["verdict"]
    assert _gone(r)


def test_private_scenario_reports_messages_it_did_not_read(tmp_path):
    # The clients throw away every 7th private message: the run must say so and fail.
    proc, r, _ = _private(tmp_path, 1, "--discard-every", "7", "--wait", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lost = r["messages"]["lost"]
    assert lost == 120 // 7, r["messages"]
    assert r["phases"]["http"]["lost"] + r["phases"]["ws"]["lost"] == lost
    assert not r["verdict"]["ok"] and "lost" in r["verdict"]["problems"][0]


def _offline(tmp_path, nodes, *extra):
    out = tmp_path / f"offline-{nodes}"
    t0 = time.monotonic()
    proc = bench("offline", "--nodes", str(nodes), "-n", "20", "--per-user", "10",
                 "--login-rate", "50", "--recheck", "5", "--settle", "0.5", "--wait", "5",
                 "--quiet", "--max-seconds", "60", "--out", str(out), *extra, timeout=90)
    return proc, json.loads((out / "results.json").read_text()), time.monotonic() - t0


def _offline_ok(r):
    m = r["messages"]
    assert r["store"]["stored"] == 200 and r["store"]["refused"] == {}, r["store"]
    assert m["expected"] == m["received"] == 200, m
    assert m["messages_per_user"] == {"10": 20}, m
    assert (m["lost"], m["duplicated"], m["out_of_order"], m["wrong_offset"],
            m["unexpected"], m["login_replies_not_matching_the_inbox"]) == (0,) * 6, m
    t = r["times_ms"]
    assert 0 < t["connect_to_last_message_per_user"]["max"] <= t["first_login_to_last_message"]
    assert r["ack_recheck"]["acks"] == {"200": 20}
    assert r["ack_recheck"]["relogins"] == 5 and r["ack_recheck"]["relogins_not_clean"] == 0
    assert r["verdict"] == {"ok": True, "problems": []}, r["verdict"]


def test_offline_scenario_on_one_node_delivers_the_inbox_once_in_order(tmp_path):
    """``offline`` at small scale, embedded: 10 messages stored for each of 20 offline
    users, who log in with a deviceID and get each once, in offset order."""
    proc, r, seconds = _offline(tmp_path, 1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seconds < 30
    _offline_ok(r)
    assert r["memory"]["nodes"]["A"]["worker_rss_kb_after"] > 0
    assert _gone(r)


def test_offline_scenario_on_two_nodes_delivers_the_inbox_once_in_order(tmp_path):
    _need_redis()
    proc, r, seconds = _offline(tmp_path, 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seconds < 30
    _offline_ok(r)
    rd = r["memory"]["redis"]
    assert rd["used_memory_after"] > rd["used_memory_before"] and rd["bytes_per_message"] > 0
    assert _gone(r)


def test_offline_scenario_reports_messages_it_did_not_read(tmp_path):
    proc, r, _ = _offline(tmp_path, 1, "--discard-every", "9", "--wait", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert r["messages"]["lost"] == 200 // 9, r["messages"]
    assert r["messages"]["received"] == 200 - 200 // 9
    assert not r["verdict"]["ok"]
