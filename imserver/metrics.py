"""Prometheus metrics, served at /metrics.

Under gunicorn every worker writes its metrics to files in $PROMETHEUS_MULTIPROC_DIR
(gunicorn.conf.py sets it up), and a scrape of any worker reports the sum over all of
them. Hot paths count in bulk (one ``inc(n)`` per broadcast, not one per receiver);
gauges are refreshed by the node every few seconds, not on every change.
"""
import os
from collections import Counter as _LocalCounter

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CONNECTIONS = Gauge("imserver_connections", "Open WebSocket connections",
                    multiprocess_mode="livesum")
USERS = Gauge("imserver_users", "Logged-in users on this node", multiprocess_mode="livesum")
SEND_QUEUE_BYTES = Gauge("imserver_send_queue_bytes",
                         "Bytes waiting to be written to slow sockets",
                         multiprocess_mode="livesum")
SEND_QUEUE_CONNECTIONS = Gauge("imserver_send_queue_connections",
                               "Connections with a write backlog (each has a writer greenlet)",
                               multiprocess_mode="livesum")
MESSAGES_IN = Counter("imserver_messages_in", "WebSocket requests received, by cmd", ["cmd"])
MESSAGES_OUT = Counter("imserver_messages_out",
                       "Frames pushed by the node (msg, enter, exit), counted once per push",
                       ["cmd"])
DELIVERIES = Counter("imserver_deliveries", "Frames written to client sockets by pushes")
DROPS = Counter("imserver_drops", "Connections dropped or closed by the node, by reason",
                ["reason"])
RELAYS_SKIPPED = Counter("imserver_presence_relays_skipped",
                         "Presence events not relayed to peers because they were behind")
GRPC_CALLS = Counter("imserver_grpc_calls", "Calls to other nodes", ["peer", "method"])
GRPC_ERRORS = Counter("imserver_grpc_errors", "Failed calls to other nodes", ["peer", "method"])
REDIS_ERRORS = Counter("imserver_redis_errors", "Failed cluster-store commands")
COMMAND_SECONDS = Histogram("imserver_command_seconds", "WebSocket command handling time",
                            ["cmd"], buckets=(.0001, .00025, .0005, .001, .0025, .005, .01,
                                              .025, .05, .1, .25, 1))
HTTP_SECONDS = Histogram("imserver_http_seconds", "HTTP API handling time", ["route"],
                         buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 2.5))

# This process's own drop counts, for /system/state.
local_drops: "_LocalCounter[str]" = _LocalCounter()


def drop(reason: str, count: int = 1) -> None:
    local_drops[reason] += count
    DROPS.labels(reason).inc(count)


def exposition() -> "tuple[bytes, str]":
    """The text of a scrape: all workers' metrics when running under gunicorn."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
