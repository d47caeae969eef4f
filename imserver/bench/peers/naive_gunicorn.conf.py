"""gunicorn settings for the naive benchmark peer (imserver/bench/peers/naive_server.py).

    PEER_PORT=8091 .venv/bin/python -m gunicorn -c imserver/bench/peers/naive_gunicorn.conf.py

One worker, gevent-websocket's worker (monkey-patches at start); HTTP and the WebSocket
endpoint /acc share one port. Environment: PEER_PORT (default 8091), PEER_HOST (default
127.0.0.1), PEER_WORKER_CONNECTIONS (default 30000), PEER_LOG_LEVEL (default warning).
"""
import os

pythonpath = os.path.dirname(os.path.abspath(__file__))
wsgi_app = "naive_server:app"
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
workers = 1
worker_connections = int(os.environ.get("PEER_WORKER_CONNECTIONS", "30000"))
bind = [f"{os.environ.get('PEER_HOST', '127.0.0.1')}:{os.environ.get('PEER_PORT', '8091')}"]
backlog = 4096
keepalive = 5
timeout = 30
graceful_timeout = 5
proc_name = "peer-naive"
control_socket_disable = True
loglevel = os.environ.get("PEER_LOG_LEVEL", "warning")
