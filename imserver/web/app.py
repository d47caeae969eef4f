"""The app factory: configuration, then the Flask app with the node attached as its
extension, then the blueprints. No app object exists at import time."""
import os
from typing import Any, Mapping, Optional

from flask import Flask, request

from .. import runtime
from ..config import load_config
from ..protocol import Code
from . import bodies, extension
from .responses import ApiError, json_answer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def create_app(overrides: Optional[Mapping[str, Any]] = None, config_path: Optional[str] = None,
               start: bool = True) -> Flask:
    """Build the app and its node (started unless ``start`` is false). ``overrides`` maps
    dotted config keys to values and wins over the file and the environment (for tests)."""
    runtime.require_gevent_patching()
    cfg = load_config(config_path, overrides=overrides)
    app = Flask("imserver", root_path=ROOT, template_folder="templates", static_folder="static")
    app.config["IMSERVER"] = cfg
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    bodies.init_app(app, cfg["app.maxBodyBytes"])
    extension.init_app(app, runtime.start_node(cfg, start=start))

    from . import acc, api, home, metrics, rooms, system
    for blueprint in (acc.bp, api.bp, rooms.bp, system.bp, home.bp, metrics.bp):
        app.register_blueprint(blueprint)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        answer = exc.answer()
        answer.headers["Access-Control-Allow-Origin"] = "*"
        return answer

    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(exc):
        answer = json_answer(Code.ROUTING_NOT_EXIST, None, f"{exc.name}: {request.method} {request.path}")
        answer.status_code = exc.code
        answer.headers["Access-Control-Allow-Origin"] = "*"
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            answer.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return answer

    return app
