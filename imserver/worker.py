"""The gunicorn worker: gevent-websocket's worker, with one access-log line per request
(a WebSocket's is its 101) through gunicorn's access logger, and the node's admission
checks before any upgrade."""
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from gunicorn.workers.ggevent import PyWSGIHandler


class AccessLoggedWebSocketHandler(WebSocketHandler):
    log_request = PyWSGIHandler.log_request

    def upgrade_websocket(self):
        # Refusals (limits, origins, shutdown) are answered before the 101, in plain HTTP.
        from .web.acc import admit
        refusal = admit(self.application, self.environ)
        if refusal is None:
            return super().upgrade_websocket()
        status, body = refusal
        self.start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
        return [body]

    def get_environ(self):
        env = super().get_environ()
        env["gunicorn.sock"] = self.socket
        env["RAW_URI"] = self.path
        return env


class WebSocketWorker(GeventWebSocketWorker):
    wsgi_handler = AccessLoggedWebSocketHandler
