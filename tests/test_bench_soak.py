"""The soak scenario (``python -m imserver.bench soak``), short: it starts its own
redis-server and two nodes, restarts Redis and kills node B part-way under churn and
traffic, and its figures add up; it stops everything it started, also when interrupted."""
import json
import os
import signal
import subprocess
import sys
import time

from cluster_support import redis_binary
from support import ROOT

from imserver.bench.harness import alive
from imserver.bench.soak import classify_answer, rss_limit_kb

STEADY = 30
# Broadcasts every 4 s, alternating the entry node A, B, A, ...: B's land at 5, 13, 21 and
# 29 s, so none falls in the ~2 s (app.reportInterval) after Redis comes back empty at
# ~14 s. A broadcast entering B there answers sendResults true yet reaches none of A's
# users: a known server issue (docs/BENCHMARKS.md, "Soak", finding 2), which this test is
# not about. On a heavily loaded machine the test may also meet finding 1 there (the nodes'
# gRPC stalls: sends refused 1100 while no fault is injected), which it then reports.
SHORT = ["--duration", "30", "--redis-down", "4", "--node-down", "4",
         "--steady", str(STEADY), "--churners", "60", "--churn-rate", "10",
         "--churn-hold-max", "3", "--rate", "10", "--broadcast-interval", "4",
         "--warmup", "10", "--baseline-settle", "2", "--settle", "3", "--wait", "10",
         "--sample-interval", "2", "--progress-interval", "5", "--seed", "1"]


def env():
    return {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}


def soak_argv(out, *extra):
    return [sys.executable, "-m", "imserver.bench", "soak", *extra,
            "--redis-server", redis_binary(), "--out", str(out)]


def started_pids(results) -> "list[int]":
    pids = results["meta"].get("pids", {})
    out = [pids.get("redis")] + pids.get("a", []) + pids.get("b", [])
    for e in results.get("events", []):
        out += e.get("pids", []) if isinstance(e.get("pids"), list) else [e.get("pid")]
    return [p for p in out if p]


def test_short_soak_with_a_redis_restart_and_a_node_kill(tmp_path):
    out = tmp_path / "soak"
    started = time.monotonic()
    proc = subprocess.run(soak_argv(out, *SHORT, "--max-seconds", "100"), cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=160)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    assert "| verdict | PASS |" in proc.stdout
    assert "imserver.bench soak: PASS" in proc.stderr
    assert "[redis_down]" in proc.stderr or "redis_stop" in proc.stderr  # progress lines

    r = json.loads((out / "results.json").read_text())
    assert "aborted" not in r and r["verdict"] == {"ok": True, "problems": []}, r["verdict"]

    u = r["unicast"]
    assert u["accepted"] > 100 and u["delivered"] == u["accepted"], u
    assert u["missing"] == 0 and u["to_the_wrong_user"] == 0 and u["duplicates"] == 0, u
    assert u["sent"] == u["accepted"] + u["refused"]
    # The events showed: sends refused while Redis was down (a private message is accepted
    # once it is in the receiver's inbox), sends into the killed node B refused; sends
    # entering A (the steady users' node) refused only while Redis was down.
    assert u["refused_by_answer"].get("1004", 0) > 0, u
    assert u["refused_by_answer"].get("error ConnectionRefusedError", 0) > 0, u
    by_phase = u["refused_by_phase"]
    store_down = by_phase.get("redis_down: 1004", 0) + by_phase.get("redis_recovery: 1004", 0)
    assert u["by_entry"]["A"].get("refused", 0) <= store_down, u
    assert u["refused_outside_events"] == 0, u["refused_by_phase"]
    assert u["by_entry"]["B"].get("accepted", 0) > 0, u
    assert 0 < u["latency_ms"]["p50"] <= u["latency_ms"]["max"] < 10_000, u

    b = r["broadcast"]
    assert b["must_reach_all"] >= 4 and b["reached_all"] == b["must_reach_all"], b
    assert b["missing"] == []
    assert any(x["entry"] == "B" and x["must_reach_all"] for x in b["per_broadcast"]), b

    s = r["steady"]
    assert s["users"] == STEADY and s["connected_at_end"] == STEADY, s
    assert s["dropped"] == 0 and s["dropped_list"] == [], s
    assert s["replies"].get("heartbeat 200", 0) == 0 or s["heartbeats_sent"] > 0

    c = r["churn"]
    assert c["logged_in"] > 100 and c["left_cleanly"] > 0, c
    assert set(c["logins_by_node"]) == {"A", "B"}, c
    assert c["failures_by_reason"].get("login code 1004", 0) > 0, c  # logins need Redis
    assert c["achieved_rate_per_s"] > 3, c
    assert c["failed_outside_events"] == 0 and c["ended_otherwise_outside_events"] == 0, c

    names = [e["event"] for e in r["events"]]
    assert names == ["start", "redis_stop", "redis_start", "redis_recovered", "node_b_kill",
                     "node_b_start", "node_b_recovered", "traffic_stop", "end"], names
    at = {e["event"]: e["t"] for e in r["events"]}
    assert 9.5 <= at["redis_stop"] <= 12 and at["redis_start"] - at["redis_stop"] >= 4, at
    assert 19.5 <= at["node_b_kill"] <= 22 and at["node_b_start"] - at["node_b_kill"] >= 4, at
    kill = next(e for e in r["events"] if e["event"] == "node_b_kill")
    assert len(kill["pids"]) == 2, kill  # gunicorn master and its worker
    recovery = r["recovery"]
    assert recovery["redis"]["recovered"] and recovery["node_b"]["recovered"], recovery

    m = r["memory"]
    assert m["baseline_kb"] > 10_000 and m["end_kb"] > 10_000, m
    assert m["within_tolerance"] is True and m["end_kb"] <= m["limit_kb"], m
    assert len([x for x in m["samples"] if x["t"] >= 0]) >= 10, m["samples"]
    assert m["worker_restarts"] == []

    assert (out / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| verdict | PASS |" in (out / "results.md").read_text()
    assert len((out / "sends.jsonl").read_text().splitlines()) >= u["sent"] + b["sent"]
    for name in ("node-a.log", "node-b.log", "redis.log"):
        assert (out / name).stat().st_size > 0, name
    # Everything it started is gone.
    pids = started_pids(r)
    assert len(pids) >= 7, pids
    assert not [p for p in pids if alive(p)], pids
    print(f"soak test took {took:.1f}s (the soak itself {r['meta']['seconds']}s)")


def test_ctrl_c_stops_every_process_it_started(tmp_path):
    out = tmp_path / "soak"
    proc = subprocess.Popen(soak_argv(out, *SHORT, "--max-seconds", "60"), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        seen = ""
        while "event start" not in seen:  # the nodes run and the traffic has begun
            assert time.monotonic() < deadline, seen
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, seen + err
    r = json.loads((out / "results.json").read_text())
    assert r["aborted"] == "interrupted"
    assert r["verdict"]["ok"] is False
    pids = started_pids(r)
    assert len(pids) >= 5, pids
    assert not [p for p in pids if alive(p)], pids


def test_refuses_events_that_do_not_fit(tmp_path):
    proc = subprocess.run(soak_argv(tmp_path / "r", "--duration", "30", "--redis-down", "10"),
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "--redis-down" in proc.stderr and not (tmp_path / "r").exists()


def test_answers_are_classified():
    ok = {"code": 200, "msg": "Success", "data": {"sendResults": True}}
    assert classify_answer(200, ok) == (True, "", False)
    local = {"code": 200, "data": {"sendResults": True, "sendResultsErr":
             "cluster store unavailable (...); msgID not deduplicated; "
             "delivered on this node only"}}
    assert classify_answer(200, local) == (True, "", True)
    assert classify_answer(200, {"code": 1004, "data": None}) == (False, "1004", False)
    assert classify_answer(200, {"code": 1100, "data": {"sendResults": False}}) == \
        (False, "1100", False)
    assert classify_answer(200, {"code": 200, "data": {
        "sendResults": False, "sendResultsErr": "user is not online"}}) == \
        (False, "200 user is not online", False)
    assert classify_answer(200, {"code": 200, "data": {"sendResults": False,
                                                       "duplicate": True}})[1] == "200 duplicate"
    assert classify_answer(502, {"raw": "Bad Gateway"}) == (False, "http 502", False)
    assert classify_answer(None, None, ConnectionRefusedError()) == \
        (False, "error ConnectionRefusedError", False)
    # The end RSS limit: the larger of +20 % and +10 MB.
    assert rss_limit_kb(40_000, 20, 10) == 40_000 + 10_240
    assert rss_limit_kb(100_000, 20, 10) == 120_000
