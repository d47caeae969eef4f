"""The composition root: configuration, then the node and its cluster engines, then the
blueprints. No app object exists at import time."""
import logging
import os
from typing import Any, Mapping, Optional

from flask import Flask, current_app, request

from ..config import load_config
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


def build_node(cfg: dict) -> Node:
    """Pick the cluster engines for the configured mode and make the node."""
    from ..cluster import MemoryPresenceStore, NoPeersRelay
    store, relay = MemoryPresenceStore(), NoPeersRelay()
    return Node(cfg, store, relay, resolve_advertise_ip(""))


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
    app.extensions[NODE_KEY] = node

    from . import acc, api, home, system
    app.register_blueprint(acc.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(system.bp)
    app.register_blueprint(home.bp)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(exc):
        answer = json_answer(Code.ROUTING_NOT_EXIST, None, f"{exc.name}: {request.method} {request.path}")
        answer.status_code = exc.code
        answer.headers["Access-Control-Allow-Origin"] = "*"
        return answer

    if start:
        node.start()
        log.info("node %s serving appIDs %s in %s mode", node.addr,
                 ",".join(map(str, cfg["app.appIDs"])),
                 "cluster" if cfg["redis.addr"] else "embedded single-node")
    return app


def get_node() -> Node:
    return current_app.extensions[NODE_KEY]
