"""The soak's traffic: unicasts to random steady users at ``--rate`` and room broadcasts
every ``--broadcast-interval``, entering at A and B in turn; each send's answer says
whether it was accepted, and what must then reach the steady users."""
import time

import gevent
from gevent.pool import Group, Pool

from .cluster import HTTP_ERRORS

BROADCAST_SENDER = "soak-ops"


def classify_answer(status, body, exc=None) -> "tuple[bool, str, bool]":
    """(accepted, refusal key or "", delivered-on-this-node-only) of one send's answer.
    Accepted: HTTP 200, code 200, sendResults true. The key names a refusal by its code
    ("1004", "1100", "200 user is not online", "200 duplicate", "http 503",
    "error ConnectionRefusedError")."""
    if exc is not None:
        return False, f"error {type(exc).__name__}", False
    body = body if isinstance(body, dict) else {}
    code = body.get("code")
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    if status == 200 and code == 200 and data.get("sendResults") is True:
        local_only = "this node only" in str(data.get("sendResultsErr") or "")
        return True, "", local_only
    if status != 200 and code is None:
        return False, f"http {status}", False
    if code == 200:
        if data.get("duplicate"):
            return False, "200 duplicate", False
        return False, f"200 {data.get('sendResultsErr') or 'sendResults false'}", False
    return False, str(code), False


class Traffic:
    def __init__(self, ctx, cluster, steady):
        self.ctx = ctx
        self.cluster = cluster
        self.steady = steady
        self.unicasts = []
        self.broadcasts = []
        self.warmup = []

    def send(self, kind: str, msg_id: str, entry: str, user) -> dict:
        """One send through node ``entry`` and its answer, as a record."""
        ctx, app_id = self.ctx, self.ctx.a.app_id
        node = self.cluster.node_a if entry == "A" else self.cluster.node_b
        t = time.time()
        rec = {"kind": kind, "msg_id": msg_id, "entry": entry, "user": user,
               "t": ctx.rel(t) if ctx.t0 is not None else None}
        status, body, exc = None, None, None
        try:
            if kind == "unicast":
                status, body = node.http.post("/user/sendMessage", appID=app_id, userID=user,
                                              msgID=msg_id, message=f"soak {msg_id}",
                                              **{"from": BROADCAST_SENDER})
            else:
                status, body = node.http.post("/user/sendMessageAll", appID=app_id,
                                              userID=BROADCAST_SENDER, msgID=msg_id,
                                              message=f"soak {msg_id}")
        except HTTP_ERRORS as exc_:
            exc = exc_
        accepted, key, local_only = classify_answer(status, body, exc)
        data = body.get("data") if isinstance(body, dict) else None
        rec.update({"t_wall": t, "ms": round((time.time() - t) * 1000, 2), "accepted": accepted,
                    "refused": key, "local_only": local_only,
                    "code": body.get("code") if isinstance(body, dict) else None,
                    "err": data.get("sendResultsErr") if isinstance(data, dict) else None})
        if rec["t"] is not None:
            rec["t_end"] = round(rec["t"] + rec["ms"] / 1000, 3)
            rec["phase"] = ctx.phase(rec["t"], rec["t_end"])
        return rec

    @staticmethod
    def must_reach(rec) -> bool:
        """Must this send reach its steady user(s)? Accepted, and for a broadcast that
        was delivered on its entry node only, only when that node is A."""
        if not rec["accepted"]:
            return False
        return not (rec["kind"] == "broadcast" and rec["local_only"] and rec["entry"] != "A")

    def missing_of(self, recs) -> "tuple[int, int]":
        """(sends that must reach someone but have not yet, such sends)."""
        missing = expected = 0
        for rec in recs:
            if not self.must_reach(rec):
                continue
            expected += 1
            got = self.steady.reached(rec["msg_id"])
            if rec["kind"] == "unicast":
                if rec["user"] not in got:
                    missing += 1
            elif not self.steady.set <= got:
                missing += 1
        return missing, expected

    def warm_up(self) -> None:
        """A few sends through both entries before the baseline, so that the baseline
        includes what their first use allocates (gRPC channels and call paths)."""
        n = self.ctx.a.warmup
        if n <= 0:
            return
        run_id, rng = self.ctx.run_id, self.ctx.rng
        for k in range(n):
            entry = "A" if k % 2 == 0 else "B"
            self.warmup.append(self.send("unicast", f"{run_id}-w{k}", entry,
                                         rng.choice(self.steady.users)))
        for k, entry in enumerate("AB"):
            self.warmup.append(self.send("broadcast", f"{run_id}-wb{k}", entry, None))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.missing_of(self.warmup)[0]:
            gevent.sleep(0.1)
        ok = sum(1 for r in self.warmup if r["accepted"])
        self.ctx.log(f"warm-up: {ok}/{len(self.warmup)} sends accepted")

    def unicast_loop(self) -> None:
        a = self.ctx.a
        pool = Pool(a.http_concurrency)
        k = 0
        while self.ctx.keeps_going(k / a.rate):
            entry = "A" if k % 2 == 0 else "B"
            user = self.ctx.rng.choice(self.steady.users)
            pool.wait_available()
            pool.spawn(lambda *x: self.unicasts.append(self.send(*x)),
                       "unicast", f"{self.ctx.run_id}-u{k}", entry, user)
            k += 1
        pool.join(timeout=a.http_timeout * 2 + 5)

    def broadcast_loop(self) -> None:
        a = self.ctx.a
        group = Group()
        k = 0
        while self.ctx.keeps_going(1.0 + k * a.broadcast_interval):
            entry = "A" if k % 2 == 0 else "B"
            group.spawn(lambda *x: self.broadcasts.append(self.send(*x)),
                        "broadcast", f"{self.ctx.run_id}-b{k}", entry, None)
            k += 1
        group.join(timeout=a.http_timeout * 2 + 5)
