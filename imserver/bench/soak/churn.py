"""The churners: ``--churn-rate`` connect/login/hold/leave cycles a second, alternating
nodes A and B, drawn from ``--churners`` user IDs; failures and ends the server caused
are counted by phase, node and reason."""
from collections import Counter

import gevent
from gevent.pool import Group

from ..drivers import AccDriver
from ..wsclient import WSError

CLEAN_CLOSE = ("closed 1000", "closed 1005")
SKIPPED = "skipped (every churner ID online)"


def end_reason(reader, default):
    """Why a reader greenlet ended: its return value, or the exception it raised."""
    if reader.successful():
        return reader.value or default or "ended"
    return f"error {type(reader.exception).__name__}"


class Churn:
    def __init__(self, ctx, cluster):
        self.ctx = ctx
        self.cluster = cluster
        self.counts = Counter()  # attempted, logged_in, left, skipped, pushes <cmd>
        self.failed = Counter()  # (phase, node, reason) -> connect/login failures
        self.ended = Counter()  # (phase, node, reason) -> connections the server ended
        self.by_node = Counter()
        self.logins_t = []
        self.free = list(range(ctx.a.churners))
        self.group = Group()

    def loop(self) -> None:
        """Start cycles at ``--churn-rate`` until the traffic ends."""
        a = self.ctx.a
        if a.churn_rate <= 0 or a.churners <= 0:
            return
        drivers = {node.label: AccDriver(node.ws_url, app_id=a.app_id, timeout=a.connect_timeout,
                                         on_push=self.on_push)
                   for node in (self.cluster.node_a, self.cluster.node_b)}
        rng = self.ctx.rng
        k = 0
        while self.ctx.keeps_going(k / a.churn_rate):
            entry = "A" if k % 2 == 0 else "B"
            k += 1
            if not self.free:
                self.counts[SKIPPED] += 1
                continue
            cid = self.free.pop(rng.randrange(len(self.free)))
            hold = rng.uniform(a.churn_hold_min, a.churn_hold_max)
            self.group.spawn(self.cycle, cid, entry, drivers[entry], hold)

    def on_push(self, cmd, msg_id, t):
        self.counts[f"pushes {cmd}"] += 1

    def cycle(self, cid: int, entry: str, drv, hold: float) -> None:
        user = f"{self.ctx.run_id}-c{cid}"
        t = self.ctx.rel()
        self.counts["attempted"] += 1
        try:
            try:
                conn = drv.connect(user)
            except WSError as exc:
                self.failed[(self.ctx.phase(t, self.ctx.rel()), entry, exc.reason)] += 1
                return
            except Exception as exc:  # an OS limit, a bug: counted all the same
                self.failed[(self.ctx.phase(t, self.ctx.rel()), entry,
                             f"error {type(exc).__name__}")] += 1
                return
            self.counts["logged_in"] += 1
            self.by_node[entry] += 1
            self.logins_t.append(self.ctx.rel())
            self.hold_and_leave(t, entry, drv, conn, hold)
        finally:
            self.free.append(cid)

    def hold_and_leave(self, t, entry, drv, conn, hold) -> None:
        reader = gevent.spawn(drv.serve, conn)
        ended = None
        try:
            reader.join(hold)
            if reader.dead:  # the server ended it during the hold
                ended = end_reason(reader, "dropped")
                return
            drv.close(conn)
            reader.join(5.0)
            if not reader.dead:
                ended = "close timeout"
                return
            reason = end_reason(reader, "")
            if reason in CLEAN_CLOSE:
                self.counts["left"] += 1
            else:
                ended = "close " + reason
        finally:
            if ended is not None:
                self.ended[(self.ctx.phase(t, self.ctx.rel()), entry, ended)] += 1
            conn.abort()
            reader.kill(block=False)

    def stop(self, timeout: float = 5) -> None:
        self.group.kill(block=True, timeout=timeout)
