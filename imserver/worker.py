"""The gunicorn worker: gevent-websocket's worker, with one access-log line per request
(including a WebSocket's 101, logged when it ends) through gunicorn's access logger."""
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from gunicorn.workers.ggevent import PyWSGIHandler


class AccessLoggedWebSocketHandler(WebSocketHandler):
    log_request = PyWSGIHandler.log_request

    def get_environ(self):
        env = super().get_environ()
        env["gunicorn.sock"] = self.socket
        env["RAW_URI"] = self.path
        return env


class WebSocketWorker(GeventWebSocketWorker):
    wsgi_handler = AccessLoggedWebSocketHandler
