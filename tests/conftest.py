"""Shared fixtures. The suite runs under gevent monkey-patching, as the node does."""
from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

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
    import random
    import socket

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            ephemeral_low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 20000, max(ephemeral_low, 21000)
    family, wildcard = ((socket.AF_INET6, "::") if socket.has_ipv6 else
                        (socket.AF_INET, "0.0.0.0"))

    def bindable(port):
        try:
            with socket.socket(family) as s:
                s.bind((wildcard, port))
            return True
        except OSError:
            return False

    def first(n=1, attempts=200):
        for _ in range(attempts):
            base = random.randrange(low, high - n)
            if all(bindable(p) for p in range(base, base + n)):
                return base
        raise RuntimeError(f"no {n} consecutive free ports in {low}-{high}")

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
