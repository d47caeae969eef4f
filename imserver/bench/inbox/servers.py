"""What a private or offline run starts and reads: its servers (one embedded node, or a Redis
and two nodes), their CPU, memory and Redis figures."""
import os

import redis

from ..harness import low_ports
from ..soak.cluster import Cluster, RunContext, SoakNode


WORKER_MODULE = "imserver.bench.inbox.worker"


class Servers:
    """One embedded node, or a redis-server and nodes A and B."""

    def __init__(self, ctx: RunContext, out_dir: str):
        self.ctx = ctx
        self.out = out_dir
        a = ctx.a
        app = {"maxConnections": 19000}
        if a.presence_max_room is not None:
            app["presenceMaxRoom"] = a.presence_max_room
        self.overrides = {"app": app}
        if a.redis_pool_size:
            self.overrides["redis"] = {"poolSize": a.redis_pool_size}
        self.cluster = None
        self.nodes = []
        self.redis = None

    def start(self, meta: dict) -> None:
        a = self.ctx.a
        if a.nodes == 2:
            self.cluster = Cluster(self.ctx, self.out, self.overrides, banner=a.scenario)
            self.cluster.start(meta)
            self.nodes = [self.cluster.node_a, self.cluster.node_b]
            self.redis = self.cluster.redis
            return
        ports = low_ports(3, rng=self.ctx.rng)
        meta["ports"] = {"a": {"http": ports[0], "ws": ports[1], "rpc": ports[2]}}
        node = SoakNode("A", ports, "", self.out, a, self.overrides, a.scenario)
        self.ctx.log(f"starting an embedded node (http :{ports[0]}, ws :{ports[1]}); log in "
                     f"{self.out}")
        node.start()
        self.nodes = [node]
        meta["pids"] = {"a": [node.pid] + node.children()}

    @property
    def ws_urls(self):
        return [n.ws_url for n in self.nodes]

    @property
    def http_urls(self):
        return [n.http_url for n in self.nodes]

    def worker_snapshot(self) -> dict:
        """Per node: worker RSS (KB) and CPU seconds."""
        out = {}
        for n in self.nodes:
            rss, cpu, pids = n.worker_rss_kb()
            out[n.label] = {"rss_kb": rss, "cpu_s": cpu, "pids": pids}
        return out

    def redis_memory(self) -> "dict | None":
        if self.redis is None:
            return None
        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)
        try:
            info = client.info("memory")
            return {"used_memory": int(info["used_memory"]), "keys": int(client.dbsize())}
        finally:
            client.close()

    def commandstats(self) -> "dict | None":
        """Redis INFO commandstats (command -> calls, µs), None without Redis."""
        if self.redis is None:
            return None
        from ..recovery.redisstats import commandstats
        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)
        try:
            return commandstats(client)
        finally:
            client.close()

    def stop(self) -> list:
        if self.cluster is not None:
            return self.cluster.stop()
        left = []
        for n in self.nodes:
            n.stop()
            left += n.sweep()
        return left


def cpu_delta(before: dict, after: dict, seconds: float) -> dict:
    """Per node: CPU seconds used between two snapshots and the share of one core."""
    out = {}
    for label, b in before.items():
        a = after.get(label) or {}
        if b.get("cpu_s") is None or a.get("cpu_s") is None:
            continue
        used = a["cpu_s"] - b["cpu_s"]
        out[label] = {"cpu_s": round(used, 2),
                      "core_share": round(used / seconds, 3) if seconds > 0 else None}
    return out


def loadavg() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def split(items, k: int) -> list:
    """``items`` dealt into ``k`` lists by index mod k."""
    parts = [[] for _ in range(k)]
    for i, item in enumerate(items):
        parts[i % k].append(item)
    return parts
