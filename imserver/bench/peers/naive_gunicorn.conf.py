"""gunicorn settings for the naive benchmark peer (imserver/bench/peers/naive_server.py).

    PEER_PORT=8091 .venv/bin/python -m gunicorn -c imserver/bench/peers/naive_gunicorn.conf.py

One worker, gevent-websocket's worker (monkey-patches at start); HTTP and the WebSocket
endpoint /acc share one port. Environment: PEER_PORT (default 8091), PEER_HOST (default
127.0.0.1), PEER_WORKER_CONNECTIONS (default 30000), PEER_LOG_LEVEL (default warning).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunicorn_settings import settings  # noqa: E402

globals().update(settings("naive_server", "peer-naive", 8091))
