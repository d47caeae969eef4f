"""The chat page (/home/index) in a real browser: Debian's Chromium driven by Playwright.

Playwright runs in a separate, unpatched interpreter (tests/browser/chat_scenario.py): this
process is gevent-patched by conftest.py and may serve the node itself, while Playwright's sync
API brings its own asyncio loop and greenlets. The scenario prints one JSON object; the tests
here assert on it. Needs /usr/bin/chromium (`python3 dev.py test` (as root) or `sudo bash scripts/install-test-deps.sh`); Playwright's
own browser downloads are never used.
"""
import json
import os
import re
import struct
import subprocess
import sys
import threading
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


def run_scenario(name, node, out_dir, actions=None, other=None):
    """Run one scenario against the node and return its JSON report. ``actions``: what the
    scenario may ask this test to do mid-way ({"stop-node": fn, ...}); ``other``: a second
    node of the same cluster."""
    require_chromium()
    cmd = [sys.executable, str(SCENARIO), "--scenario", name, "--http-url", node.http_url,
           "--out-dir", str(out_dir)]
    if other is not None:
        cmd += ["--other-url", other.http_url]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / f"{name}.stderr", "w+") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        timed_out = []
        timer = threading.Timer(SCENARIO_TIMEOUT, lambda: timed_out.append(proc.kill()))
        timer.start()
        try:
            lines = answer_asks(proc, actions or {})
        finally:
            timer.cancel()
            proc.stdin.close()
            proc.wait()
        stderr.seek(0)
        errors = stderr.read()
    output = "\n".join(lines)
    if timed_out:
        pytest.fail(f"scenario {name!r} did not finish within {SCENARIO_TIMEOUT}s\n"
                    f"stdout:\n{output}\nstderr:\n{errors[-4000:]}", pytrace=False)
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"scenario {name!r} printed no JSON report (exit {proc.returncode})\n"
                    f"stdout:\n{output}\nstderr:\n{errors[-4000:]}", pytrace=False)
    (Path(out_dir) / f"{name}.json").write_text(explain(report))  # next to the screenshots
    return report


def answer_asks(proc, actions):
    """Read the scenario's output; do what it asks ({"ask": action}) and answer "done
    <action>" or why not. The other lines, in order."""
    lines = []
    for line in proc.stdout:
        try:
            ask = json.loads(line).get("ask")
        except (ValueError, AttributeError):
            ask = None
        if ask is None:
            if line.strip():
                lines.append(line.rstrip("\n"))
            continue
        try:
            actions[ask]()
            answer = f"done {ask}"
        except Exception as exc:  # the scenario reports it as its failure
            answer = f"failed {ask}: {type(exc).__name__}: {exc}".replace("\n", " ")
        proc.stdin.write(answer + "\n")
        proc.stdin.flush()
    return lines


def explain(report):
    return json.dumps(report, indent=2, ensure_ascii=False)


def assert_ok(report):
    assert report["ok"], f"stopped at step {report['step']!r}: {report['error']}\n{explain(report)}"
    assert report["page_errors"] == [], explain(report)
    assert report["console_errors"] == [], explain(report)


def assert_ok_but_refused_requests(report):
    """assert_ok, except that Chromium's own console lines about failed requests and
    sockets (a stopped node) count for nothing: only the page's errors do."""
    assert report["ok"], f"stopped at step {report['step']!r}: {report['error']}\n{explain(report)}"
    assert report["page_errors"] == [], explain(report)
    unexplained = [line for line in report["console_errors"]
                   if not re.search(r"Failed to load resource|WebSocket connection to .* failed",
                                    line)]
    assert unexplained == [], explain(report)


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
    # default names show in any font: ASCII (a "guest-" prefix where logins need tokens)
    assert re.fullmatch(r"(guest-)?[A-Za-z]+[0-9]+", name_a), name_a
    assert re.fullmatch(r"(guest-)?[A-Za-z]+[0-9]+", name_b), name_b
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
    # in the page's language, not the wire's codeMsg
    assert "Login failed: not authorized (1003): room 101 is not open." in facts["banner"], \
        facts["banner"]
    assert "未授权" not in facts["banner"]
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
    assert_ok(report)
    facts = report["facts"]
    assert facts["error_own_bubble"] is False and facts["error_input_back"] == "first try"
    assert facts["detail_notice"]  # the server's detail, not 参数不合法 (1001)
    # the answer never came: the message waits, is not tried again on that connection, and
    # goes out after the next login with the msgID it got when typed; the node takes it once
    assert facts["tries_before_login"] == 1, facts
    assert facts["publish_data"] == ["msg", "msgID", "room", "type"]
    waiting = facts["waiting"]
    assert waiting and waiting["pending"] and waiting["note"] == RETRY, waiting
    assert facts["errors"] == [] and facts["input"] == "", facts
    assert len(facts["msgids"]) == 2 and len(set(facts["msgids"])) == 1, facts
    assert facts["copies"] == 1, facts


def check_names(facts, prefix):
    first = facts["default_name"]
    assert re.fullmatch(prefix + r"[A-Za-z]+[0-9]+", first), first
    assert facts["guest_prefix"] == prefix
    # the name stays with the browser: reloads, room switches and another tab keep it; the
    # other tab is another device of the user, so neither replaces the other
    assert facts["after_reload"] == first
    assert facts["after_room_switch"] == first and facts["room_after_switch"] == 102
    assert facts["other_tab_name"] == first
    assert facts["first_tab_after_other"] == "online"
    first_device, other_device = facts["devices"]
    assert first_device and other_device and first_device != other_device, facts["devices"]
    assert other_device.startswith(first_device), facts["devices"]
    # the name form checks what it is given
    assert facts["hint_empty"] == "Type a name."
    assert facts["hint_invisible"] == "A name cannot hold control or invisible characters."
    assert facts["too_long_kept_to"] == 20
    assert facts["name_after_refusals"] == first
    # a chosen name: logged in under it, the room sees the old one go and the new one come
    assert facts["hint_good"] == ""
    chosen = prefix + facts["typed"]
    assert facts["chosen_notice"]
    assert f"notice: {first} left" in facts["b_notices"], facts["b_notices"]
    assert f"notice: {chosen} joined" in facts["b_notices"], facts["b_notices"]
    assert facts["hint_taken"] == f"{chosen} is online in this room: choose another name."
    assert facts["b_name_kept"]
    assert facts["after_reload_chosen"] == chosen and facts["b_still_lists_chosen"]


def test_name_is_kept_and_can_be_chosen(node, tmp_path):
    report = run_scenario("names", node, tmp_path)
    assert_ok(report)
    check_names(report["facts"], "")


def test_chosen_name_gets_a_token_where_logins_need_one(make_node, tmp_path):
    """With auth.secret the node mints the token for a chosen name, as a guest name:
    nobody can take a real user's name from the page."""
    secure = make_node({"auth": {"secret": "s" * 40}}, name="tokens")
    report = run_scenario("names", secure, tmp_path)
    assert_ok(report)
    check_names(report["facts"], "guest-")


def test_unknown_room_is_said_and_the_address_corrected(node, tmp_path):
    report = run_scenario("unknown-room", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    assert "notice: There is no room \"999\" here: this is room 101." in facts["notices"], facts
    assert facts["url"].endswith("/home/index?appID=101")
    assert facts["current_room"] == "101"
    assert not any("There is no room" in n for n in facts["notices_after_reload"])


def test_message_box_has_the_node_s_limit_and_a_counter(make_node, tmp_path):
    short = make_node({"app": {"maxMessageLength": 30}}, name="short")
    report = run_scenario("long-message", short, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    assert facts["counter_visible_at_20"] is False
    assert facts["counter_at_26"] == "4 characters left"
    assert facts["length_after_typing_36"] == 30
    assert facts["counter_at_limit"] == "limit of 30 characters reached"
    assert facts["counter_full_class"]
    assert len(facts["delivered"]) == 30
    assert facts["counter_after_send"] is False


def test_a_keyed_push_api_does_not_concern_the_page(make_node, tmp_path):
    """A node whose push API needs auth.apiKey, without login tokens for the page: the page
    sends over its own login (publish), so it sends all the same."""
    keyed = make_node({"auth": {"apiKey": "k" * 24}}, name="keyed")
    report = run_scenario("send-keyed", keyed, tmp_path)
    assert_ok(report)
    assert report["facts"]["errors"] == []


# -- sending while the connection is down or the node drains --------------------------------

WAITING = "waiting for the connection"
RETRY = "not sent yet, will retry"


def restartable(node, closed=False):
    """Actions that stop ``node`` (SIGTERM: it drains, closing its clients with 1001) and
    start it again on the same ports; ``closed``: started again wanting sign-in."""
    def start_closed():
        node.config.setdefault("auth", {})["secret"] = "s" * 40
        node.start()

    actions = {"stop-node": node.stop, "start-node": node.start}
    if closed:
        actions["start-node-closed"] = start_closed
    return actions


def test_a_message_typed_while_disconnected_waits_and_goes_after_login(start_cluster_node,
                                                                       tmp_path):
    """A's node stops and comes back; B is on another node of the cluster the whole time."""
    node_a = start_cluster_node(name="a")
    node_b = start_cluster_node(name="b")
    report = run_scenario("send-while-down", node_a, tmp_path, restartable(node_a), node_b)
    assert_ok_but_refused_requests(report)
    facts = report["facts"]
    assert facts["close_notice"], "no notice of the 1001 close"
    assert facts["input_cleared"]
    # shown as waiting, not as sent, and not posted
    for line in facts["while_down"]:
        assert line and line["pending"] and line["busy"] == "true", facts["while_down"]
        assert line["note"] == WAITING and line["label"] == WAITING, line
        assert line["shown"] == f'"{WAITING}"', line  # the words are on screen
    assert facts["posts_while_down"] == 0 and facts["errors_while_down"] == [], facts
    # after the login: posted in order, with the msgIDs they got when typed, delivered, sent
    msg_ids = [line["msgID"] for line in facts["while_down"]]
    assert all(msg_ids) and len(set(msg_ids)) == 2
    assert [msg_id for msg_id, _ in facts["posts"]] == msg_ids, facts["posts"]
    assert min(facts["logins_before_posts"]) >= 1, facts  # only after a new login
    assert facts["b_lines"] == facts["lines"], facts
    for line in facts["after_login"]:
        assert not line["pending"] and line["note"] is None and not line["partial"], line


def test_a_send_whose_answer_was_lost_goes_again_and_arrives_once(start_cluster_node,
                                                                  tmp_path):
    """A's message reaches its node and B (on another node), but the answer is lost as A's
    node stops. A sends it again after its next login, with the same msgID; the node says
    it has it already, which counts as sent, and nobody sees it twice."""
    node_a = start_cluster_node(name="a")
    node_b = start_cluster_node(name="b")
    report = run_scenario("answer-lost", node_a, tmp_path, restartable(node_a), node_b)
    assert_ok_but_refused_requests(report)
    facts = report["facts"]
    for key in ("after_loss", "while_down"):
        line = facts[key]
        assert line and line["pending"] and line["note"] == RETRY, (key, line)
    assert facts["publishes_before_login"] == 1, facts
    assert len(facts["msgids"]) == 2 and len(set(facts["msgids"])) == 1, facts
    assert facts["logins_before_last"] >= 2, facts
    assert facts["after_login"] and not facts["after_login"]["pending"], facts
    assert facts["after_login"]["note"] is None
    assert facts["b_copies"] == 1 and facts["a_copies"] == 1, facts


def test_a_message_the_store_cannot_take_is_not_shown_sent(start_cluster_node, redis_server,
                                                           tmp_path):
    """Redis goes away: a message that cannot be stored is refused (1004), and the page
    says so and gives its text back, instead of showing it as sent."""
    node = start_cluster_node(name="a")
    report = run_scenario("store-down", node, tmp_path, {"stop-redis": redis_server.stop})
    assert_ok(report)
    facts = report["facts"]
    assert facts["whole"]["note"] is None and not facts["whole"]["pending"], facts["whole"]
    refused = [e for e in facts["errors"] if e.startswith("Message not sent: ")]
    assert len(refused) == 1 and refused[0].endswith("(1004)"), facts["errors"]
    assert facts["own"] is None, "the refused line is still shown"
    assert facts["input"] == facts["line"]
    assert facts["b_has"] is False


def test_a_waiting_message_is_given_back_when_the_page_stops(make_node, tmp_path):
    """The node comes back wanting sign-in, which the page lacks: the page stops trying,
    and the line that waited is not sent but back in the message box."""
    node = make_node(name="closing")
    report = run_scenario("given-up", node, tmp_path, restartable(node, closed=True))
    assert_ok_but_refused_requests(report)
    facts = report["facts"]
    waiting = facts["while_down"]
    assert waiting and waiting["pending"] and waiting["note"] == WAITING, waiting
    assert facts["after_refusal"] is None, "the line is still shown"
    assert "Message not sent: not connected to the server" in facts["errors"], facts
    assert facts["input"] == facts["line"]
    # stopped: a new send is refused at once, and the text stays
    assert facts["errors_after_second"].count(
        "Message not sent: not connected to the server") == 2, facts
    assert facts["input_after_second"] == facts["line"] and facts["own_after_second"] is None
    assert facts["posts"] == 0


# -- rooms, history and recovery --------------------------------------------------------------

RECOVERY_FAILED = "Reconnected. Messages sent meanwhile could not be recovered; these are the room's latest."


def test_history_is_shown_after_a_reload(node, tmp_path):
    report = run_scenario("history", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    for line in facts["lines"]:
        assert facts["a_texts"].count(line) == 1, facts["a_texts"]
        assert facts["c_texts"].count(line) == 1, facts["c_texts"]
    # in the order they were said
    positions = [facts["a_texts"].index(line) for line in facts["lines"]]
    assert positions == sorted(positions)
    assert facts["named_line"] not in facts["a_texts"]  # it belongs to the named room
    assert facts["named_texts"].count(facts["named_line"]) == 1, facts["named_texts"]
    assert len(facts["rooms_after_reload"]) == 1  # the room is kept over the reload
    assert facts["c_rooms"] == []                 # another browser has its own list


def test_a_restarted_node_makes_the_page_reload_history(make_node, tmp_path):
    """An embedded node keeps its streams in memory: after a restart they have a new
    epoch, recovery is impossible, and the page loads the history again."""
    node = make_node(name="restarting")
    report = run_scenario("restart", node, tmp_path, restartable(node))
    assert_ok_but_refused_requests(report)
    facts = report["facts"]
    lines = facts["lines"]
    assert RECOVERY_FAILED in facts["a_app_notices"], facts["a_app_notices"]
    # the history after the restart holds only what was said after it; nothing is twice
    assert lines["app_before"] not in facts["a_app_texts"], facts["a_app_texts"]
    assert facts["a_app_texts"].count(lines["after"]) == 1, facts["a_app_texts"]
    assert facts["a_named_texts"].count(lines["named_after"]) == 1, facts["a_named_texts"]
    all_texts = facts["a_all_texts"]
    assert len(all_texts) == len(set(all_texts)), all_texts


def test_a_short_disconnect_is_recovered(node, tmp_path):
    """The node stays up; A's socket is closed and A is kept away for a moment."""
    report = run_scenario("recovery", node, tmp_path)
    assert_ok_but_refused_requests(report)
    facts = report["facts"]
    assert facts["turned_away"] >= 1, "A was never kept away"
    # the line typed meanwhile was shown pending and sent only after the new login
    typed = facts["typed_while_away"]
    assert typed and typed["pending"] and typed["note"] == WAITING, typed
    assert facts["publishes_while_away"] == 0
    # recovered, each once, in order, with a word of how many
    app = facts["app_texts"]
    assert [app.count(line) for line in facts["missed_app"]] == [1, 1, 1], app
    assert [app.index(line) for line in facts["missed_app"]] == sorted(
        app.index(line) for line in facts["missed_app"])
    assert "3 messages while you were away" in facts["app_notices"]
    assert RECOVERY_FAILED not in facts["app_notices"]
    assert facts["room_unread"] == "2"
    room = facts["room_texts"]
    assert room.count(facts["first"]) == 1, room
    assert [room.count(line) for line in facts["missed_room"]] == [1, 1], room
    assert "2 messages while you were away" in facts["room_notices"]
    assert facts["room_unread_after_open"] == ""
    assert facts["typed"] in app and app.count(facts["typed"]) == 1
    # the page asked to recover from where it was, in both rooms
    rejoins = [j for j in facts["joins"] if "since" in j]
    assert sorted(j["room"] for j in rejoins) == ["", facts["room"]], rejoins
    for join in rejoins:
        assert isinstance(join["since"]["epoch"], str) and join["since"]["epoch"]
        # A saw the named room's first line; the app room may have been quiet until then
        assert join["since"]["offset"] >= (1 if join["room"] else 0), join


def test_two_pages_talk_in_a_named_room(node, tmp_path):
    report = run_scenario("named-room", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    lines = facts["lines"]
    name_a, name_b = lines["names"]
    assert sorted(facts["a_room_online"]) == sorted([name_a, name_b])
    assert facts["room_title"] == " › " + lines["room"]
    # the room's lines stay in the room: not in A's app room, not on C, who did not join
    for line in [lines["hello"], lines["reply"]] + lines["unseen"]:
        assert line not in facts["a_app_texts"]
        assert line not in facts["c_texts"]
    assert facts["unread_after_open"] == ""
    for line in lines["unseen"]:
        assert facts["a_room_texts"].count(line) == 1
    assert facts["b_rooms"] == [] and facts["b_rooms_after_reload"] == []


# -- private conversations, the offline inbox, images -----------------------------------------

def test_two_users_talk_privately(node, tmp_path):
    """A opens a conversation with B from the online list; B sees it in the room list with
    an unread count, opens it and replies; C and the app room see nothing of it; a reload
    shows the conversation again from the inbox."""
    report = run_scenario("private", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    lines = facts["lines"]
    name_a, name_b, name_c = lines["names"]
    assert facts["a_title"] == f" › {name_b} (private)"
    assert facts["a_conversations"] == [name_b]
    assert facts["b_conversations"] == [name_a]
    assert facts["b_shown_before"] == ""  # B was not taken away from the room it showed
    for line in lines["a"] + [lines["reply"]]:
        assert line not in facts["b_app_texts"] and line not in facts["c_texts"], line
    assert facts["c_conversations"] == []
    assert facts["b_unread_after_open"] == ""
    assert facts["b_texts"] == lines["a"], facts["b_texts"]
    assert facts["a_texts"] == lines["a"] + [lines["reply"]], facts["a_texts"]
    assert facts["a_unread_shown"] == ""  # the conversation shown: nothing unread
    assert facts["send_frames"] == [["msg", "msgID", "to", "type"]], facts["send_frames"]
    assert facts["b_acks"] and facts["b_acks"] == sorted(facts["b_acks"]), facts["b_acks"]
    assert all(facts["b_logins"]), facts["b_logins"]  # logged in as a device
    assert facts["a_conversations_after_reload"] == [name_b]
    assert facts["a_texts_after_reload"] == lines["a"] + [lines["reply"]], facts["a_texts_after_reload"]


def test_messages_sent_while_away_arrive_at_the_next_login(node, tmp_path):
    """B closes its page, A writes three lines. B's browser comes back (same name, same
    device): the lines arrive at login as unread, are shown once beside what B read
    before, acknowledged, and do not come again at the next login."""
    report = run_scenario("offline-inbox", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    lines = facts["lines"]
    name_a, name_b = lines["names"]
    assert facts["b_name_again"] == name_b
    devices = facts["devices"]
    assert len(devices) == 3 and devices[0] and len(set(devices)) == 1, devices
    inbox = facts["login_replies"][0]["inbox"]
    assert inbox["unacked"] == 3, facts["login_replies"]
    for line in lines["missed"] + [lines["first"]]:
        assert line not in facts["b_app_texts"]
    assert facts["b_texts"] == [lines["first"]] + lines["missed"], facts["b_texts"]
    assert facts["b_unread_after_open"] == ""
    assert facts["acks"] and max(facts["acks"]) == inbox["offset"], (facts["acks"], inbox)
    after = facts["login_replies_after_reload"][0]["inbox"]
    assert after["unacked"] == 0 and after["epoch"] == inbox["epoch"], after
    assert facts["unread_after_reload"] == ""
    assert facts["a_online"] == "online"


def test_an_image_is_uploaded_and_shown_inline(node, tmp_path):
    report = run_scenario("image", node, tmp_path)
    assert_ok(report)
    facts = report["facts"]
    name_a, name_b, backend = facts["names"]
    file_url = re.compile(r"/files/[A-Za-z0-9_-]{24}\.png")
    (own,) = facts["a_images"]
    (seen,) = facts["b_images"]
    assert file_url.fullmatch(own["src"]) and own["src"] == seen["src"], (own, seen)
    assert (own["width"], own["height"]) == (3, 2) and (seen["width"], seen["height"]) == (3, 2)
    assert own["own"] and not own["pending"] and own["from"] == name_a
    assert not seen["own"] and seen["from"] == name_a and seen["testid"] == "message-image"
    assert facts["publishes"] == [{"type": "image", "msg": own["src"]}], facts["publishes"]
    (private,) = facts["b_private_images"]
    assert file_url.fullmatch(private["src"]) and (private["width"], private["height"]) == (1, 1)
    # another type, and an image elsewhere than this server's files: text, no <img>
    assert facts["backend_texts"] == [f"{backend}: {facts['foreign']}", f"{backend}: a sticker"]
    assert facts["backend_images"] == []
    (refusal,) = facts["refusal"]
    assert refusal.startswith("Image not sent: the file must be an image") and refusal.endswith("(1001)."), refusal
