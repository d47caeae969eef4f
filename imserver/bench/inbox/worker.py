"""The client worker of the private-message scenarios:
``python -m imserver.bench.inbox.worker --id K [--max-seconds S]``.

It speaks the JSON lines of ``imserver.bench.client`` (whose commands it keeps) and adds:

- ``setup``: the WebSocket URLs (one per node), the appID, the deviceID its users log in
  with, and ``discard_every`` (a self-check of the verification: every K-th private
  message read is thrown away, as if it had been lost);
- ``login``: log users in, each on its node, at given wall-clock slots or as fast as
  ``concurrency`` allows; the login reply's ``inbox`` is kept per user;
- ``send``: WebSocket ``send`` frames by logged-in users at their slots; the send time and
  the reply (code, ``delivered``, offset) per msgID;
- ``post``: ``POST /user/sendMessage`` calls at their slots; start, end and answer per msgID;
- ``progress``: private messages read so far, users complete (``expect`` each);
- ``receipts``: per user, every private message read: msgID, offset, receive time, target;
- ``ack``: each device acknowledges the highest offset it read;
- ``relogin``: users log in again with the same device; what the reply and the next
  ``wait`` seconds bring.

Receive times are ``time.time()`` (the coordinator and every worker share the clock).
"""
from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from .. import client  # noqa: E402
from ..coordinator import HttpPool  # noqa: E402
from ..drivers import AccDriver  # noqa: E402
from ..wsclient import WSConnection, WSError  # noqa: E402

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


class UserState:
    """One user's device as the worker sees it."""

    __slots__ = ("user", "node", "t_start", "t_login", "inbox", "got", "acked", "failure",
                 "conn")

    def __init__(self, user: str, node: int):
        self.user = user
        self.node = node
        self.t_start = None  # connect began
        self.t_login = None  # login reply read
        self.inbox = None  # the login reply's "inbox" (None without a deviceID)
        self.got = []  # [msgID, offset, recv time, target] per private message read
        self.acked = None
        self.failure = None
        self.conn = None


class InboxDriver(AccDriver):
    """The acc driver with ``deviceID`` at login, private messages recorded per user, and
    the replies to ``send`` and ``ack`` kept by ``seq``."""

    def __init__(self, ws_url: str, worker: "InboxWorker", node: int, **kw):
        super().__init__(ws_url, **kw)
        self.worker = worker
        self.node = node

    def login(self, conn, user_id):
        state = conn.driver_state
        data = {"serviceToken": "", "appID": self.app_id, "userID": user_id}
        if self.worker.device:
            data["deviceID"] = self.worker.device
        conn.send_text(_dumps({"seq": "l", "cmd": "login", "data": data}))
        deadline = time.monotonic() + self.timeout
        while True:
            _, payload = conn.recv_message()
            now = self.clock()
            try:
                frame = _loads(payload)
                cmd = frame["cmd"]
            except (ValueError, KeyError, TypeError):
                raise WSError("login bad frame", payload[:100].decode("utf-8", "replace"))
            if cmd == "login":
                response = frame.get("response") or {}
                if response.get("code") != 200:
                    raise WSError(f"login code {response.get('code')}")
                state.t_login = now
                state.inbox = (response.get("data") or {}).get("inbox")
                return
            self.on_message(conn, 1, payload, now)
            if time.monotonic() > deadline:
                raise WSError("login timeout")

    def connect_as(self, state: "UserState", source_ip: str = "") -> WSConnection:
        """``connect`` with the user's state on the connection before its login."""
        conn = WSConnection()
        conn.user = state.user
        conn.driver_state = state
        conn.connect(self.host, self.port, self.path, source_ip, self.timeout)
        try:
            self.login(conn, state.user)
        except BaseException:
            conn.abort()
            raise
        return conn

    def on_message(self, conn, opcode, payload, now):
        w = self.worker
        if b'"cmd":"msg"' in payload:
            try:
                data = _loads(payload)["response"]["data"]
            except (ValueError, KeyError, TypeError):
                w.frames["bad msg"] += 1
                return
            if data.get("room") != "":
                w.frames["room msg"] += 1
                return
            w.frames["private msg"] += 1
            w.taken += 1
            if w.discard_every and w.taken % w.discard_every == 0:
                w.frames["discarded (self-check)"] += 1
                return
            state = conn.driver_state
            state.got.append([data.get("msgID") or "", data.get("offset"), now,
                              data.get("target")])
            w.received += 1
            return
        if b'"cmd":"enter"' in payload or b'"cmd":"exit"' in payload:
            w.frames["presence"] += 1
            return
        try:
            frame = _loads(payload)
            cmd = frame["cmd"]
            response = frame.get("response") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            w.frames["bad frame"] += 1
            return
        code = response.get("code")
        self.replies[f"{cmd} {code}"] += 1
        if cmd == "send":
            data = response.get("data") or {}
            w.send_replies[frame.get("seq", "")] = [now, code, data.get("delivered"),
                                                    data.get("offset")]
        elif cmd == "ack":
            state = conn.driver_state
            if state is not None:
                state.acked = code


class InboxWorker(client.Worker):
    def __init__(self, wid: int):
        super().__init__(wid)
        self.device = ""
        self.discard_every = 0
        self.taken = 0
        self.received = 0
        self.frames = Counter()
        self.inbox_drivers = []
        self.users = {}  # user -> UserState
        self.send_times = {}  # msgID -> time the send frame was written
        self.send_replies = {}  # msgID -> [time, code, delivered, offset]
        self._index = itertools.count()

    def cmd_setup(self, ws_urls, app_id=101, device="", timeout=10.0, discard_every=0, **_):
        self.device = device
        self.discard_every = int(discard_every or 0)
        self.inbox_drivers = [InboxDriver(url, self, i, app_id=app_id, timeout=timeout)
                              for i, url in enumerate(ws_urls)]
        self.driver = self.inbox_drivers[0]
        return {"drivers": len(self.inbox_drivers)}

    # -- logins ------------------------------------------------------------------------------

    def _login_one(self, state: UserState, source_ip: str) -> bool:
        drv = self.inbox_drivers[state.node]
        state.t_start = time.time()
        state.got = []
        state.inbox = state.t_login = state.failure = None
        try:
            conn = drv.connect_as(state, source_ip)
        except WSError as exc:
            state.failure = exc.reason
            self.failures[exc.reason] += 1
            return False
        except Exception as exc:  # an OS limit or a bug: counted
            state.failure = f"error {type(exc).__name__}"
            self.failures[state.failure] += 1
            return False
        self.logged_in += 1
        self.last_login = time.time()
        state.conn = conn
        index = next(self._index)
        conn.index = index
        self.conns[index] = conn
        gevent.spawn(self._serve, drv, conn, index)
        return True

    def _serve(self, drv, conn, index):
        reason = drv.serve(conn)
        self.conns.pop(index, None)
        if conn.initiated:
            self.closed_by_us += 1
        elif conn.close_code == 4000:
            self.dropped["replaced 4000"] += 1
        else:
            self.dropped[reason] += 1

    def cmd_login(self, users, source_ips=(), concurrency=100, deadline_s=300.0, **_):
        """``users``: ``[[user, node, slot]]`` (slot: wall-clock start, or null for as soon
        as ``concurrency`` allows). Answers when every login ended."""
        sem = BoundedSemaphore(max(1, concurrency))
        pool = Pool()
        deadline = time.monotonic() + deadline_s
        if self.first_start is None:
            self.first_start = time.time()
        late = []

        def run(state, source_ip):
            try:
                self._login_one(state, source_ip)
            finally:
                sem.release()

        for i, (user, node, slot) in enumerate(users):
            if slot:
                delay = slot - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                else:
                    late.append(-delay)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sem.acquire(timeout=remaining):
                self.failures["not attempted (phase deadline)"] += len(users) - i
                break
            state = self.users.get(user) or UserState(user, node)
            self.users[user] = state
            self.attempted += 1
            pool.spawn(run, state, source_ips[i % len(source_ips)] if source_ips else "")
        pool.join(timeout=max(1.0, deadline - time.monotonic()) + 15)
        late.sort()
        return {"attempted": self.attempted, "logged_in": self.logged_in,
                "failures": dict(self.failures),
                "late_s": {"count": len(late), "max": late[-1] if late else 0.0}}

    # -- sends -------------------------------------------------------------------------------

    def cmd_send(self, plan, text="private", wait=10.0, **_):
        """``plan``: ``[[sender, to, msgID, slot]]``: each a WebSocket ``send`` by the logged-in
        ``sender`` at wall-clock ``slot``. Answers when every reply came (or ``wait`` s after
        the last send): {msgID: [sent, reply time, code, delivered, offset]}."""
        skipped = Counter()
        mine = []
        for sender, to, msg_id, slot in plan:
            delay = slot - time.time()
            if delay > 0:
                gevent.sleep(delay)
            state = self.users.get(sender)
            conn = state.conn if state is not None else None
            if conn is None or conn.closed or conn.closing:
                skipped["sender not connected"] += 1
                continue
            t = time.time()
            ok = conn.send_text(_dumps({"seq": msg_id, "cmd": "send", "data": {
                "to": to, "msg": f"{text} {msg_id}", "msgID": msg_id}}))
            if not ok:
                skipped["write failed"] += 1
                continue
            self.send_times[msg_id] = t
            mine.append(msg_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(m not in self.send_replies for m in mine):
            gevent.sleep(0.05)
        out = {}
        for msg_id in mine:
            reply = self.send_replies.get(msg_id) or [None, None, None, None]
            out[msg_id] = [self.send_times[msg_id]] + reply
        return {"sends": out, "skipped": dict(skipped)}

    def cmd_post(self, plan, http_urls, concurrency=50, http_timeout=10.0, text="private", **_):
        """``plan``: ``[[node, user, msgID, slot]]``: ``POST /user/sendMessage`` to node
        ``node``'s HTTP API at ``slot``. Answers {msgID: [start, end, status, code,
        sendResults, stored, offset, error]}."""
        pools = [HttpPool(url, size=concurrency, timeout=http_timeout) for url in http_urls]
        pool = Pool(concurrency)
        out = {}
        app_id = self.inbox_drivers[0].app_id if self.inbox_drivers else 101

        def post(node, user, msg_id):
            t0 = time.time()
            try:
                status, body = pools[node].post("/user/sendMessage", appID=app_id, userID=user,
                                                msgID=msg_id, message=f"{text} {msg_id}",
                                                **{"from": "bench-backend"})
                data = body.get("data") or {}
                err = None if status == 200 and body.get("code") == 200 else \
                    str(body.get("detail") or body.get("msg") or "")[:80]
                out[msg_id] = [t0, time.time(), status, body.get("code"),
                               data.get("sendResults"), data.get("stored"), data.get("offset"),
                               err]
            except OSError as exc:
                out[msg_id] = [t0, time.time(), None, None, None, None, None,
                               type(exc).__name__]

        for node, user, msg_id, slot in plan:
            delay = slot - time.time() if slot else 0
            if delay > 0:
                gevent.sleep(delay)
            pool.wait_available(timeout=http_timeout + 1)
            pool.spawn(post, node, user, msg_id)
        pool.join(timeout=http_timeout * 2 + 5)
        return {"posts": out}

    # -- results -----------------------------------------------------------------------------

    def cmd_progress(self, expect=0, **_):
        complete = sum(1 for s in self.users.values() if expect and len(s.got) >= expect)
        return {"received": self.received, "complete": complete, "users": len(self.users),
                "live": len(self.conns), "last_receive": max(
                    (s.got[-1][2] for s in self.users.values() if s.got), default=None)}

    def cmd_receipts(self, **_):
        return {"users": {u: {"node": s.node, "t_start": s.t_start, "t_login": s.t_login,
                              "inbox": s.inbox, "got": s.got, "acked": s.acked,
                              "failure": s.failure}
                          for u, s in self.users.items()},
                "frames": dict(self.frames), "replies": dict(self.replies()),
                "dropped": dict(self.dropped), "failures": dict(self.failures)}

    def cmd_ack(self, wait=10.0, rate=0.0, **_):
        """Each device acknowledges the highest offset it read, ``rate`` a second (0: all at
        once); answers when every reply came (or ``wait`` s after the last ack)."""
        waiting = []
        t0 = time.time()
        for s in self.users.values():
            offsets = [g[1] for g in s.got if isinstance(g[1], int)]
            if s.conn is None or s.conn.closed or not offsets:
                continue
            if rate > 0:
                delay = t0 + len(waiting) / rate - time.time()
                if delay > 0:
                    gevent.sleep(delay)
            s.acked = None
            s.conn.send_text(_dumps({"seq": "a", "cmd": "ack", "data": {"offset": max(offsets)}}))
            waiting.append(s)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(s.acked is None for s in waiting):
            gevent.sleep(0.05)
        return {"acks": dict(Counter(str(s.acked) for s in waiting))}

    def cmd_relogin(self, users, wait=1.0, source_ips=(), **_):
        """Log ``users`` in again with the same device (the older connection is replaced);
        after ``wait`` s: per user the login reply's inbox and the private messages read."""
        done = Event()
        pending = [len(users)]

        def run(user, source_ip):
            try:
                self._login_one(self.users[user], source_ip)
            finally:
                pending[0] -= 1
                if pending[0] <= 0:
                    done.set()

        for i, user in enumerate(users):
            gevent.spawn(run, user, source_ips[i % len(source_ips)] if source_ips else "")
        if users:
            done.wait(30)
        gevent.sleep(wait)
        return {"users": {u: {"inbox": self.users[u].inbox, "got": len(self.users[u].got),
                              "failure": self.users[u].failure} for u in users}}


if __name__ == "__main__":
    import sys
    sys.exit(client.main(worker_class=InboxWorker,
                         prog="python -m imserver.bench.inbox.worker"))
