"""gunicorn settings for the Flask-SocketIO benchmark peer (imserver/bench/peers/socketio_server.py).

    PEER_PORT=8090 .venv/bin/python -m gunicorn -c imserver/bench/peers/socketio_gunicorn.conf.py

One worker (Socket.IO rooms live in the process; more workers would need a message
queue and sticky sessions), gevent-websocket's worker, which monkey-patches at start.
Environment: PEER_PORT (default 8090), PEER_HOST (default 127.0.0.1),
PEER_WORKER_CONNECTIONS (default 30000), PEER_LOG_LEVEL (default warning).
"""
import os

pythonpath = os.path.dirname(os.path.abspath(__file__))
wsgi_app = "socketio_server:app"
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
workers = 1
worker_connections = int(os.environ.get("PEER_WORKER_CONNECTIONS", "30000"))
bind = [f"{os.environ.get('PEER_HOST', '127.0.0.1')}:{os.environ.get('PEER_PORT', '8090')}"]
backlog = 4096
keepalive = 5
timeout = 30
graceful_timeout = 5
proc_name = "peer-socketio"
control_socket_disable = True
loglevel = os.environ.get("PEER_LOG_LEVEL", "warning")
