"""Shared fixtures. The suite runs under gevent monkey-patching, as the node does."""
from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

import os  # noqa: E402

# Tests run gRPC servers and channels in this process and start node processes beside them.
# grpcio's fork handlers can then abort the child between fork and exec (an epoll_wait
# EBADF in its poller thread, a known grpcio bug): a child that execs at once needs none.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest  # noqa: E402

from support import NodeProcess  # noqa: E402


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    """One node with the default settings, shared by the tests that only read or use
    their own users."""
    proc = NodeProcess(tmp_path_factory.mktemp("node"), name="shared").start()
    yield proc
    proc.stop()


@pytest.fixture
def make_node(tmp_path):
    """Start nodes with their own config: ``make_node({"app": {...}})``; all are stopped
    at the end of the test."""
    started = []

    def start(config=None, name=None, **kw):
        proc = NodeProcess(tmp_path, config, name=name or f"node{len(started)}", **kw).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def contract_redis(tmp_path_factory):
    """One real redis-server for a module of contract tests; each test empties it first."""
    from cluster_support import RedisProcess
    server = RedisProcess(tmp_path_factory.mktemp("contract-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server for one test; stopped at the end."""
    from cluster_support import RedisProcess
    server = RedisProcess(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def make_cluster_node(make_node, redis_server):
    """A node of a cluster on ``redis_server``: advertises 127.0.0.1 and reports every
    second, so that tests see joins and recoveries quickly."""

    def start(config=None, **kw):
        merged = {"app": {"advertiseAddr": "127.0.0.1", "reportInterval": 1},
                  "redis": {"addr": redis_server.addr}}
        for section, values in (config or {}).items():
            merged.setdefault(section, {}).update(values)
        return make_node(merged, **kw)

    return start


@pytest.fixture(scope="session")
def free_rpc_ports():
    """A function ``first(n)``: the first of ``n`` consecutive free ports for the rpc ports
    of an n-worker node (app.rpcPort + worker index). They are picked below the kernel's
    ephemeral range: on a busy machine an outgoing connection may take an ephemeral port
    between the check and the node's bind (gRPC binds the wildcard address)."""
    from imserver.bench.harness import low_ports

    def first(n=1):
        return low_ports(n, consecutive=True)[0]

    return first


@pytest.fixture
def start_cluster_node(make_cluster_node, free_rpc_ports):
    """make_cluster_node with ``workers`` gunicorn workers, its rpc ports from
    free_rpc_ports; ``proc.rpc_port`` is the first (worker 0's)."""

    def start(config=None, workers=1, **kw):
        rpc = free_rpc_ports(workers)
        merged = {section: dict(values) for section, values in (config or {}).items()}
        merged.setdefault("app", {}).update(workers=workers, rpcPort=rpc)
        proc = make_cluster_node(merged, **kw)
        proc.rpc_port = rpc
        return proc

    return start


@pytest.fixture(scope="module")
def contract_redis_cluster(tmp_path_factory):
    """A real Redis Cluster (3 masters, a replica each) for a module of contract tests."""
    from cluster_support import RedisClusterGroup
    group = RedisClusterGroup(tmp_path_factory.mktemp("contract-cluster"), replicas=1).start()
    yield group
    group.stop()


@pytest.fixture(scope="module")
def contract_redis_sentinel(tmp_path_factory):
    """A real master, one replica and three Sentinels for a module of contract tests."""
    from cluster_support import SentinelGroup
    group = SentinelGroup(tmp_path_factory.mktemp("contract-sentinel")).start()
    yield group
    group.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    """A fresh Redis Cluster of 3 masters and 3 replicas for one test (failovers)."""
    from cluster_support import RedisClusterGroup
    group = RedisClusterGroup(tmp_path, replicas=1).start()
    yield group
    group.stop()


@pytest.fixture
def redis_sentinel(tmp_path):
    """A fresh master, replica and three Sentinels for one test (failovers)."""
    from cluster_support import SentinelGroup
    group = SentinelGroup(tmp_path).start()
    yield group
    group.stop()
