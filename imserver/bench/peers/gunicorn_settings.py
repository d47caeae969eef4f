"""The gunicorn settings both comparison peers share: one gevent-websocket worker, HTTP
and WebSocket on one loopback port. Environment: PEER_PORT, PEER_HOST (default
127.0.0.1), PEER_WORKER_CONNECTIONS (default 30000), PEER_LOG_LEVEL (default warning)."""
import os


def settings(module: str, proc_name: str, default_port: int) -> dict:
    """The settings of the peer whose Flask app is ``module:app`` (a module beside this
    file), as names and values of a gunicorn config file."""
    env = os.environ.get
    return {
        "pythonpath": os.path.dirname(os.path.abspath(__file__)),
        "wsgi_app": f"{module}:app",
        "worker_class": "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
        "workers": 1,
        "worker_connections": int(env("PEER_WORKER_CONNECTIONS", "30000")),
        "bind": [f"{env('PEER_HOST', '127.0.0.1')}:{env('PEER_PORT', str(default_port))}"],
        "backlog": 4096,
        "keepalive": 5,
        "timeout": 30,
        "graceful_timeout": 5,
        "proc_name": proc_name,
        "control_socket_disable": True,
        "loglevel": env("PEER_LOG_LEVEL", "warning"),
    }
