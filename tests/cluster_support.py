"""Real Redis servers for cluster tests, started and stopped by the tests themselves."""
import os

import redis

from imserver.bench import harness
from support import free_port

INSTALL_HINT = ("redis-server is not installed: `python3 dev.py test` installs it with "
                "apt-get when run as root; otherwise `sudo apt-get install redis-server`")


def redis_binary() -> str:
    path = harness.redis_server_path()
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


class RedisProcess(harness.RedisServer):
    """A throw-away redis-server on a free loopback port, without persistence, that a
    test may stop and start again on the same port."""

    start_timeout = 10.0

    def __init__(self, workdir):
        self.workdir = str(workdir)
        port = free_port()
        super().__init__(redis_binary(), port, self.workdir,
                         os.path.join(self.workdir, f"redis-{port}.log"))

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           decode_responses=True)


# -- Redis beyond one instance: a Redis Cluster, a master watched by Sentinels -------------

def redis_cli_binary() -> str:
    import shutil
    path = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    if not os.access(path, os.X_OK):
        raise RuntimeError(INSTALL_HINT)
    return path


def cluster_ports(n: int) -> "list[int]":
    """``n`` free ports below 22768 whose cluster bus ports (port + 10000) are free too:
    both below the kernel's ephemeral range."""
    import random
    rng = random.Random()
    ports = []
    for _ in range(5000):
        port = rng.randrange(10000, 22700)
        if (port not in ports and harness._bindable(port)
                and harness._bindable(port + 10000)):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free ports with free cluster bus ports")


class RedisNode(harness.RedisServer):
    """A redis-server of a Cluster or of a Sentinel group, on a given port, with extra
    arguments (``--cluster-enabled yes`` ..., ``--replicaof`` ...)."""

    start_timeout = 10.0

    def __init__(self, workdir, port, *extra):
        self.workdir = str(workdir)
        super().__init__(redis_binary(), port, self.workdir,
                         os.path.join(self.workdir, f"redis-{port}.log"))
        self.argv += list(extra)

    def client(self, **kw) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           decode_responses=True, **kw)


def _wait(predicate, timeout, what):
    return harness.wait_until(predicate, timeout=timeout, interval=0.1, what=what)


def _answers(fn):
    try:
        return fn()
    except (redis.RedisError, OSError):
        return None


class RedisClusterGroup:
    """A Redis Cluster on loopback: ``masters`` masters, each with ``replicas`` replicas,
    made with ``redis-cli --cluster create``; ``node_timeout`` (ms) is
    cluster-node-timeout, after which a silent master's replica takes over."""

    def __init__(self, workdir, masters=3, replicas=0, node_timeout=1000):
        self.workdir = str(workdir)
        self.masters, self.replicas = masters, replicas
        count = masters * (1 + replicas)
        self.nodes = [RedisNode(workdir, port, "--cluster-enabled", "yes",
                                "--cluster-config-file", f"nodes-{port}.conf",
                                "--cluster-node-timeout", str(node_timeout))
                      for port in cluster_ports(count)]

    @property
    def seeds(self) -> "list[str]":
        return [node.addr for node in self.nodes]

    def start(self) -> "RedisClusterGroup":
        import subprocess
        try:
            for node in self.nodes:
                node.start()
            subprocess.run([redis_cli_binary(), "--cluster", "create", *self.seeds,
                            "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            _wait(lambda: all(_answers(lambda: n.client().cluster("info")["cluster_state"]
                                       == "ok") for n in self.nodes), 30, "cluster state ok")
            if self.replicas:
                _wait(lambda: len(self.replica_nodes()) == self.masters * self.replicas
                      and all(_answers(lambda: n.client().info("replication").get(
                          "master_link_status") == "up") for n in self.replica_nodes()),
                      30, "replicas in sync")
        except BaseException:
            self.stop()
            raise
        return self

    def role(self, node) -> "str | None":
        return _answers(lambda: node.client().info("replication")["role"])

    def master_nodes(self) -> list:
        return [n for n in self.nodes if n.alive() and self.role(n) == "master"]

    def replica_nodes(self) -> list:
        return [n for n in self.nodes if n.alive() and self.role(n) == "slave"]

    def client(self):
        from redis.cluster import ClusterNode, RedisCluster
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes
                                           if n.alive()], decode_responses=True,
                            socket_timeout=2)

    def flushall(self) -> None:
        for node in self.master_nodes():
            node.client().flushall()
        for node in self.replica_nodes():  # the masters' flush has reached each replica
            _wait(lambda: _answers(lambda: node.client().dbsize() == 0), 10, "replica flushed")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {name} 127.0.0.1 {master} 2
sentinel down-after-milliseconds {name} {down_after}
sentinel failover-timeout {name} {failover_timeout}
sentinel parallel-syncs {name} 1
"""


class SentinelProcess(harness.RedisServer):
    what = "redis-sentinel"

    def __init__(self, workdir, port, conf_text):
        self.workdir = str(workdir)
        conf = os.path.join(self.workdir, f"sentinel-{port}.conf")
        with open(conf, "w") as fh:
            fh.write(conf_text)
        super().__init__(redis_binary(), port, self.workdir,
                         os.path.join(self.workdir, f"sentinel-{port}.log"))
        self.argv = [redis_binary(), conf, "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           decode_responses=True)


class SentinelGroup:
    """A master, ``replicas`` replicas and ``sentinels`` Sentinels (quorum 2) on loopback.
    A master silent for ``down_after`` ms is down; then the Sentinels promote a replica."""

    master_name = "imserver"

    def __init__(self, workdir, replicas=1, sentinels=3, down_after=1000,
                 failover_timeout=3000):
        self.workdir = str(workdir)
        ports = cluster_ports(1 + replicas + sentinels)
        self.master = RedisNode(workdir, ports[0])
        self.replicas = [RedisNode(workdir, p, "--replicaof", "127.0.0.1", str(ports[0]))
                         for p in ports[1:1 + replicas]]
        self.sentinels = [SentinelProcess(workdir, p, SENTINEL_CONF.format(
            port=p, dir=self.workdir, name=self.master_name, master=ports[0],
            down_after=down_after, failover_timeout=failover_timeout))
            for p in ports[1 + replicas:]]

    @property
    def redis_nodes(self) -> list:
        return [self.master] + self.replicas

    @property
    def sentinel_addrs(self) -> "list[str]":
        return [s.addr for s in self.sentinels]

    def start(self) -> "SentinelGroup":
        try:
            for proc in self.redis_nodes + self.sentinels:
                proc.start()
            self.wait_ready(self.master, 30)
        except BaseException:
            self.stop()
            raise
        return self

    def master_addr(self, sentinel) -> "str | None":
        found = _answers(lambda: sentinel.client().sentinel_get_master_addr_by_name(
            self.master_name))
        return f"{found[0]}:{found[1]}" if found else None

    def wait_ready(self, master, timeout) -> None:
        """Until every Sentinel names ``master``, knows its replicas (those alive) and the
        other Sentinels, and every replica alive is in sync."""
        alive = [r for r in self.redis_nodes if r is not master and r.alive()]

        def ready():
            for s in self.sentinels:
                if not s.alive():
                    continue
                c = s.client()
                if self.master_addr(s) != master.addr:
                    return False
                known = _answers(lambda: c.sentinel_slaves(self.master_name)) or []
                up = [r for r in known if not r.get("is_disconnected")
                      and "s_down" not in r.get("flags", "")]
                if len(up) < len(alive):
                    return False
                others = _answers(lambda: c.sentinel_sentinels(self.master_name)) or []
                if len(others) < sum(x.alive() for x in self.sentinels) - 1:
                    return False
            return all(_answers(lambda: r.client().info("replication").get(
                "master_link_status") == "up") for r in alive)

        _wait(ready, timeout, "sentinels and replicas ready")

    def current_master(self):
        """The Redis process the Sentinels name as master now."""
        named = {self.master_addr(s) for s in self.sentinels if s.alive()}
        for node in self.redis_nodes:
            if node.addr in named and node.alive():
                return node
        return None

    def stop(self) -> None:
        for proc in self.sentinels + self.redis_nodes:
            proc.stop()
