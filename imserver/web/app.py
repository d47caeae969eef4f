"""The composition root: configuration, then the node and its cluster engines, then the
blueprints. No app object exists at import time."""
import logging
import os
import time

import gevent
from typing import Any, Mapping, Optional

from flask import Flask, current_app, request

from ..auth import Auth
from ..config import is_cluster, load_config
from ..node import Node, resolve_advertise_ip
from ..protocol import Code
from .responses import json_answer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_KEY = "imserver.node"

log = logging.getLogger("imserver")


def _require_gevent_patching():
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        raise RuntimeError(
            "gevent monkey-patching has not run: start the node with `python -m imserver` "
            "(gunicorn's gevent worker patches first), or call gevent.monkey.patch_all() "
            "before importing anything else")


WORKER_INDEX_ENV = "IMSERVER_WORKER_INDEX"  # set by gunicorn.conf.py for each worker
_nodes: "list[Node]" = []  # nodes of this process, stopped when the worker stops


def build_node(cfg: dict) -> Node:
    """Pick the cluster engines for the configured mode and make the node. In cluster
    mode each gunicorn worker is a node of its own, on rpc port app.rpcPort + index."""
    rpc_port = cfg["app.rpcPort"] + int(os.environ.get(WORKER_INDEX_ENV, "0"))
    advertise_ip = resolve_advertise_ip(cfg["app.advertiseAddr"])
    auth = Auth(cfg)
    if not is_cluster(cfg):
        from ..cluster import MemoryPresenceStore, NoPeersRelay
        node = Node(cfg, MemoryPresenceStore(), NoPeersRelay(), advertise_ip, rpc_port)
        node.auth = auth
        return node

    from ..cluster.grpc_relay import enable_gevent
    enable_gevent()  # before any gRPC object exists
    from ..cluster.grpc_relay import GrpcRelay, start_server
    from ..cluster.redis_store import RedisPresenceStore, connection_pool

    store = RedisPresenceStore(connection_pool(
        cfg["redis.url"], cfg["redis.addr"], cfg["redis.password"], cfg["redis.DB"],
        cfg["redis.poolSize"], cfg["redis.timeout"]))
    gevent.spawn(store.warm_up, cfg["redis.minIdleConns"])
    relay = GrpcRelay(cfg["app.rpcTimeout"], metadata=auth.rpc_metadata())
    node = Node(cfg, store, relay, advertise_ip, rpc_port)
    node.auth = auth
    node.on_stop(store.close)
    node.on_stop(relay.close)
    server = start_server(node, cfg["app.rpcHost"], rpc_port, secrets=auth.rpc_secrets)
    node.on_stop(lambda: server.stop(grace=1))
    return node


def watch_worker(worker, interval: float = 0.2) -> None:
    """Stop this process's nodes as soon as gunicorn asks the worker to exit (SIGTERM,
    graceful reload): leave the registry and close clients with 1001 at once."""

    def watch():
        while worker.alive:
            gevent.sleep(interval)
        log.info("worker stopping: closing %d node(s)", len(_nodes))
        for node in _nodes:
            node.stop()

    gevent.spawn(watch)


def drain(timeout: float) -> None:
    """Before the worker process ends: stop the nodes (if not yet) and wait, at most
    ``timeout`` seconds, until their clients are gone. WebSocket connections are not
    gunicorn requests, so gunicorn itself does not wait for them."""
    for node in _nodes:
        node.stop()
    deadline = time.monotonic() + timeout
    for node in _nodes:
        node.wait_stopped(max(0.0, deadline - time.monotonic()))
    left = sum(len(node.hub.connections) for node in _nodes)
    if left:
        log.warning("%d connections still open at exit", left)


def create_app(overrides: Optional[Mapping[str, Any]] = None, config_path: Optional[str] = None,
               start: bool = True) -> Flask:
    """Build the app. ``overrides`` maps dotted config keys to values and wins over
    the file and the environment (for tests)."""
    _require_gevent_patching()
    cfg = load_config(config_path, overrides=overrides)
    app = Flask("imserver", root_path=ROOT, template_folder="templates", static_folder="static")
    app.config["IMSERVER"] = cfg
    app.json.ensure_ascii = False
    app.json.sort_keys = False

    node = build_node(cfg)
    _nodes.append(node)
    app.extensions[NODE_KEY] = node

    from . import acc, api, home, metrics, system
    app.register_blueprint(acc.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(system.bp)
    app.register_blueprint(home.bp)
    app.register_blueprint(metrics.bp)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(exc):
        answer = json_answer(Code.ROUTING_NOT_EXIST, None, f"{exc.name}: {request.method} {request.path}")
        answer.status_code = exc.code
        answer.headers["Access-Control-Allow-Origin"] = "*"
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            answer.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return answer

    if start:
        node.start()
        log.info("node %s serving appIDs %s in %s mode", node.addr,
                 ",".join(map(str, cfg["app.appIDs"])),
                 "cluster" if is_cluster(cfg) else "embedded single-node")
        for line in node.auth.warnings():
            log.warning("%s", line)
    return app


def get_node() -> Node:
    return current_app.extensions[NODE_KEY]
