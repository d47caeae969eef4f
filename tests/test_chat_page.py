"""The chat page (/home/index) in a real browser: Debian's Chromium driven by Playwright.

Playwright runs in a separate, unpatched interpreter (tests/browser/chat_scenario.py): this
process is gevent-patched by conftest.py and may serve the node itself, while Playwright's sync
API brings its own asyncio loop and greenlets. The scenario prints one JSON object; the tests
here assert on it. Needs /usr/bin/chromium (`python3 dev.py test` (as root) or `sudo bash scripts/install-test-deps.sh`); Playwright's
own browser downloads are never used.
"""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCENARIO = Path(__file__).resolve().parent / "browser" / "chat_scenario.py"
SCENARIO_TIMEOUT = 180  # seconds for one scenario, browser start included

INSTALL_HINT = (f"{CHROMIUM} is missing, and the chat page tests need it. Install Debian's Chromium "
                "with `python3 dev.py test` (as root) or `sudo bash scripts/install-test-deps.sh` (or `apt-get update && apt-get install -y "
                "chromium`) and run the tests again. (Never `playwright install`: the tests use the "
                "system browser only.)")


def require_chromium():
    # A missing browser fails the test, locally and under CI alike: a skip would hide that
    # the page went untested.
    if not os.path.exists(CHROMIUM):
        pytest.fail(INSTALL_HINT, pytrace=False)


def run_scenario(name, node, out_dir):
    """Run one scenario against the node and return its JSON report."""
    require_chromium()
    cmd = [sys.executable, str(SCENARIO), "--scenario", name, "--http-url", node.http_url,
           "--out-dir", str(out_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scenario {name!r} did not finish within {SCENARIO_TIMEOUT}s\n"
                    f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}", pytrace=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"scenario {name!r} printed no JSON report (exit {proc.returncode})\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}", pytrace=False)
    return report


def explain(report):
    return json.dumps(report, indent=2, ensure_ascii=False)


def assert_ok(report):
    assert report["ok"], f"stopped at step {report['step']!r}: {report['error']}\n{explain(report)}"
    assert report["page_errors"] == [], explain(report)
    assert report["console_errors"] == [], explain(report)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_two_users_chat(node, tmp_path):
    report = run_scenario("chat", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    name_a, name_b = facts["name_a"], facts["name_b"]
    assert 0 < len(name_a) <= 20 and 0 < len(name_b) <= 20
    assert facts["names_differ"]
    assert facts["a_connected_notice"], "no 'connected as <name>' notice"
    assert facts["room_links"] == [f"/home/index?appID={room}" for room in (101, 102, 103, 104)]
    assert facts["current_room_link"] == "101"
    # B's enter event reached A
    assert sorted(facts["a_online_after_join"]) == sorted([name_a, name_b])
    assert facts["line_delivered"] and facts["input_cleared"]
    assert facts["enter_key_sends"]
    assert facts["empty_not_sent"]
    # the markup arrived as text and ran nowhere
    assert facts["xss_a"] == {"xss": "undefined", "imgs": 0}
    assert facts["xss_b"] == {"xss": "undefined", "imgs": 0}
    # B's exit event reached A
    assert facts["a_online_after_leave"] == [name_a]
    assert facts["a_status_at_end"] == "online"


def test_phone_layout(node, tmp_path):
    report = run_scenario("mobile", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    shot = Path(facts["screenshot"])
    assert shot.parent == tmp_path and shot.stat().st_size > 0
    assert png_size(shot) == (750, 1334)  # 375x667 at device scale factor 2
    for key in ("input", "send_button", "status"):
        assert facts[key]["found"] and facts[key]["inViewport"], f"{key}: {facts[key]}"
    assert facts["input_visible"] and facts["send_visible"]
    assert facts["scroll_width"] <= 375, "the page scrolls sideways at 375 px"
    assert facts["online_list_hidden"], "the online list should collapse below 700 px"
    assert facts["online_list_opens"], "the online toggle should show the list"


def test_login_refused_is_shown_and_not_retried(node, tmp_path):
    report = run_scenario("refused", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    assert facts["login_rewritten"]
    assert facts["banner_visible"]
    assert "未授权" in facts["banner"] and "1003" in facts["banner"], facts["banner"]
    assert facts["sockets"] == 1, "a refused login must not be retried by itself"
    assert facts["status_after_wait"] == "error"


def test_reconnects_unless_replaced(node, tmp_path):
    report = run_scenario("reconnect", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    assert facts["status_after_reconnect"] == "online"
    assert facts["sockets_after_reconnect"] == 2
    assert facts["name_kept"]
    # 4000: the same name logged in elsewhere; coming back would throw that one out
    assert facts["sockets_after_replaced"] == 2
    assert facts["status_after_replaced"] == "offline"
    assert "logged in elsewhere" in facts["banner"]


def test_failed_send_is_reported(node, tmp_path):
    report = run_scenario("send-errors", node, tmp_path)
    # Chromium logs the refused request itself; only uncaught page errors count here.
    assert report["ok"], f"stopped at step {report['step']!r}: {report['error']}\n{explain(report)}"
    assert report["page_errors"] == [], explain(report)
    facts = report["facts"]
    assert facts["error_own_bubble"] is False and facts["error_input_back"] == "first try"
    assert facts["network_tries"] == 2 and facts["network_same_msgid"], facts
    assert facts["network_form"] == ["appID", "message", "msgID", "userID"]
    assert facts["network_own_bubble"] is False and facts["network_input_back"] == "second try"
