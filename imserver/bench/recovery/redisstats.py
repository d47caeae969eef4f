"""Redis commands per message: ``INFO commandstats`` read before and after a run of sends,
less what the cluster does on its own meanwhile (reports, room sizes), measured over an
idle window first."""
import time

import redis


def commandstats(client: redis.Redis) -> "dict[str, dict]":
    """command name -> {"calls": n, "usec": µs} (``cmdstat_`` dropped, ``info`` left out)."""
    out = {}
    for key, value in client.info("commandstats").items():
        name = key[len("cmdstat_"):] if key.startswith("cmdstat_") else key
        if name == "info":
            continue
        out[name] = {"calls": int(value.get("calls", 0)), "usec": int(value.get("usec", 0))}
    return out


def diff(before: dict, after: dict) -> "dict[str, dict]":
    out = {}
    for name, now in after.items():
        then = before.get(name, {"calls": 0, "usec": 0})
        calls = now["calls"] - then["calls"]
        if calls:
            out[name] = {"calls": calls, "usec": now["usec"] - then["usec"]}
    return out


class CommandMeter:
    """``idle(seconds)`` first, then ``measure(label, n, send)``: ``send()`` is called ``n``
    times (sequentially) and the commands per message are reported net of the idle rate."""

    def __init__(self, host: str, port: int):
        self.client = redis.Redis(host=host, port=port, socket_timeout=5)
        self.idle_rate = {}  # command -> calls per second with no sends
        self.idle_seconds = 0.0

    def idle(self, seconds: float) -> dict:
        before, t0 = commandstats(self.client), time.time()
        time.sleep(seconds)
        after, t1 = commandstats(self.client), time.time()
        self.idle_seconds = t1 - t0
        self.idle_rate = {name: d["calls"] / self.idle_seconds
                          for name, d in diff(before, after).items()}
        return {"seconds": round(self.idle_seconds, 3),
                "calls_per_s": {k: round(v, 2) for k, v in sorted(self.idle_rate.items())}}

    def measure(self, label: str, n: int, send) -> dict:
        """Commands per message of ``n`` sends: gross (all calls in the window / n) and net
        (less the idle rate over the window), by command, and their totals."""
        before, t0 = commandstats(self.client), time.time()
        answers = [send(i) for i in range(n)]
        after, t1 = commandstats(self.client), time.time()
        seconds = t1 - t0
        delta = diff(before, after)
        per = {}
        for name, d in sorted(delta.items()):
            idle = self.idle_rate.get(name, 0.0) * seconds
            per[name] = {"calls": d["calls"], "gross_per_msg": round(d["calls"] / n, 3),
                         "net_per_msg": round(max(0.0, d["calls"] - idle) / n, 3),
                         "usec_per_msg": round(d["usec"] / n, 2)}
        ok = sum(1 for a in answers if a)
        return {"label": label, "messages": n, "accepted": ok, "seconds": round(seconds, 3),
                "per_message": per,
                "total_gross_per_msg": round(sum(p["gross_per_msg"] for p in per.values()), 3),
                "total_net_per_msg": round(sum(p["net_per_msg"] for p in per.values()), 3)}
