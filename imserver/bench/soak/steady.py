"""The steady users: logged in on node A for the whole run, with heartbeats; every push
they get is recorded, and any of them the server drops is a failure."""
import sys
import time
from collections import Counter, defaultdict

import gevent
from gevent.pool import Pool

from ..drivers import AccDriver
from ..wsclient import WSError


class SteadyDriver(AccDriver):
    """The acc driver, telling ``sink(user, cmd, msg_id, t)`` which user got each push."""

    def __init__(self, ws_url, sink, **kw):
        super().__init__(ws_url, on_push=lambda cmd, msg_id, t: None, **kw)
        self.sink = sink

    def pushed(self, conn, cmd, msg_id, now):
        self.sink(conn.user, cmd, msg_id, now)


class SteadyUsers:
    def __init__(self, ctx):
        self.ctx = ctx
        self.users = [f"{ctx.run_id}-s{i}" for i in range(ctx.a.steady)]
        self.set = frozenset(self.users)
        self.conns = {}
        self.dropped = []
        self.driver = None
        self.received = defaultdict(list)  # msgID -> [(user, time)]
        self.pushes = Counter()  # cmd -> pushes to steady users
        self.live_at_end = None

    def on_push(self, user, cmd, msg_id, t):
        self.pushes[cmd] += 1
        if cmd == "msg":
            self.received[msg_id].append((user, t))

    def reached(self, msg_id) -> "set[str]":
        """The steady users a message reached so far."""
        return {u for u, _ in self.received.get(msg_id, ())}

    def connect(self, ws_url: str, results: dict) -> None:
        """Log every steady user in (three tries each), with ``results["steady_connect"]``
        saying how it went; RuntimeError when some cannot."""
        a = self.ctx.a
        self.driver = SteadyDriver(ws_url, self.on_push, app_id=a.app_id,
                                   timeout=a.connect_timeout)
        failures = Counter()
        pool = Pool(50)

        def one(user):
            for attempt in range(3):
                try:
                    conn = self.driver.connect(user)
                except WSError as exc:
                    failures[exc.reason] += 1
                    gevent.sleep(0.2 * (attempt + 1))
                    continue
                self.conns[user] = conn
                self.ctx.spawn(self.serve, user, conn)
                return

        t = time.time()
        for user in self.users:
            pool.spawn(one, user)
        pool.join(timeout=max(60.0, a.connect_timeout * 4))
        pool.kill()
        missing = len(self.users) - len(self.conns)
        results["steady_connect"] = {"seconds": round(time.time() - t, 3),
                                     "connected": len(self.conns),
                                     "failed_attempts": dict(failures)}
        if missing:
            raise RuntimeError(f"{missing} of {len(self.users)} steady users could not "
                               f"log in on node A: {dict(failures)}")
        self.ctx.log(f"{len(self.conns)} steady users logged in on node A in "
                     f"{time.time() - t:.1f}s")

    def serve(self, user, conn) -> None:
        reason = self.driver.serve(conn)
        self.conns.pop(user, None)
        if conn.initiated:  # our close at the end
            return
        t = self.ctx.rel()
        self.dropped.append({"user": user, "t": t, "reason": reason,
                             "phase": self.ctx.phase(t, t)})
        print(f"soak: steady user {user} DROPPED at t={t:.1f}s: {reason}", file=sys.stderr,
              flush=True)

    def heartbeat_loop(self) -> None:
        interval = self.ctx.a.heartbeat_interval
        if interval <= 0:
            return
        stopping = self.ctx.stopping
        while not stopping.is_set():
            conns = list(self.conns.values())
            pause = interval / max(1, len(conns))
            for conn in conns:
                if not conn.closing and not conn.closed:
                    self.driver.heartbeat(conn)
                if stopping.wait(pause):
                    return
            if not conns and stopping.wait(1.0):
                return

    def close(self) -> None:
        """The close handshake with every steady user, so that their readers end as
        ours, not as drops; sockets still open after 3 s are cut."""
        conns = list(self.conns.values())
        for conn in conns:
            try:
                self.driver.close(conn)
            except Exception:
                pass
        deadline = time.monotonic() + 3
        while self.conns and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for conn in conns:
            conn.abort()
