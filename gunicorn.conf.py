"""gunicorn settings, all derived from the node's config (config/app.yaml, IMSERVER_*).

Started by `python -m imserver`; `gunicorn -c gunicorn.conf.py` works the same.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from imserver.config import ConfigError, load_config  # noqa: E402
from imserver.logsetup import ACCESS_FORMAT, logging_dict  # noqa: E402

try:
    _cfg = load_config()
except ConfigError as exc:
    print(f"imserver: config error: {exc}", file=sys.stderr)
    sys.exit(2)

# Prometheus multi-process mode: every worker writes its metrics under one folder,
# emptied at start; a scrape of any worker adds them up.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="imserver-metrics-")
for _name in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
    if _name.endswith(".db"):
        os.remove(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], _name))

wsgi_app = "imserver.web:create_app()"
worker_class = "imserver.worker.WebSocketWorker"
bind = [f"{_cfg['app.host']}:{_cfg['app.httpPort']}", f"{_cfg['app.host']}:{_cfg['app.webSocketPort']}"]
workers = _cfg["app.workers"]
worker_connections = _cfg["app.workerConnections"]
backlog = 4096
keepalive = 5
timeout = 30
graceful_timeout = int(_cfg["app.drainWindow"]) + 10  # closes are spread over drainWindow
proc_name = "imserver"
control_socket_disable = True  # several nodes may run on one machine
logconfig_dict = logging_dict(_cfg)
access_log_format = ACCESS_FORMAT
loglevel = _cfg["app.logLevel"]


def when_ready(server):
    # Ctrl+C (SIGINT) stops gracefully, as SIGTERM does: the workers drain their clients
    # with 1001 instead of dropping them. SIGQUIT stays the immediate stop.
    server.handle_int = server.handle_term


def pre_fork(server, worker):
    # Each worker gets the lowest index no live worker holds, so a restarted worker
    # takes over its predecessor's rpc port and advertised address.
    used = {getattr(w, "imserver_index", None) for w in server.WORKERS.values()}
    index = 0
    while index in used:
        index += 1
    worker.imserver_index = index


def post_fork(server, worker):
    os.environ["IMSERVER_WORKER_INDEX"] = str(worker.imserver_index)


def post_worker_init(worker):
    from imserver.runtime import watch_worker
    watch_worker(worker)


def worker_exit(server, worker):
    # Clients get their close frames before the process goes (bounded by graceful_timeout).
    from imserver.runtime import stop_nodes
    stop_nodes(timeout=graceful_timeout)


def child_exit(server, worker):
    # A dead worker's live gauges must stop counting.
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        import shutil
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
