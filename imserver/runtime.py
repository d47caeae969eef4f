"""The node's runtime in a server process: building a node and its cluster engines for the
configured mode, its gRPC server, the registry of this process's nodes, and the hooks
that stop them with the gunicorn worker."""
import logging
import os
import socket
import time

import gevent

from .auth import Auth
from .config import is_cluster, redis_mode
from .node import Node

log = logging.getLogger("imserver")

WORKER_INDEX_ENV = "IMSERVER_WORKER_INDEX"  # set by gunicorn.conf.py for each worker
_nodes: "list[Node]" = []  # nodes of this process, stopped when the worker stops


def require_gevent_patching() -> None:
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        raise RuntimeError(
            "gevent monkey-patching has not run: start the node with `python -m imserver` "
            "(gunicorn's gevent worker patches first), or call gevent.monkey.patch_all() "
            "before importing anything else")


def resolve_advertise_ip(configured: str) -> str:
    """The address peers use to reach this node: the configured one, else the machine's
    first non-loopback IPv4 address, else 127.0.0.1."""
    if configured:
        return configured
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        ip = info[4][0]
        if not ip.startswith("127."):
            return ip
    return "127.0.0.1"


def build_node(cfg: dict) -> Node:
    """Pick the cluster engines for the configured mode and make the node. In cluster
    mode each gunicorn worker is a node of its own, on rpc port app.rpcPort + index."""
    rpc_port = cfg["app.rpcPort"] + int(os.environ.get(WORKER_INDEX_ENV, "0"))
    advertise_ip = resolve_advertise_ip(cfg["app.advertiseAddr"])
    auth = Auth(cfg)
    if not is_cluster(cfg):
        from .cluster import MemoryPresenceStore, NoPeersRelay
        return Node(cfg, MemoryPresenceStore(), NoPeersRelay(), auth, advertise_ip, rpc_port)

    from .cluster.grpc_relay import enable_gevent
    enable_gevent()  # before any gRPC object exists
    from .cluster.grpc_relay import GrpcRelay, start_server
    from .cluster.redis_store import RedisPresenceStore, client_from_config
    from .cluster.redis_streams import RedisStreamStore

    store = RedisPresenceStore(client_from_config(cfg), cfg["redis.timeout"])
    gevent.spawn(store.warm_up, cfg["redis.minIdleConns"])
    relay = GrpcRelay(cfg["app.rpcTimeout"], metadata=auth.rpc_metadata())
    replicated = redis_mode(cfg) in ("cluster", "sentinel")  # appends wait for a replica
    node = Node(cfg, store, relay, auth, advertise_ip, rpc_port,
                streams=RedisStreamStore(store.bounded, wait_replicas=1 if replicated else 0))
    node.on_stop(store.close)
    node.on_stop(relay.close)
    server = start_server(node.delivery, cfg["app.rpcHost"], rpc_port, secrets=auth.rpc_secrets)
    node.on_stop(lambda: server.stop(grace=1))
    return node


def start_node(cfg: dict, start: bool = True) -> Node:
    """Build this process's node, register it for the worker hooks, and (``start``) start
    its background work."""
    node = build_node(cfg)
    _nodes.append(node)
    if start:
        node.start()
        log.info("node %s serving appIDs %s in %s mode", node.addr,
                 ",".join(map(str, cfg["app.appIDs"])),
                 "cluster" if is_cluster(cfg) else "embedded single-node")
        for line in node.auth.warnings():
            log.warning("%s", line)
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


def stop_nodes(timeout: float) -> None:
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
