"""gunicorn settings for the Flask-SocketIO benchmark peer (imserver/bench/peers/socketio_server.py).

    PEER_PORT=8090 .venv/bin/python -m gunicorn -c imserver/bench/peers/socketio_gunicorn.conf.py

One worker (Socket.IO rooms live in the process; more workers would need a message
queue and sticky sessions), gevent-websocket's worker, which monkey-patches at start.
Environment: PEER_PORT (default 8090), PEER_HOST (default 127.0.0.1),
PEER_WORKER_CONNECTIONS (default 30000), PEER_LOG_LEVEL (default warning).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunicorn_settings import settings  # noqa: E402

globals().update(settings("socketio_server", "peer-socketio", 8090))
