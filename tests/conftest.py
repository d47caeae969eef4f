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
