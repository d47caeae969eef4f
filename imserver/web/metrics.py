"""``/metrics`` in the Prometheus text format, and HTTP timing for every API route."""
import time

from flask import Blueprint, Response, g, request

from .. import metrics
from .extension import get_node

bp = Blueprint("metrics", __name__)


@bp.route("/metrics")
def scrape():
    get_node().update_gauges()  # this worker's now; the others' within a few seconds
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.before_app_request
def start_timer():
    g.imserver_started = time.perf_counter()


@bp.after_app_request
def observe(response):
    started = g.pop("imserver_started", None)
    if started is not None and request.url_rule is not None and request.blueprint in ("api", "system"):
        metrics.HTTP_SECONDS.labels(request.url_rule.rule).observe(time.perf_counter() - started)
    return response
