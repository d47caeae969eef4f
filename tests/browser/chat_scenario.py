"""Drive the chat page in Debian's Chromium with Playwright, and print what happened as JSON.

Run by tests/test_chat_page.py in a separate, plain interpreter: the test process is
gevent-patched (tests/conftest.py), and Playwright's sync API runs its own asyncio loop and
greenlets, which is no place to mix with a patched process that also serves the node.

    python tests/browser/chat_scenario.py --scenario chat --http-url http://127.0.0.1:8080 \
        --out-dir /tmp/shots

A scenario that needs the node stopped, started or changed asks the test for it: it prints
{"ask": "<action>"} on a line of its own and reads "done <action>" (or why it failed) from stdin.

The last line on stdout is one JSON object:
    {"ok": bool, "step": "<last step started>", "error": "<why it stopped>" or null,
     "facts": {...}, "page_errors": [...], "console_errors": [...], "diagnostics": {...}}
"ok" is true when every step passed; "facts" holds what the steps saw, for the test to
assert on. Exit status 0 when the JSON was printed, whatever it says.
"""
import argparse
import json
import os
import re
import secrets
import struct
import sys
import time
import traceback
import urllib.parse
import urllib.request
import zlib

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 15000  # one step's wait; the page itself retries within 1 s
RECONNECT_WAIT_MS = 40000  # a page whose node was down: its backoff has grown to up to 30 s

# JavaScript run in the page (arguments come in through Playwright, never by string building).
JS_STATUS = "() => document.querySelector('[data-testid=status]').getAttribute('data-state')"
JS_ONLINE_NAMES = """() => Array.from(document.querySelectorAll(
    '[data-testid=online-list] [data-testid=online-user]')).map(e => e.textContent)"""
JS_HAS_ONLINE = """(name) => Array.from(document.querySelectorAll(
    '[data-testid=online-list] [data-testid=online-user]')).some(e => e.textContent === name)"""
JS_HAS_NOTICE = """(text) => Array.from(document.querySelectorAll(
    '[data-testid=messages] [data-testid=notice]')).some(e => e.textContent === text)"""
JS_HAS_MESSAGE = """([text, own]) => Array.from(document.querySelectorAll(
    '[data-testid=messages] [data-testid=message]')).some(e => e.textContent === text
        && (own === null || e.classList.contains('own') === own)
        && !e.classList.contains('pending'))"""
JS_MESSAGE_SENT = """(text) => Array.from(document.querySelectorAll(
    '[data-testid=messages] [data-testid=message].own')).some(e => e.textContent === text
        && !e.classList.contains('pending'))"""
JS_MESSAGES = """() => Array.from(document.querySelectorAll(
    '[data-testid=messages] > *')).map(e => e.getAttribute('data-testid') + ': ' + e.textContent)"""
JS_XSS_STATE = """() => ({xss: typeof window.__xss,
    imgs: document.querySelectorAll('[data-testid=messages] img').length})"""
JS_IN_VIEW = """(testid) => {
    const el = document.querySelector('[data-testid=' + testid + ']');
    if (!el) return {found: false};
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return {found: true, left: r.left, top: r.top, right: r.right, bottom: r.bottom,
            width: r.width, height: r.height, visibility: style.visibility, display: style.display,
            inViewport: r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
                        && r.right <= window.innerWidth && r.bottom <= window.innerHeight};
}"""


class StepFailed(Exception):
    pass


class Run:
    """Collects facts, errors and the name of the step in progress."""

    def __init__(self, other_url=""):
        self.other_url = other_url  # a second node of the same cluster, when the test has one
        self.step = "start"
        self.facts = {}
        self.page_errors = []
        self.console_errors = []
        self.pages = {}

    def watch(self, label, page):
        self.pages[label] = page
        page.on("pageerror", lambda exc: self.page_errors.append(f"{label}: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(
            f"{label}: {msg.text}"))

    def wait(self, page, js, arg=None, what="", timeout=WAIT_MS):
        try:
            page.wait_for_function(js, arg=arg, timeout=timeout)
        except Exception as exc:  # Playwright's TimeoutError and friends
            raise StepFailed(f"{what or js}: not seen within {timeout} ms ({type(exc).__name__})")

    def ask(self, action):
        """Have the test do ``action`` (stop the node, ...) and wait until it is done."""
        sys.stdout.write(json.dumps({"ask": action}) + "\n")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip()
        if answer != f"done {action}":
            raise StepFailed(f"the test could not {action}: {answer or 'no answer'}")

    def diagnostics(self):
        out = {}
        for label, page in self.pages.items():
            try:
                if page.is_closed():
                    continue
                out[label] = {"status": page.locator("[data-testid=status]").text_content(),
                              "my_name": page.locator("[data-testid=my-name]").text_content(),
                              "online": page.evaluate(JS_ONLINE_NAMES),
                              "messages": page.evaluate(JS_MESSAGES)[-30:]}
            except Exception as exc:
                out[label] = {"unavailable": f"{type(exc).__name__}: {exc}"}
        return out


def open_chat(run, browser, label, url, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    run.watch(label, page)
    response = page.goto(url, wait_until="domcontentloaded")
    if response is None or response.status != 200:
        raise StepFailed(f"GET {url} answered {response and response.status}")
    run.wait(page, "() => document.querySelector('[data-testid=status]')"
             ".getAttribute('data-state') === 'online'", what=f"{label} status online")
    name = page.locator("[data-testid=my-name]").text_content()
    return context, page, name


def scenario_chat(run, browser, http_url, out_dir):
    url = f"{http_url}/home/index?appID=101"

    run.step = "A opens the page"
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url)
    run.facts["name_a"] = name_a
    run.facts["a_connected_notice"] = page_a.evaluate(JS_HAS_NOTICE, f"You are connected as {name_a}")
    run.wait(page_a, JS_HAS_ONLINE, name_a, "A lists itself")

    run.step = "room links"
    links = page_a.locator("[data-testid=room-link]")
    run.facts["room_links"] = [links.nth(i).get_attribute("href") for i in range(links.count())]
    run.facts["current_room_link"] = page_a.locator(
        "[data-testid=room-link][aria-current=page]").text_content()

    run.step = "B opens the page"
    ctx_b, page_b, name_b = open_chat(run, browser, "B", url)
    for _ in range(3):
        # The names are random; the same one twice would make B replace A (and stop A).
        if name_b != name_a:
            break
        ctx_b.close()
        ctx_b, page_b, name_b = open_chat(run, browser, "B", url)
    run.facts["name_b"] = name_b
    run.facts["names_differ"] = name_a != name_b
    run.wait(page_b, JS_HAS_ONLINE, name_a, "B lists A (from /user/list)")

    run.step = "A sees B join"
    run.wait(page_a, JS_HAS_ONLINE, name_b, "B in A's online list")
    run.wait(page_a, JS_HAS_NOTICE, f"{name_b} joined", "'joined' notice on A")
    run.facts["a_online_after_join"] = page_a.evaluate(JS_ONLINE_NAMES)

    run.step = "A sends a line"
    line = f"hello from A {secrets.token_hex(4)} 你好"
    page_a.locator("[data-testid=message-input]").fill(line)
    page_a.locator("[data-testid=send-button]").click()
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {line}", False], "A's line on B")
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_a}: {line}", True], "A's own bubble on A")
    run.facts["line_delivered"] = True
    run.facts["input_cleared"] = page_a.locator("[data-testid=message-input]").input_value() == ""

    run.step = "B sends with the Enter key"
    reply = f"reply from B {secrets.token_hex(4)}"
    page_b.locator("[data-testid=message-input]").fill(reply)
    page_b.locator("[data-testid=message-input]").press("Enter")
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {reply}", False], "B's reply on A")
    run.facts["enter_key_sends"] = True

    run.step = "an empty message is not sent"
    before = page_a.evaluate("() => document.querySelectorAll('[data-testid=message]').length")
    page_a.locator("[data-testid=message-input]").fill("   ")
    page_a.locator("[data-testid=send-button]").click()
    page_a.wait_for_timeout(300)
    after = page_a.evaluate("() => document.querySelectorAll('[data-testid=message]').length")
    run.facts["empty_not_sent"] = before == after

    run.step = "A sends markup"
    markup = '<img src=x onerror="window.__xss=1">'
    page_a.locator("[data-testid=message-input]").fill(markup)
    page_a.locator("[data-testid=send-button]").click()
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {markup}", False], "the markup as text on B")
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_a}: {markup}", True], "the markup as text on A")
    page_a.wait_for_timeout(500)  # give a would-be onerror handler time to run
    run.facts["xss_a"] = page_a.evaluate(JS_XSS_STATE)
    run.facts["xss_b"] = page_b.evaluate(JS_XSS_STATE)

    run.step = "B leaves"
    page_b.close()
    ctx_b.close()
    run.wait(page_a, JS_HAS_NOTICE, f"{name_b} left", "'left' notice on A")
    run.wait(page_a, f"(name) => !({JS_HAS_ONLINE})(name)", name_b, "B gone from A's list")
    run.facts["a_online_after_leave"] = page_a.evaluate(JS_ONLINE_NAMES)
    run.facts["a_status_at_end"] = page_a.evaluate(JS_STATUS)

    if out_dir:
        run.step = "screenshot"
        path = os.path.join(out_dir, "chat-desktop.png")
        page_a.screenshot(path=path, full_page=False)
        run.facts["screenshot"] = path
    ctx_a.close()


def scenario_mobile(run, browser, http_url, out_dir):
    url = f"{http_url}/home/index?appID=101"
    run.step = "phone-sized page opens"
    context, page, name = open_chat(run, browser, "phone", url, viewport={"width": 375, "height": 667},
                                    device_scale_factor=2, is_mobile=True, has_touch=True)
    run.facts["name"] = name

    run.step = "layout at 375x667"
    path = os.path.join(out_dir, "chat-375x667.png")
    page.screenshot(path=path, full_page=False)
    run.facts["screenshot"] = path
    run.facts["input"] = page.evaluate(JS_IN_VIEW, "message-input")
    run.facts["send_button"] = page.evaluate(JS_IN_VIEW, "send-button")
    run.facts["status"] = page.evaluate(JS_IN_VIEW, "status")
    run.facts["input_visible"] = page.locator("[data-testid=message-input]").is_visible()
    run.facts["send_visible"] = page.locator("[data-testid=send-button]").is_visible()
    run.facts["scroll_width"] = page.evaluate("() => document.documentElement.scrollWidth")
    run.facts["online_list_hidden"] = not page.locator("[data-testid=online-list]").is_visible()

    run.step = "the online drawer opens"
    page.locator("#online-toggle").click()
    run.wait(page, JS_HAS_ONLINE, name, "own name in the opened drawer")
    page.wait_for_timeout(400)  # the drawer slides in
    run.facts["online_list_opens"] = page.locator("[data-testid=online-list]").is_visible()
    page.screenshot(path=os.path.join(out_dir, "chat-375x667-online.png"), full_page=False)
    context.close()


def scenario_refused(run, browser, http_url, out_dir):
    """The login asks for a room the node does not serve: the page shows 1003 and stays down.

    The page's login frame is rewritten on its way to the real node (appID 999). The page
    itself is served untouched: Chromium refuses a loopback WebSocket from a document that
    a route fulfilled (local network access checks)."""
    url = f"{http_url}/home/index?appID=101"
    context = browser.new_context()
    page = context.new_page()
    run.watch("refused", page)
    sockets = []

    def other_room(ws):
        server = ws.connect_to_server()
        sockets.append(ws)

        def forward(message):
            try:
                frame = json.loads(message)
            except (TypeError, ValueError):
                frame = None
            if isinstance(frame, dict) and frame.get("cmd") == "login":
                frame["data"]["appID"] = 999
                message = json.dumps(frame)
                run.facts["login_rewritten"] = True
            server.send(message)

        ws.on_message(forward)

    page.route_web_socket(re.compile(r".*/acc$"), other_room)
    run.step = "login to a closed room"
    page.goto(url, wait_until="domcontentloaded")
    run.wait(page, "() => document.querySelector('[data-testid=status]')"
             ".getAttribute('data-state') === 'error'", what="status error")
    run.facts["banner"] = page.locator("#banner").text_content()
    run.facts["banner_visible"] = page.locator("#banner").is_visible()
    page.wait_for_timeout(2500)  # a reconnect would be due by now
    run.facts["sockets"] = len(sockets)
    run.facts["status_after_wait"] = page.evaluate(JS_STATUS)
    if out_dir:
        page.screenshot(path=os.path.join(out_dir, "chat-refused.png"))
    context.close()


def scenario_reconnect(run, browser, http_url, out_dir):
    """The server closes the socket: the page logs in again, except when replaced (4000)."""
    url = f"{http_url}/home/index?appID=101"
    context = browser.new_context()
    page = context.new_page()
    run.watch("reconnect", page)
    routes = []

    def through(ws):
        ws.connect_to_server()
        routes.append(ws)

    page.route_web_socket(re.compile(r".*/acc$"), through)
    run.step = "first login"
    response = page.goto(url, wait_until="domcontentloaded")
    if response is None or response.status != 200:
        raise StepFailed(f"GET {url} answered {response and response.status}")
    run.wait(page, "() => document.querySelector('[data-testid=status]')"
             ".getAttribute('data-state') === 'online'", what="status online")
    name = page.locator("[data-testid=my-name]").text_content()
    connected = f"You are connected as {name}"
    count_connected = """(text) => Array.from(document.querySelectorAll(
        '[data-testid=messages] [data-testid=notice]')).filter(e => e.textContent === text).length"""

    run.step = "server closes with 4001"
    routes[-1].close(code=4001, reason="heartbeat timeout")
    run.wait(page, JS_HAS_NOTICE, "Disconnected by the server: heartbeat timeout (code 4001)",
             "the close reason")
    run.wait(page, f"(text) => ({count_connected})(text) === 2", connected, "a second login")
    run.facts["status_after_reconnect"] = page.evaluate(JS_STATUS)
    run.facts["sockets_after_reconnect"] = len(routes)
    run.facts["name_kept"] = page.locator("[data-testid=my-name]").text_content() == name

    run.step = "server closes with 4000 (replaced)"
    routes[-1].close(code=4000, reason="logged in elsewhere")
    run.wait(page, "() => document.querySelector('[data-testid=status]')"
             ".getAttribute('data-state') === 'offline'", what="status offline")
    page.wait_for_timeout(2500)  # a reconnect would be due by now
    run.facts["sockets_after_replaced"] = len(routes)
    run.facts["status_after_replaced"] = page.evaluate(JS_STATUS)
    run.facts["banner"] = page.locator("#banner").text_content()
    if out_dir:
        page.screenshot(path=os.path.join(out_dir, "chat-replaced.png"))
    context.close()


class Relay:
    """Routes a page's /acc sockets through this process, frame by frame, to the real
    node: it sees what the page sends, may answer a request itself instead of the node
    (``answer``), lose the node's reply to one (``lose``), close the page's socket as
    the node would (``close``), and turn reconnects away while ``hold`` is set."""

    def __init__(self, page):
        self.routes = []
        self.sent = []        # frames the page sent, parsed
        self.answer = None    # fn(frame) -> reply frame (dict) or None to pass it on
        self.lose = None      # fn(frame) -> True: the node's reply to it is lost
        self.lost = set()     # seqs whose replies are lost
        self.hold = False
        self.turned_away = 0
        page.route_web_socket(re.compile(r".*/acc$"), self._route)

    def _route(self, ws):
        if self.hold:
            self.turned_away += 1
            ws.close(code=1013, reason="try again later")
            return
        server = ws.connect_to_server()
        self.routes.append(ws)

        def from_page(message):
            try:
                frame = json.loads(message)
            except (TypeError, ValueError):
                frame = None
            if isinstance(frame, dict):
                self.sent.append(frame)
                reply = self.answer(frame) if self.answer else None
                if reply is not None:
                    ws.send(json.dumps(reply, ensure_ascii=False))
                    return
                if self.lose and self.lose(frame):
                    self.lost.add(frame.get("seq"))
            server.send(message)

        def from_node(message):
            try:
                frame = json.loads(message)
            except (TypeError, ValueError):
                frame = None
            if isinstance(frame, dict) and frame.get("seq") in self.lost \
                    and frame.get("cmd") not in ("msg", "enter", "exit"):
                self.lost.discard(frame.get("seq"))
                ws.close(code=1001, reason="server going away")
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_node)

    def close(self, code=1001, reason="server going away"):
        self.routes[-1].close(code=code, reason=reason)

    def cmds(self, cmd):
        return [f for f in self.sent if f.get("cmd") == cmd]


def refusal(code, detail=None):
    """A fake error reply to a publish frame."""
    def answer(frame):
        if frame.get("cmd") != "publish":
            return None
        response = {"code": code, "codeMsg": "x", "data": None}
        if detail:
            response["detail"] = detail
        return {"seq": frame["seq"], "cmd": "publish", "response": response}
    return answer


def scenario_send_errors(run, browser, http_url, out_dir):
    """Failed sends: an error answer gives a notice, no own bubble, and the text back in the
    input; a send whose answer never came waits, and goes again after the next login with
    the same msgID."""
    url = f"{http_url}/home/index?appID=101"
    context = browser.new_context()
    page = context.new_page()
    run.watch("sender", page)
    relay = Relay(page)
    page.goto(url, wait_until="domcontentloaded")
    name = wait_online(run, page, "online")
    box = page.locator("[data-testid=message-input]")
    has_own = """(text) => Array.from(document.querySelectorAll(
        '[data-testid=messages] [data-testid=message].own')).some(e => e.textContent === text)"""

    run.step = "the server answers an error code"
    relay.answer = refusal(1004)
    box.fill("first try")
    page.locator("[data-testid=send-button]").click()
    run.wait(page, JS_HAS_NOTICE, "Message not sent: server error (1004)", "the error notice")
    run.facts["error_own_bubble"] = page.evaluate(has_own, f"{name}: first try")
    run.facts["error_input_back"] = box.input_value()

    run.step = "the server answers an error with a detail"
    detail = "msg is 20000 characters, more than app.maxMessageLength (16384)"
    relay.answer = refusal(1001, detail)
    page.locator("[data-testid=send-button]").click()
    run.wait(page, JS_HAS_NOTICE, f"Message not sent: {detail} (1001)", "the detail notice")
    run.facts["detail_notice"] = True
    relay.answer = None

    run.step = "the answer is lost with the connection"
    relay.lose = lambda frame: frame.get("cmd") == "publish"
    box.fill("second try")
    page.locator("[data-testid=send-button]").click()
    run.wait(page, JS_NOT_ONLINE, what="the connection dropped")
    relay.lose = None
    run.facts["tries_before_login"] = len(relay.cmds("publish")) - 2
    run.facts["waiting"] = page.evaluate(JS_OWN, f"{name}: second try")
    run.facts["publish_data"] = sorted(relay.cmds("publish")[-1].get("data", {}))

    run.step = "the page logs in again and sends it again"
    run.wait(page, JS_MESSAGE_SENT, f"{name}: second try", "the own bubble", timeout=RECONNECT_WAIT_MS)
    run.facts["errors"] = [t for t in page.evaluate(JS_ERROR_NOTICES)[2:]  # after the two above
                           if "not sent" in t]
    run.facts["input"] = box.input_value()
    run.facts["msgids"] = [f["data"]["msgID"] for f in relay.cmds("publish")
                           if f["data"].get("msg") == "second try"]
    run.facts["copies"] = sum(1 for t in page.evaluate(JS_MESSAGES)
                              if t.startswith(f"message: {name}: second try"))
    context.close()


JS_PAGE_CONFIG = "() => JSON.parse(document.getElementById('config').textContent)"
JS_ONLINE_AS = """(name) => document.querySelector('[data-testid=status]').getAttribute('data-state')
    === 'online' && document.querySelector('[data-testid=my-name]').textContent === name"""


def wait_online(run, page, what):
    run.wait(page, "() => document.querySelector('[data-testid=status]')"
             ".getAttribute('data-state') === 'online'", what=what)
    return page.locator("[data-testid=my-name]").text_content()


def rename(run, page, typed):
    """Type ``typed`` into the name form and save; the hint shown, if any."""
    if page.locator("[data-testid=name-form]").is_hidden():
        page.locator("[data-testid=name-edit]").click()
    box = page.locator("[data-testid=name-input]")
    box.fill("")
    box.type(typed)
    page.locator("[data-testid=name-save]").click()
    page.wait_for_timeout(300)
    hint = page.locator("[data-testid=name-hint]")
    return hint.text_content() if hint.is_visible() else ""


def scenario_names(run, browser, http_url, out_dir):
    """The name: ASCII by default, kept over reloads, room switches and in another tab of
    the same browser (a device of its own: neither tab replaces the other); the user
    chooses one (checked), and the room sees the change."""
    url = f"{http_url}/home/index?appID=101"
    context = browser.new_context()
    page = context.new_page()
    run.watch("A", page)
    frames = Frames(page)

    run.step = "the default name"
    page.goto(url, wait_until="domcontentloaded")
    first = wait_online(run, page, "A online")
    run.facts["default_name"] = first
    run.facts["guest_prefix"] = page.evaluate(JS_PAGE_CONFIG)["guestPrefix"]

    run.step = "reload keeps the name"
    page.reload(wait_until="domcontentloaded")
    run.facts["after_reload"] = wait_online(run, page, "A online after reload")

    run.step = "a room switch keeps the name"
    page.locator("[data-testid=room-link]", has_text="102").click()
    page.wait_for_url("**/home/index?appID=102")
    run.facts["after_room_switch"] = wait_online(run, page, "A online in room 102")
    run.facts["room_after_switch"] = page.evaluate(JS_PAGE_CONFIG)["appID"]

    run.step = "another tab has the same name, as another device"
    other = context.new_page()
    run.watch("A2", other)
    other_frames = Frames(other)
    other.goto(url, wait_until="domcontentloaded")
    run.facts["other_tab_name"] = wait_online(run, other, "second tab online")
    page.wait_for_timeout(1000)
    run.facts["first_tab_after_other"] = page.evaluate(JS_STATUS)
    run.facts["devices"] = [[f["data"].get("deviceID") for f in frames.cmds("login")][-1],
                            [f["data"].get("deviceID") for f in other_frames.cmds("login")][-1]]
    other.close()

    run.step = "names that cannot be used"
    page.goto(url, wait_until="domcontentloaded")
    wait_online(run, page, "A back in room 101")
    run.facts["hint_empty"] = rename(run, page, "   ")
    run.facts["hint_invisible"] = rename(run, page, "Zero\u200bWidth")
    box = page.locator("[data-testid=name-input]")
    box.fill("")
    box.type("x" * 25)  # the box takes 20 of them
    run.facts["too_long_kept_to"] = len(box.input_value())
    page.locator("#name-cancel").click()
    run.facts["name_after_refusals"] = page.locator("[data-testid=my-name]").text_content()

    run.step = "B watches the room"
    ctx_b = browser.new_context()
    page_b = ctx_b.new_page()
    run.watch("B", page_b)
    page_b.goto(url, wait_until="domcontentloaded")
    name_b = wait_online(run, page_b, "B online")
    run.wait(page_b, JS_HAS_ONLINE, first, "B lists A")

    run.step = "A chooses a name"
    typed = f"Zoë {secrets.token_hex(3)} 🦊"
    run.facts["typed"] = typed
    run.facts["hint_good"] = rename(run, page, typed)
    chosen = run.facts["guest_prefix"] + typed
    run.wait(page, JS_ONLINE_AS, chosen, "A online under the chosen name")
    run.facts["chosen_notice"] = page.evaluate(JS_HAS_NOTICE, f"You are connected as {chosen}")
    run.wait(page_b, JS_HAS_ONLINE, chosen, "B lists A's new name")
    run.wait(page_b, f"(name) => !({JS_HAS_ONLINE})(name)", first, "A's old name gone from B's list")
    run.facts["b_notices"] = [t for t in page_b.evaluate(JS_MESSAGES) if "notice" in t]

    run.step = "a name online in the room is refused"
    run.facts["hint_taken"] = rename(run, page_b, typed)
    run.facts["b_name_kept"] = page_b.locator("[data-testid=my-name]").text_content() == name_b
    page_b.locator("#name-cancel").click()

    run.step = "the chosen name stays over a reload"
    page.reload(wait_until="domcontentloaded")
    run.wait(page, JS_ONLINE_AS, chosen, "A online under the chosen name after a reload")
    run.facts["after_reload_chosen"] = page.locator("[data-testid=my-name]").text_content()
    run.facts["b_still_lists_chosen"] = page_b.evaluate(JS_HAS_ONLINE, chosen)
    if out_dir:
        page.locator("[data-testid=name-edit]").click()
        page.screenshot(path=os.path.join(out_dir, "chat-name.png"))
    ctx_b.close()
    context.close()


def scenario_unknown_room(run, browser, http_url, out_dir):
    """?appID=999: the page says there is no such room and shows the first one."""
    context = browser.new_context()
    page = context.new_page()
    run.watch("lost", page)
    run.step = "open a room that does not exist"
    page.goto(f"{http_url}/home/index?appID=999", wait_until="domcontentloaded")
    wait_online(run, page, "online in the first room")
    run.facts["notices"] = [t for t in page.evaluate(JS_MESSAGES) if t.startswith("notice")]
    run.facts["url"] = page.url
    run.facts["current_room"] = page.locator(
        "[data-testid=room-link][aria-current=page]").text_content()
    run.step = "a reload shows the room without the notice"
    page.reload(wait_until="domcontentloaded")
    wait_online(run, page, "online after the reload")
    run.facts["notices_after_reload"] = [t for t in page.evaluate(JS_MESSAGES)
                                         if t.startswith("notice")]
    if out_dir:
        page.screenshot(path=os.path.join(out_dir, "chat-unknown-room.png"))
    context.close()


def scenario_long_message(run, browser, http_url, out_dir):
    """The node allows 30 characters per message (app.maxMessageLength): the box takes no
    more, a counter shows what is left near the limit, and 30 characters are delivered."""
    url = f"{http_url}/home/index?appID=101"
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url)
    ctx_b, page_b, name_b = open_chat(run, browser, "B", url)
    box = page_a.locator("[data-testid=message-input]")
    counter = page_a.locator("[data-testid=char-counter]")

    run.step = "short text: no counter"
    box.type("a" * 20)
    run.facts["counter_visible_at_20"] = counter.is_visible()
    run.step = "near the limit: the counter"
    box.type("b" * 6)
    run.facts["counter_at_26"] = counter.text_content() if counter.is_visible() else None
    run.step = "past the limit: the box takes no more"
    box.type("c" * 10)
    run.facts["length_after_typing_36"] = len(box.input_value())
    run.facts["counter_at_limit"] = counter.text_content() if counter.is_visible() else None
    run.facts["counter_full_class"] = "full" in (counter.get_attribute("class") or "")
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-counter.png"))
    run.step = "the 30 characters are delivered"
    text = box.input_value()
    page_a.locator("[data-testid=send-button]").click()
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {text}", False], "the line on B")
    run.facts["delivered"] = text
    run.facts["counter_after_send"] = counter.is_visible()
    ctx_a.close()
    ctx_b.close()


def scenario_send_keyed(run, browser, http_url, out_dir):
    """The node wants auth.apiKey for the push API: the page, which sends over its own
    login, is not concerned."""
    url = f"{http_url}/home/index?appID=101"
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url)
    ctx_b, page_b, name_b = open_chat(run, browser, "B", url)
    run.step = "send"
    line = f"hello {secrets.token_hex(3)}"
    page_a.locator("[data-testid=message-input]").fill(line)
    page_a.locator("[data-testid=send-button]").click()
    run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {line}", "sent on A")
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {line}", False], "the line on B")
    run.facts["errors"] = page_a.evaluate(JS_ERROR_NOTICES)
    ctx_a.close()
    ctx_b.close()


# ---- sending while the connection is down, to a draining node, to part of the cluster ----

NOTE_WAITING = "waiting for the connection"
NOTE_RETRY = "not sent yet, will retry"
JS_OWN = """(text) => {
    const e = Array.from(document.querySelectorAll('[data-testid=messages] [data-testid=message].own'))
        .find(e => e.textContent === text);
    if (!e) return null;
    const note = e.querySelector('[data-testid=message-note]');
    return {pending: e.classList.contains('pending'), partial: e.classList.contains('partial'),
            busy: e.getAttribute('aria-busy'), msgID: e.getAttribute('data-msgid'),
            note: note && note.getAttribute('data-note'), label: note && note.getAttribute('aria-label'),
            title: note && note.title,
            shown: note && getComputedStyle(note, '::after').content,
            badge: note && getComputedStyle(note, '::before').content};
}"""
JS_NOT_ONLINE = """() => document.querySelector('[data-testid=status]')
    .getAttribute('data-state') !== 'online'"""
JS_ERROR_NOTICES = """() => Array.from(document.querySelectorAll(
    '[data-testid=messages] .notice.error')).map(e => e.textContent)"""
class Sends:
    """What a page sends over /acc, in order, watched and never touched: its login frames
    and its publish frames (msgID and text)."""

    def __init__(self, page):
        self.events = []  # ("login",) or ("post", msgID, message)
        page.on("websocket", lambda ws: ws.on("framesent", self.frame))

    def frame(self, payload):
        if not isinstance(payload, str):
            return
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
        if frame.get("cmd") == "login":
            self.events.append(("login",))
        elif frame.get("cmd") == "publish":
            self.events.append(("post", data.get("msgID", ""), data.get("msg", "")))

    def logins(self):
        return sum(1 for e in self.events if e[0] == "login")

    def posts(self):
        return [list(e[1:]) for e in self.events if e[0] == "post"]

    def logins_before_posts(self):
        """For each POST, how many logins the page had sent before it."""
        out, logins = [], 0
        for event in self.events:
            if event[0] == "login":
                logins += 1
            else:
                out.append(logins)
        return out


def open_pair(run, browser, url_a, url_b):
    """A on ``url_a``, B on ``url_b`` (the same room), each listing the other."""
    ctx_b, page_b, name_b = open_chat(run, browser, "B", url_b)
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url_a)
    if name_a == name_b:  # random names: the same twice would make A replace B
        raise StepFailed(f"both pages are named {name_a}")
    run.wait(page_b, JS_HAS_ONLINE, name_a, "B lists A")
    run.wait(page_a, JS_HAS_ONLINE, name_b, "A lists B")
    return (ctx_a, page_a, name_a), (ctx_b, page_b, name_b)


def scenario_send_while_down(run, browser, http_url, out_dir):
    """A's node stops (its clients closed with 1001) while B's node stays: what A types is
    held, not posted, and goes out in order, with its msgIDs, once A has logged in again."""
    room = "/home/index?appID=101"
    (ctx_a, page_a, name_a), (ctx_b, page_b, name_b) = open_pair(
        run, browser, http_url + room, run.other_url + room)
    sends = Sends(page_a)
    box = page_a.locator("[data-testid=message-input]")

    run.step = "A's node stops"
    run.ask("stop-node")
    run.wait(page_a, JS_NOT_ONLINE, what="A not online")
    run.facts["close_notice"] = page_a.evaluate(
        JS_HAS_NOTICE, "Disconnected by the server: server going away (code 1001)")

    run.step = "A types two lines while the connection is down"
    lines = [f"typed while down {secrets.token_hex(3)}", f"and a second one {secrets.token_hex(3)}"]
    box.fill(lines[0])
    box.press("Enter")
    box.fill(lines[1])
    page_a.locator("[data-testid=send-button]").click()
    run.facts["input_cleared"] = box.input_value() == ""
    page_a.wait_for_timeout(1500)  # a page that posts at once has had its answer by now
    run.facts["while_down"] = [page_a.evaluate(JS_OWN, f"{name_a}: {t}") for t in lines]
    run.facts["posts_while_down"] = len(sends.posts())
    run.facts["errors_while_down"] = [t for t in page_a.evaluate(JS_ERROR_NOTICES) if "not sent" in t]
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-waiting.png"))

    run.step = "A's node is back: A logs in again and sends"
    run.ask("start-node")
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {lines[1]}", False], "the second line on B",
             timeout=RECONNECT_WAIT_MS)
    run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {lines[1]}", "the second line sent on A")
    run.facts["b_lines"] = [t for t in page_b.evaluate(JS_MESSAGES)
                            if t.startswith(f"message: {name_a}: ")]
    run.facts["lines"] = [f"message: {name_a}: {t}" for t in lines]
    run.facts["after_login"] = [page_a.evaluate(JS_OWN, f"{name_a}: {t}") for t in lines]
    run.facts["posts"] = sends.posts()
    run.facts["logins_before_posts"] = sends.logins_before_posts()
    ctx_a.close()
    ctx_b.close()


def scenario_answer_lost(run, browser, http_url, out_dir):
    """A's message reaches its node, which delivers it to B, but the answer is lost: the
    node drains and stops. The message waits, goes again with its msgID after A's next
    login, the node answers that it has it already, and B has it once."""
    room = "/home/index?appID=101"
    ctx_b, page_b, name_b = open_chat(run, browser, "B", run.other_url + room)
    ctx_a = browser.new_context()
    page_a = ctx_a.new_page()
    run.watch("A", page_a)
    relay = Relay(page_a)
    page_a.goto(http_url + room, wait_until="domcontentloaded")
    name_a = wait_online(run, page_a, "A online")
    if name_a == name_b:
        raise StepFailed(f"both pages are named {name_a}")
    run.wait(page_a, JS_HAS_ONLINE, name_b, "A lists B")

    run.step = "A sends; the answer is lost"
    lost = []

    def lose(frame):
        if frame.get("cmd") == "publish" and not lost:
            lost.append(frame)
            relay.hold = True  # A stays away until the node has been restarted
            return True
        return False

    relay.lose = lose
    line = f"sent to a draining node {secrets.token_hex(3)}"
    page_a.locator("[data-testid=message-input]").fill(line)
    page_a.locator("[data-testid=send-button]").click()
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {line}", False], "the line on B")
    run.wait(page_a, JS_NOT_ONLINE, what="A not online")
    run.facts["after_loss"] = page_a.evaluate(JS_OWN, f"{name_a}: {line}")
    run.ask("stop-node")
    page_a.wait_for_timeout(1500)
    run.facts["while_down"] = page_a.evaluate(JS_OWN, f"{name_a}: {line}")
    run.facts["publishes_before_login"] = len(relay.cmds("publish"))

    run.step = "the node is back: A sends it again"
    run.ask("start-node")
    relay.hold = False
    run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {line}", "the line sent on A",
             timeout=RECONNECT_WAIT_MS)
    page_b.wait_for_timeout(500)
    run.facts["after_login"] = page_a.evaluate(JS_OWN, f"{name_a}: {line}")
    run.facts["msgids"] = [f["data"]["msgID"] for f in relay.cmds("publish")]
    run.facts["logins_before_last"] = sum(1 for f in relay.sent[:relay.sent.index(
        relay.cmds("publish")[-1])] if f.get("cmd") == "login")
    run.facts["b_copies"] = sum(1 for t in page_b.evaluate(JS_MESSAGES)
                                if t == f"message: {name_a}: {line}")
    run.facts["a_copies"] = sum(1 for t in page_a.evaluate(JS_MESSAGES)
                                if t == f"message: {name_a}: {line}")
    ctx_a.close()
    ctx_b.close()


def scenario_store_down(run, browser, http_url, out_dir):
    """The cluster store goes away: a message that cannot be stored is not taken, and the
    page says so, in the server's words, and gives its text back."""
    room = f"{http_url}/home/index?appID=101"
    (ctx_a, page_a, name_a), (ctx_b, page_b, name_b) = open_pair(run, browser, room, room)
    box = page_a.locator("[data-testid=message-input]")

    run.step = "a line while the cluster is whole"
    whole = f"everyone gets this {secrets.token_hex(3)}"
    box.fill(whole)
    box.press("Enter")
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {whole}", False], "the first line on B")
    run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {whole}", "the first line sent")
    run.facts["whole"] = page_a.evaluate(JS_OWN, f"{name_a}: {whole}")

    run.step = "a line while Redis is down"
    run.ask("stop-redis")
    part = f"nobody gets this {secrets.token_hex(3)}"
    box.fill(part)
    box.press("Enter")
    run.wait(page_a, """() => Array.from(document.querySelectorAll(
        '[data-testid=messages] .notice.error')).some(e => e.textContent.startsWith('Message not sent: '))""",
             what="the refusal notice")
    page_b.wait_for_timeout(500)
    run.facts["errors"] = page_a.evaluate(JS_ERROR_NOTICES)
    run.facts["own"] = page_a.evaluate(JS_OWN, f"{name_a}: {part}")
    run.facts["input"] = box.input_value()
    run.facts["line"] = part
    run.facts["b_has"] = page_b.evaluate(JS_HAS_MESSAGE, [f"{name_a}: {part}", None])
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-store-down.png"))
    ctx_a.close()
    ctx_b.close()


def scenario_given_up(run, browser, http_url, out_dir):
    """A line waits while the node is down; the node comes back wanting sign-in, which the
    page does not have: the page stops, and the line is not sent but given back."""
    context, page, name = open_chat(run, browser, "A", f"{http_url}/home/index?appID=101")
    sends = Sends(page)
    box = page.locator("[data-testid=message-input]")

    run.step = "the node stops; a line waits"
    run.ask("stop-node")
    run.wait(page, JS_NOT_ONLINE, what="not online")
    line = f"never sent {secrets.token_hex(3)}"
    box.fill(line)
    box.press("Enter")
    page.wait_for_timeout(1500)
    run.facts["while_down"] = page.evaluate(JS_OWN, f"{name}: {line}")

    run.step = "the node is back and refuses the login"
    run.ask("start-node-closed")
    run.wait(page, "() => document.querySelector('[data-testid=status]')"
             ".getAttribute('data-state') === 'error'", what="status error",
             timeout=RECONNECT_WAIT_MS)
    page.wait_for_timeout(300)
    run.facts["after_refusal"] = page.evaluate(JS_OWN, f"{name}: {line}")
    run.facts["errors"] = page.evaluate(JS_ERROR_NOTICES)
    run.facts["input"] = box.input_value()
    run.facts["line"] = line

    run.step = "send while stopped"
    page.locator("[data-testid=send-button]").click()
    page.wait_for_timeout(500)
    run.facts["errors_after_second"] = page.evaluate(JS_ERROR_NOTICES)
    run.facts["input_after_second"] = box.input_value()
    run.facts["own_after_second"] = page.evaluate(JS_OWN, f"{name}: {line}")
    run.facts["posts"] = len(sends.posts())
    context.close()


# ---- rooms, history and recovery ----

JS_TEXTS = """() => Array.from(document.querySelectorAll(
    '[data-testid=messages] [data-testid=message]')).map(e => e.textContent)"""
JS_ALL_TEXTS = """() => Array.from(document.querySelectorAll(
    'ol.messages [data-testid=message]')).map(e => e.textContent)"""
JS_ROOMS = """() => Array.from(document.querySelectorAll('[data-testid=named-room]'))
    .map(e => e.getAttribute('data-room'))"""
JS_UNREAD = """(room) => {
    const entry = room === '' ? document.querySelector('[data-testid=room-link][aria-current=page]')
        : document.querySelector('[data-testid=named-room][data-room="' + CSS.escape(room) + '"]');
    const badge = entry && entry.querySelector('[data-testid=unread]');
    return badge && !badge.hidden ? badge.textContent : '';
}"""
JS_SHOWN_ROOM = """() => document.querySelector('[data-testid=messages]').getAttribute('data-room')"""
JS_NOTICES = """() => Array.from(document.querySelectorAll(
    '[data-testid=messages] [data-testid=notice]')).map(e => e.textContent)"""
RECOVERY_FAILED = "Reconnected. Messages sent meanwhile could not be recovered; these are the room's latest."


def say(page, text):
    page.locator("[data-testid=message-input]").fill(text)
    page.locator("[data-testid=message-input]").press("Enter")


def join_room(run, page, room):
    """Join a named room through the room form; the room is shown."""
    page.locator("[data-testid=room-add]").click()
    page.locator("[data-testid=room-input]").fill(room)
    page.locator("[data-testid=room-join]").click()
    run.wait(page, "(room) => document.querySelector('[data-testid=messages]')"
             ".getAttribute('data-room') === room", room, f"room {room} shown")


def show_room(page, room):
    if room == "":
        page.locator("[data-testid=room-link][aria-current=page]").click()
    else:
        page.locator(f"[data-testid=named-room][data-room='{room}'] .room-open").click()


def count(texts, text):
    return sum(1 for t in texts if t == text)


def scenario_history(run, browser, http_url, out_dir):
    """What was said stays: a reload shows the app room's and a named room's last
    messages, each once, and the named room is still in the list."""
    url = f"{http_url}/home/index?appID=101"
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url)
    tag = secrets.token_hex(3)
    room = f"hist-{tag}"

    run.step = "A says three lines in the app room and one in a named room"
    lines = [f"history {tag} line {i}" for i in range(3)]
    for line in lines:
        say(page_a, line)
        run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {line}", f"{line} sent")
    join_room(run, page_a, room)
    named_line = f"in {room}"
    say(page_a, named_line)
    run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {named_line}", "the named room's line sent")

    run.step = "A reloads"
    page_a.reload(wait_until="domcontentloaded")
    wait_online(run, page_a, "A online after the reload")
    for line in lines:
        run.wait(page_a, JS_HAS_MESSAGE, [f"{name_a}: {line}", True], f"{line} from history")
    run.facts["a_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["lines"] = [f"{name_a}: {line}" for line in lines]
    run.facts["rooms_after_reload"] = page_a.evaluate(JS_ROOMS)
    show_room(page_a, room)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_a}: {named_line}", True], "the named room's history")
    run.facts["named_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["named_line"] = f"{name_a}: {named_line}"

    run.step = "another page opens the app room"
    ctx_c, page_c, name_c = open_chat(run, browser, "C", url)
    run.wait(page_c, JS_HAS_MESSAGE, [f"{name_a}: {lines[-1]}", False], "the lines on C")
    run.facts["c_texts"] = page_c.evaluate(JS_TEXTS)
    run.facts["c_rooms"] = page_c.evaluate(JS_ROOMS)
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-history.png"))
    ctx_a.close()
    ctx_c.close()


def scenario_restart(run, browser, http_url, out_dir):
    """The (embedded) node restarts: its streams start again with a new epoch, so the
    pages cannot recover; they load the rooms' history again, show no message twice, and
    join their named room again by themselves."""
    url = f"{http_url}/home/index?appID=101"
    (ctx_a, page_a, name_a), (ctx_b, page_b, name_b) = open_pair(run, browser, url, url)
    tag = secrets.token_hex(3)
    room = f"restart-{tag}"

    run.step = "both join a named room; lines before the restart"
    join_room(run, page_a, room)
    join_room(run, page_b, room)
    before = f"before the restart {tag}"
    say(page_b, before)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {before}", False], "the line on A")
    show_room(page_a, "")
    show_room(page_b, "")
    app_before = f"app room before {tag}"
    say(page_b, app_before)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {app_before}", False], "the app line on A")

    run.step = "the node restarts"
    run.ask("stop-node")
    run.wait(page_a, JS_NOT_ONLINE, what="A not online")
    run.ask("start-node")
    wait_online_long = "() => document.querySelector('[data-testid=status]').getAttribute('data-state') === 'online'"
    run.wait(page_a, wait_online_long, what="A online again", timeout=RECONNECT_WAIT_MS)
    run.wait(page_b, wait_online_long, what="B online again", timeout=RECONNECT_WAIT_MS)
    run.wait(page_a, JS_HAS_NOTICE, RECOVERY_FAILED, "A reloaded the app room's history")

    run.step = "lines after the restart"
    after = f"after the restart {tag}"
    say(page_b, after)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {after}", False], "the app line after on A")
    show_room(page_b, room)
    named_after = f"named room after {tag}"
    say(page_b, named_after)
    run.wait(page_a, f"(room) => ({JS_UNREAD})(room) === '1'", room, "A's unread count for the room")
    show_room(page_a, room)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {named_after}", False], "the named line after on A")
    run.facts["a_named_notices"] = page_a.evaluate(JS_NOTICES)
    run.facts["a_named_texts"] = page_a.evaluate(JS_TEXTS)
    show_room(page_a, "")
    run.facts["a_app_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["a_app_notices"] = page_a.evaluate(JS_NOTICES)
    run.facts["a_all_texts"] = page_a.evaluate(JS_ALL_TEXTS)
    run.facts["lines"] = {"after": f"{name_b}: {after}", "named_after": f"{name_b}: {named_after}",
                          "before": f"{name_b}: {before}", "app_before": f"{name_b}: {app_before}"}
    ctx_a.close()
    ctx_b.close()


def scenario_recovery(run, browser, http_url, out_dir):
    """A's connection drops while the node stays up, and A is kept away a moment: B says
    things in the app room and a named room, A types one line. A comes back, recovers
    what it missed (and says how much), sends its line, and shows nothing twice."""
    url = f"{http_url}/home/index?appID=101"
    ctx_b, page_b, name_b = open_chat(run, browser, "B", url)
    ctx_a = browser.new_context()
    page_a = ctx_a.new_page()
    run.watch("A", page_a)
    relay = Relay(page_a)
    page_a.goto(url, wait_until="domcontentloaded")
    name_a = wait_online(run, page_a, "A online")
    if name_a == name_b:
        raise StepFailed(f"both pages are named {name_a}")
    tag = secrets.token_hex(3)
    room = f"away-{tag}"
    join_room(run, page_a, room)
    join_room(run, page_b, room)
    first = f"seen live {tag}"
    say(page_b, first)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {first}", False], "the first line on A")
    show_room(page_a, "")
    show_room(page_b, "")

    run.step = "A's connection drops and A is kept away"
    relay.hold = True
    relay.close(code=1001, reason="server going away")
    run.wait(page_a, JS_NOT_ONLINE, what="A not online")
    missed_app = [f"app room while away {tag} {i}" for i in range(3)]
    for line in missed_app:
        say(page_b, line)
        run.wait(page_b, JS_MESSAGE_SENT, f"{name_b}: {line}", f"{line} sent by B")
    show_room(page_b, room)
    missed_room = [f"named room while away {tag} {i}" for i in range(2)]
    for line in missed_room:
        say(page_b, line)
        run.wait(page_b, JS_MESSAGE_SENT, f"{name_b}: {line}", f"{line} sent by B")
    typed = f"typed while away {tag}"
    say(page_a, typed)
    page_a.wait_for_timeout(500)
    run.facts["typed_while_away"] = page_a.evaluate(JS_OWN, f"{name_a}: {typed}")
    run.facts["publishes_while_away"] = len([f for f in relay.cmds("publish")
                                             if f["data"].get("msg") == typed])
    # A's reconnect waits out its backoff: let it be turned away once before it is let back
    waited = 0
    while relay.turned_away < 1 and waited < RECONNECT_WAIT_MS:
        page_a.wait_for_timeout(100)
        waited += 100

    run.step = "A is let back"
    relay.hold = False
    run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {typed}", "A's line sent", timeout=RECONNECT_WAIT_MS)
    run.wait(page_b, "(text) => Array.from(document.querySelectorAll('ol.messages [data-testid=message]'))"
             ".some(e => e.textContent === text)", f"{name_a}: {typed}", "A's line on B")
    run.wait(page_a, JS_HAS_NOTICE, "3 messages while you were away", "the app room's notice")
    run.facts["turned_away"] = relay.turned_away
    run.facts["app_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["app_notices"] = page_a.evaluate(JS_NOTICES)
    run.facts["room_unread"] = page_a.evaluate(JS_UNREAD, room)
    show_room(page_a, room)
    run.facts["room_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["room_notices"] = page_a.evaluate(JS_NOTICES)
    run.facts["room_unread_after_open"] = page_a.evaluate(JS_UNREAD, room)
    run.facts["joins"] = [f["data"] for f in relay.cmds("join")]
    run.facts["missed_app"] = [f"{name_b}: {t}" for t in missed_app]
    run.facts["missed_room"] = [f"{name_b}: {t}" for t in missed_room]
    run.facts["first"] = f"{name_b}: {first}"
    run.facts["room"] = room
    run.facts["typed"] = f"{name_a}: {typed}"
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-recovered.png"))
    ctx_a.close()
    ctx_b.close()


def scenario_named_room(run, browser, http_url, out_dir):
    """A creates a room by name, B joins it by name: they talk there, see each other in
    it, and the app room (and a page that did not join) sees none of it; what arrives in
    a room not shown is counted in the room list."""
    url = f"{http_url}/home/index?appID=101"
    (ctx_a, page_a, name_a), (ctx_b, page_b, name_b) = open_pair(run, browser, url, url)
    ctx_c, page_c, name_c = open_chat(run, browser, "C", url)
    tag = secrets.token_hex(3)
    room = f"Café {tag} ☕"

    run.step = "A creates the room, B joins it"
    join_room(run, page_a, room)
    join_room(run, page_b, room)
    run.wait(page_a, JS_HAS_NOTICE, f"{name_b} joined", "B's arrival in the room on A")
    run.wait(page_a, JS_HAS_ONLINE, name_b, "B in the room's online list on A")
    run.facts["a_room_online"] = page_a.evaluate(JS_ONLINE_NAMES)
    run.facts["room_title"] = page_a.locator("[data-testid=room-name]").text_content()

    run.step = "they talk in the room"
    hello = f"hello room {tag}"
    say(page_a, hello)
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {hello}", False], "A's line on B")
    reply = f"hello back {tag}"
    say(page_b, reply)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {reply}", False], "B's line on A")

    run.step = "messages in a room not shown are counted"
    show_room(page_a, "")
    unseen = [f"unseen {tag} {i}" for i in range(2)]
    for line in unseen:
        say(page_b, line)
    run.wait(page_a, f"(room) => ({JS_UNREAD})(room) === '2'", room, "A's unread count of 2")
    run.facts["a_app_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["c_texts"] = page_c.evaluate(JS_ALL_TEXTS)
    show_room(page_b, "")
    app_line = f"in the app room {tag}"
    show_room(page_a, room)
    run.facts["unread_after_open"] = page_a.evaluate(JS_UNREAD, room)
    run.facts["a_room_texts"] = page_a.evaluate(JS_TEXTS)
    say(page_b, app_line)
    run.wait(page_a, "() => (" + JS_UNREAD + ")('') === '1'", None, "the app room's unread count")
    run.wait(page_c, JS_HAS_MESSAGE, [f"{name_b}: {app_line}", False], "the app line on C")
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-named-room.png"))

    run.step = "B leaves the room"
    page_b.locator(f"[data-testid=named-room][data-room='{room}'] [data-testid=room-leave]").click()
    run.wait(page_a, JS_HAS_NOTICE, f"{name_b} left", "B's leaving on A")
    run.facts["b_rooms"] = page_b.evaluate(JS_ROOMS)
    page_b.reload(wait_until="domcontentloaded")
    wait_online(run, page_b, "B online after the reload")
    run.facts["b_rooms_after_reload"] = page_b.evaluate(JS_ROOMS)
    run.facts["lines"] = {"hello": f"{name_a}: {hello}", "reply": f"{name_b}: {reply}",
                          "unseen": [f"{name_b}: {t}" for t in unseen], "room": room,
                          "names": [name_a, name_b]}
    ctx_a.close()
    ctx_b.close()
    ctx_c.close()


# ---- private conversations, the offline inbox, images ----

JS_CONVERSATIONS = """() => Array.from(document.querySelectorAll('[data-testid=conversation]'))
    .map(e => e.getAttribute('data-user'))"""
JS_CONV_UNREAD = """(user) => {
    const entry = document.querySelector('[data-testid=conversation][data-user="' + CSS.escape(user) + '"]');
    if (!entry) return null;
    const badge = entry.querySelector('[data-testid=unread]');
    return badge && !badge.hidden ? badge.textContent : '';
}"""
JS_SHOWN_CONVERSATION = """() => document.querySelector('[data-testid=messages]').getAttribute('data-conversation')"""
JS_CONVERSATION_TEXTS = """(user) => {
    const view = document.querySelector('ol.messages[data-conversation="' + CSS.escape(user) + '"]');
    return view ? Array.from(view.querySelectorAll('[data-testid=message]')).map(e => e.textContent) : null;
}"""
JS_APP_TEXTS = """() => Array.from(document.querySelectorAll(
    'ol.messages[data-room=""] [data-testid=message]')).map(e => e.textContent)"""
JS_IMAGES = """() => Array.from(document.querySelectorAll('[data-testid=messages] [data-testid=message]'))
    .filter(e => e.querySelector('img')).map(e => {
        const img = e.querySelector('img');
        return {from: e.getAttribute('data-from'), src: img.getAttribute('src'), testid: img.getAttribute('data-testid'),
                complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                own: e.classList.contains('own'), pending: e.classList.contains('pending')};
    })"""
JS_ALL_IMGS = """() => document.querySelectorAll('img').length"""


class Frames:
    """Every frame a page sends and receives over /acc, parsed, watched and never touched."""

    def __init__(self, page):
        self.sent = []
        self.received = []
        page.on("websocket", self._socket)

    def _socket(self, ws):
        ws.on("framesent", lambda payload: self._keep(self.sent, payload))
        ws.on("framereceived", lambda payload: self._keep(self.received, payload))

    @staticmethod
    def _keep(into, payload):
        if not isinstance(payload, str):
            return
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if isinstance(frame, dict):
            into.append(frame)

    def cmds(self, cmd):
        return [f for f in self.sent if f.get("cmd") == cmd]

    def replies(self, cmd):
        return [f.get("response", {}) for f in self.received if f.get("cmd") == cmd
                and f.get("response", {}).get("codeMsg") != "Ok"]


def open_watched(run, browser, label, url, other=None):
    """open_chat, with the page's frames watched from its first socket on; ``other``: a
    name the page must not have (random names: the same twice would replace)."""
    context = browser.new_context()
    page = context.new_page()
    run.watch(label, page)
    frames = Frames(page)
    page.goto(url, wait_until="domcontentloaded")
    name = wait_online(run, page, f"{label} online")
    if other is not None and name == other:
        raise StepFailed(f"both pages are named {name}")
    return context, page, name, frames


def open_conversation(run, page, user):
    """Click ``user`` in the online list: the private conversation with them is shown."""
    page.locator("[data-testid=online-list] [data-testid=online-user]"
                 f"[data-name='{user}'] [data-testid=online-open]").click()
    run.wait(page, f"() => ({JS_SHOWN_CONVERSATION})() === {json.dumps(user)}", None,
             f"the conversation with {user} shown")


def show_conversation(run, page, user):
    page.locator(f"[data-testid=conversation][data-user='{user}'] .room-open").click()
    run.wait(page, f"() => ({JS_SHOWN_CONVERSATION})() === {json.dumps(user)}", None,
             f"the conversation with {user} shown")


def tiny_png(width=3, height=2):
    """A valid PNG of ``width`` x ``height`` red pixels."""
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def post_form(url, **form):
    body = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10) as res:
        return json.loads(res.read().decode())


def scenario_private(run, browser, http_url, out_dir):
    """A opens a private conversation with B from the online list and writes; B sees the
    conversation in the room list with an unread count, opens it, replies. Nobody else
    sees it, and a reload shows the conversation again, from the inbox."""
    url = f"{http_url}/home/index?appID=101"
    ctx_b, page_b, name_b, frames_b = open_watched(run, browser, "B", url)
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url)
    ctx_c, page_c, name_c = open_chat(run, browser, "C", url)
    if len({name_a, name_b, name_c}) < 3:
        raise StepFailed(f"two pages have one name: {name_a}, {name_b}, {name_c}")
    tag = secrets.token_hex(3)

    run.step = "A opens a conversation with B from the online list"
    run.wait(page_a, JS_HAS_ONLINE, name_b, "B in A's list")
    open_conversation(run, page_a, name_b)
    run.facts["a_title"] = page_a.locator("[data-testid=room-name]").text_content()
    run.facts["a_conversations"] = page_a.evaluate(JS_CONVERSATIONS)

    run.step = "A writes to B"
    lines_a = [f"psst {tag} {i}" for i in range(2)]
    for line in lines_a:
        say(page_a, line)
        run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {line}", f"{line} sent")
    run.wait(page_b, f"(user) => ({JS_CONV_UNREAD})(user) === '2'", name_a, "B's unread count of 2")
    run.facts["b_conversations"] = page_b.evaluate(JS_CONVERSATIONS)
    run.facts["b_shown_before"] = page_b.evaluate(JS_SHOWN_ROOM)
    run.facts["b_app_texts"] = page_b.evaluate(JS_APP_TEXTS)
    run.facts["c_texts"] = page_c.evaluate(JS_ALL_TEXTS)
    run.facts["c_conversations"] = page_c.evaluate(JS_CONVERSATIONS)

    run.step = "B opens the conversation and replies"
    show_conversation(run, page_b, name_a)
    run.facts["b_unread_after_open"] = page_b.evaluate(JS_CONV_UNREAD, name_a)
    run.facts["b_texts"] = page_b.evaluate(JS_TEXTS)
    reply = f"hi back {tag}"
    say(page_b, reply)
    run.wait(page_b, JS_MESSAGE_SENT, f"{name_b}: {reply}", "B's reply sent")
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {reply}", False], "B's reply on A")
    run.facts["a_unread_shown"] = page_a.evaluate(JS_CONV_UNREAD, name_b)
    run.facts["a_texts"] = page_a.evaluate(JS_TEXTS)
    run.facts["send_frames"] = [sorted(f["data"]) for f in frames_b.cmds("send")]
    page_b.wait_for_timeout(1500)  # the batched ack goes out
    run.facts["b_acks"] = [f["data"]["offset"] for f in frames_b.cmds("ack")]
    run.facts["b_logins"] = [f["data"].get("deviceID") for f in frames_b.cmds("login")]
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-private.png"))

    run.step = "A reloads: the conversation and its messages are there"
    page_a.reload(wait_until="domcontentloaded")
    wait_online(run, page_a, "A online after the reload")
    run.facts["a_conversations_after_reload"] = page_a.evaluate(JS_CONVERSATIONS)
    show_conversation(run, page_a, name_b)
    run.wait(page_a, JS_HAS_MESSAGE, [f"{name_b}: {reply}", False], "the reply from the inbox")
    run.facts["a_texts_after_reload"] = page_a.evaluate(JS_TEXTS)
    run.facts["lines"] = {"a": [f"{name_a}: {t}" for t in lines_a], "reply": f"{name_b}: {reply}",
                          "names": [name_a, name_b, name_c]}
    ctx_a.close()
    ctx_b.close()
    ctx_c.close()


def scenario_offline_inbox(run, browser, http_url, out_dir):
    """B closes its page; A writes meanwhile. B comes back in the same browser (same name,
    same device): the lines arrive at login, counted as unread, shown once; acknowledged,
    they do not come again."""
    url = f"{http_url}/home/index?appID=101"
    ctx_b, page_b, name_b, frames_b = open_watched(run, browser, "B", url)
    ctx_a, page_a, name_a = open_chat(run, browser, "A", url)
    if name_a == name_b:
        raise StepFailed(f"both pages are named {name_a}")
    run.wait(page_a, JS_HAS_ONLINE, name_b, "A lists B")
    tag = secrets.token_hex(3)

    run.step = "A writes to B, who reads it"
    open_conversation(run, page_a, name_b)
    first = f"before you left {tag}"
    say(page_a, first)
    run.wait(page_b, f"(user) => ({JS_CONV_UNREAD})(user) === '1'", name_a, "B's unread count of 1")
    show_conversation(run, page_b, name_a)
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {first}", False], "the first line on B")

    run.step = "B closes the page"
    page_b.wait_for_timeout(300)
    page_b.close()
    run.wait(page_a, f"(name) => !({JS_HAS_ONLINE})(name)", name_b, "B gone from A's list")

    run.step = "A writes while B is away"
    missed = [f"while you were away {tag} {i}" for i in range(3)]
    for line in missed:
        say(page_a, line)
        run.wait(page_a, JS_MESSAGE_SENT, f"{name_a}: {line}", f"{line} sent")

    run.step = "B comes back in the same browser"
    page_b = ctx_b.new_page()
    run.watch("B again", page_b)
    frames_b2 = Frames(page_b)
    page_b.goto(url, wait_until="domcontentloaded")
    run.facts["b_name_again"] = wait_online(run, page_b, "B online again")
    run.wait(page_b, f"(user) => ({JS_CONV_UNREAD})(user) === '3'", name_a, "B's unread count of 3")
    run.facts["b_app_texts"] = page_b.evaluate(JS_APP_TEXTS)
    show_conversation(run, page_b, name_a)
    for line in missed:
        run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {line}", False], f"{line} on B")
    run.wait(page_b, JS_HAS_MESSAGE, [f"{name_a}: {first}", False], "the first line from the inbox")
    page_b.wait_for_timeout(300)
    run.facts["b_texts"] = page_b.evaluate(JS_TEXTS)
    run.facts["b_unread_after_open"] = page_b.evaluate(JS_CONV_UNREAD, name_a)
    run.facts["login_replies"] = [r.get("data") for r in frames_b2.replies("login")]
    page_b.wait_for_timeout(1500)  # the batched ack
    run.facts["acks"] = [f["data"]["offset"] for f in frames_b2.cmds("ack")]
    if out_dir:
        page_b.screenshot(path=os.path.join(out_dir, "chat-offline-inbox.png"))

    run.step = "B reloads: nothing comes again"
    before_reload = len(frames_b2.received)
    page_b.reload(wait_until="domcontentloaded")
    wait_online(run, page_b, "B online after the reload")
    page_b.wait_for_timeout(800)
    run.facts["unread_after_reload"] = page_b.evaluate(JS_CONV_UNREAD, name_a)
    run.facts["login_replies_after_reload"] = [
        f["response"].get("data") for f in frames_b2.received[before_reload:]
        if f.get("cmd") == "login"]
    run.facts["devices"] = [f["data"].get("deviceID") for f in
                            frames_b.cmds("login") + frames_b2.cmds("login")]
    run.facts["a_online"] = page_a.evaluate(JS_STATUS)
    run.facts["lines"] = {"first": f"{name_a}: {first}", "missed": [f"{name_a}: {t}" for t in missed],
                          "names": [name_a, name_b]}
    ctx_a.close()
    ctx_b.close()


def scenario_image(run, browser, http_url, out_dir):
    """A attaches a PNG: it is uploaded and sent as an image message, shown inline on A and
    on B. Messages of other types, and image messages whose URL is not one of this
    server's files, are shown as text."""
    url = f"{http_url}/home/index?appID=101"
    ctx_b, page_b, name_b = open_chat(run, browser, "B", url)
    ctx_a, page_a, name_a, frames_a = open_watched(run, browser, "A", url, other=name_b)
    run.wait(page_a, JS_HAS_ONLINE, name_b, "A lists B")

    run.step = "A attaches an image in the app room"
    png = tiny_png(3, 2)
    page_a.locator("[data-testid=file-input]").set_input_files(
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": png}])
    loaded = """(own) => Array.from(document.querySelectorAll('[data-testid=messages] [data-testid=message]'))
        .some(e => e.classList.contains('own') === own && !e.classList.contains('pending')
              && e.querySelector('img') && e.querySelector('img').complete
              && e.querySelector('img').naturalWidth > 0)"""
    run.wait(page_a, loaded, True, "the image shown on A, sent")
    run.wait(page_b, loaded, False, "the image shown on B")
    run.facts["a_images"] = page_a.evaluate(JS_IMAGES)
    run.facts["b_images"] = page_b.evaluate(JS_IMAGES)
    run.facts["publishes"] = [{k: f["data"].get(k) for k in ("type", "msg")} for f in frames_a.cmds("publish")]

    run.step = "A sends B an image privately"
    open_conversation(run, page_a, name_b)
    page_a.locator("[data-testid=file-input]").set_input_files(
        files=[{"name": "dot.png", "mimeType": "image/png", "buffer": tiny_png(1, 1)}])
    run.wait(page_a, loaded, True, "the private image shown on A")
    run.wait(page_b, f"(user) => ({JS_CONV_UNREAD})(user) === '1'", name_a, "B's unread count")
    show_conversation(run, page_b, name_a)
    run.wait(page_b, loaded, False, "the private image on B")
    run.facts["b_private_images"] = page_b.evaluate(JS_IMAGES)

    run.step = "other types and foreign image URLs are text"
    backend = f"backend{secrets.token_hex(2)}"
    foreign = "http://example.com/files/AAAAAAAAAAAAAAAAAAAAAAAA.png"
    post_form(f"{http_url}/user/sendMessage", appID="101", userID=name_b, message=foreign,
              type="image", msgID=f"img-{secrets.token_hex(4)}", **{"from": backend})
    post_form(f"{http_url}/user/sendMessage", appID="101", userID=name_b, message="a sticker",
              type="sticker", msgID=f"st-{secrets.token_hex(4)}", **{"from": backend})
    run.wait(page_b, f"(user) => ({JS_CONV_UNREAD})(user) === '2'", backend, "the back end's two messages")
    show_conversation(run, page_b, backend)
    run.facts["backend_texts"] = page_b.evaluate(JS_TEXTS)
    run.facts["backend_images"] = page_b.evaluate(JS_IMAGES)
    run.facts["names"] = [name_a, name_b, backend]
    run.facts["foreign"] = foreign

    run.step = "a file that is not an image is refused, in the page's words"
    page_a.locator("[data-testid=file-input]").set_input_files(
        files=[{"name": "cat.png", "mimeType": "image/png", "buffer": b"<html>not a cat</html>"}])
    run.wait(page_a, """() => Array.from(document.querySelectorAll('[data-testid=messages] .notice.error'))
        .some(e => e.textContent.startsWith('Image not sent: '))""", what="the refusal notice")
    run.facts["refusal"] = [t for t in page_a.evaluate(JS_ERROR_NOTICES) if t.startswith("Image not sent")]
    if out_dir:
        page_a.screenshot(path=os.path.join(out_dir, "chat-image.png"))
    ctx_a.close()
    ctx_b.close()


SCENARIOS = {"chat": scenario_chat, "mobile": scenario_mobile, "refused": scenario_refused,
             "reconnect": scenario_reconnect, "send-errors": scenario_send_errors,
             "names": scenario_names, "unknown-room": scenario_unknown_room,
             "long-message": scenario_long_message, "send-keyed": scenario_send_keyed,
             "send-while-down": scenario_send_while_down, "answer-lost": scenario_answer_lost,
             "store-down": scenario_store_down, "given-up": scenario_given_up,
             "history": scenario_history, "restart": scenario_restart,
             "recovery": scenario_recovery, "named-room": scenario_named_room,
             "private": scenario_private, "offline-inbox": scenario_offline_inbox,
             "image": scenario_image}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--http-url", required=True, help="the node's HTTP base, e.g. http://127.0.0.1:8080")
    parser.add_argument("--out-dir", default="", help="where screenshots go")
    parser.add_argument("--other-url", default="",
                        help="the HTTP base of another node of the same cluster, if any")
    args = parser.parse_args(argv)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)

    run = Run(args.other_url.rstrip("/"))
    result = {"ok": False, "error": None}
    started = time.monotonic()
    try:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            raise StepFailed(f"Playwright is not installed ({exc}): pip install -r requirements.txt")
        if not os.path.exists(CHROMIUM):
            raise StepFailed(f"{CHROMIUM} is missing: run `python3 dev.py test` (as root) or `sudo bash scripts/install-test-deps.sh` "
                             "(or `apt-get install chromium`)")
        with sync_playwright() as p:
            run.step = "launch chromium"
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                SCENARIOS[args.scenario](run, browser, args.http_url.rstrip("/"), args.out_dir)
                result["ok"] = True
            except Exception as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, StepFailed):
                    result["traceback"] = traceback.format_exc()
                result["diagnostics"] = run.diagnostics()
            finally:
                browser.close()
    except Exception as exc:
        result["ok"] = False
        result["error"] = result["error"] or f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, StepFailed):
            result["traceback"] = traceback.format_exc()
    result.update(step=run.step, facts=run.facts, page_errors=run.page_errors,
                  console_errors=run.console_errors, seconds=round(time.monotonic() - started, 2))
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
