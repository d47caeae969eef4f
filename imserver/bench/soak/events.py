"""The faults and the recoveries: Redis stopped at 1/3 of the run and started again
empty, node B killed at 2/3 and restarted; after each, node B must list every steady
user again and both nodes must see each other and a healthy store."""
import time

import gevent

from .cluster import HTTP_ERRORS


class Director:
    def __init__(self, ctx, cluster, steady):
        self.ctx = ctx
        self.cluster = cluster
        self.steady = steady
        self.recovery = {}  # "redis", "node_b" -> what the check after it saw

    def run(self) -> None:
        ctx, a = self.ctx, self.ctx.a
        third = a.duration / 3
        if not ctx.sleep_until(third):
            return
        redis = self.cluster.redis
        ctx.event("redis_stop", pid=redis.pid)
        ctx.open_window("redis_down")
        redis.stop()
        if ctx.stopping.wait(a.redis_down):
            return
        redis.start()
        ctx.close_window("redis_down")
        ctx.event("redis_start", pid=redis.pid)
        self.recover("redis", min(a.recovery_timeout, max(1.0, 2 * third - ctx.rel() - 0.5)))

        if not ctx.sleep_until(2 * third):
            return
        node_b = self.cluster.node_b
        # The window opens first: the churners' connections end while the kill is under
        # way, and those ends belong to it.
        ctx.open_window("node_b_down")
        ctx.event("node_b_kill", pids=node_b.kill())
        if ctx.stopping.wait(a.node_down):
            return
        node_b.start()
        ctx.close_window("node_b_down")
        ctx.event("node_b_start", pids=[node_b.pid] + node_b.children())
        self.recover("node_b", a.recovery_timeout)

    def recover(self, what: str, timeout: float) -> None:
        self.ctx.open_window(f"{what}_recovery")
        self.recovery[what] = self.check_recovery(what, timeout)
        self.ctx.close_window(f"{what}_recovery")

    def check_recovery(self, what: str, timeout: float) -> dict:
        """From node B: /user/list lists every steady user, and /user/online answers true
        for a sample of them; both nodes see each other and the store as healthy."""
        t0 = time.time()
        deadline = t0 + timeout
        sample = self.ctx.rng.sample(self.steady.users, min(20, len(self.steady.users)))
        checks = {"list": self.all_listed, "online": lambda: self.all_online(sample),
                  "cluster": self.cluster_healthy}
        marks = {}
        last = {}
        while True:
            now = time.time()
            for name, check in checks.items():
                if name not in marks:
                    ok, last[name] = check()
                    if ok:
                        marks[name] = now
            if len(marks) == 3 or now >= deadline or self.ctx.stopping.is_set():
                break
            gevent.sleep(0.25)
        result = {"recovered": len(marks) == 3, "checked_users_online": len(sample),
                  "seconds": {k: round(v - t0, 2) for k, v in marks.items()}}
        if len(marks) < 3:
            result["last_seen"] = last
        self.ctx.event(f"{what}_recovered" if result["recovered"] else f"{what}_recovery_failed",
                       seconds=result["seconds"].get("list") if result["recovered"] else last)
        return result

    def all_listed(self):
        """(node B's /user/list has every steady user, what it showed)."""
        try:
            status, body = self.cluster.node_b.probe.get("/user/list", appID=self.ctx.a.app_id)
            users = set((body.get("data") or {}).get("userList") or ())
        except HTTP_ERRORS as exc:
            return False, f"{type(exc).__name__}"
        return (body.get("code") == 200 and self.steady.set <= users,
                (body.get("code"), len(self.steady.set & users)))

    def all_online(self, sample):
        """(node B's /user/online is true for every user of ``sample``, how many)."""
        ok = 0
        for user in sample:
            try:
                _, body = self.cluster.node_b.probe.get("/user/online", appID=self.ctx.a.app_id,
                                                        userID=user)
            except HTTP_ERRORS:
                break
            if body.get("code") == 200 and (body.get("data") or {}).get("online"):
                ok += 1
            else:
                break
        return ok == len(sample), f"{ok}/{len(sample)}"

    def cluster_healthy(self):
        """(both nodes see each other and a healthy store, what they said)."""
        nodes = (self.cluster.node_a, self.cluster.node_b)
        want = {n.addr for n in nodes}
        states = [n.state() for n in nodes]
        seen = [s and (s.get("storeHealthy"), s.get("liveNodes")) for s in states]
        return all(s and s.get("storeHealthy") and set(s.get("liveNodes") or ()) >= want
                   for s in states), seen
