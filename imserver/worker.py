"""The gunicorn worker: gevent-websocket's worker with one gate in front of every WebSocket
upgrade, deadlines on request heads and idle keep-alives, a bound on the sockets that are
waiting for a request head, requests with ambiguous lengths refused, one access-log line
per request, and SIGINT draining the node as SIGTERM does."""
import logging
import signal

import gevent
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from gevent.pywsgi import _InvalidClientRequest
from gunicorn.workers.ggevent import PyWSGIHandler

from . import metrics
from .throttle import ThrottledLog

log = logging.getLogger("imserver.worker")


class AccessLoggedWebSocketHandler(WebSocketHandler):
    log_request = PyWSGIHandler.log_request

    # Set by the worker from the node's config before it serves (see WebSocketWorker.run).
    head_timeout = 5.0  # app.headerTimeout: the first request line and headers
    keepalive = 5.0  # gunicorn's keepalive: idle time allowed between two requests
    max_waiting = 500  # app.maxPendingSockets, capped below the worker's pool size
    # Handlers waiting for a request head (a new socket, or a kept-alive one between two
    # requests), oldest first. Upgraded WebSockets and requests being served are not here.
    waiting: "dict[AccessLoggedWebSocketHandler, None]" = {}
    _timed_out_log = ThrottledLog(log, logging.INFO,
                                  "closed a socket that sent no complete request head in %.1fs")
    _evicted_log = ThrottledLog(log, logging.INFO,
                                "%d sockets wait for a request head: closed the oldest")
    _head_timer = None
    _served = 0

    # -- deadlines and the bound ---------------------------------------------------------

    def handle_one_request(self):
        first = self._served == 0
        self._wait_for_head()
        timer = self._head_timer = gevent.Timeout(self.head_timeout if first else self.keepalive)
        timer.start()
        try:
            result = super().handle_one_request()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if first:
                metrics.drop("header_timeout")
                self._timed_out_log(self.head_timeout)
            return None  # closes the socket
        finally:
            timer.close()
            self.waiting.pop(self, None)
        self._served += 1
        return result

    def _wait_for_head(self) -> None:
        waiting = self.waiting
        while len(waiting) >= self.max_waiting:
            oldest = next(iter(waiting))
            waiting.pop(oldest)
            metrics.drop("pending_evicted")
            self._evicted_log(self.max_waiting)
            oldest.close_waiting()
        waiting[self] = None

    def close_waiting(self) -> None:
        """End this handler's wait for a request head: its read sees the end of stream."""
        sock = getattr(self, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(2)  # SHUT_RDWR
            except OSError:
                pass

    @classmethod
    def close_all_waiting(cls) -> int:
        """At shutdown: idle keep-alives and half-sent heads must not hold the worker."""
        handlers = list(cls.waiting)
        cls.waiting.clear()
        for handler in handlers:
            handler.close_waiting()
        return len(handlers)

    def get_environ(self):
        # The head is complete: the rest of the request is not bound by the head deadline.
        if self._head_timer is not None:
            self._head_timer.close()
        self.waiting.pop(self, None)
        env = super().get_environ()
        env["gunicorn.sock"] = self.socket
        env["RAW_URI"] = self.path
        return env

    # -- requests that parse two ways ----------------------------------------------------

    def MessageClass(self, *args):
        headers = super().MessageClass(*args)
        refusal = ambiguous_length(headers)
        if refusal:
            metrics.drop("bad_request")
            raise _InvalidClientRequest(f"refused: {refusal}")
        return headers

    # -- the gate ------------------------------------------------------------------------

    def upgrade_websocket(self):
        # Every upgrade goes through the node's gate (path, origin, limits, shutdown);
        # refusals are answered before the 101, in plain HTTP.
        if not wants_upgrade(self.environ):
            return super().upgrade_websocket()
        from .web.acc import admit
        refusal = admit(self.application, self.environ)
        if refusal is None:
            return super().upgrade_websocket()
        status, body = refusal
        self.close_connection = True
        self.start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body))),
                                     ("Connection", "close")])
        return [body]


def wants_upgrade(environ) -> bool:
    """Would gevent-websocket upgrade this request, whatever its path?"""
    return (environ.get("REQUEST_METHOD") == "GET"
            and environ.get("HTTP_UPGRADE", "").lower() == "websocket")


def ambiguous_length(headers) -> str:
    """Why a request's body length could be read two ways (by this node and by a proxy in
    front of it), or "" when it cannot: more than one Content-Length, a Transfer-Encoding
    other than a lone "chunked", or both headers."""
    lengths = headers.get_all("Content-Length") or []
    encodings = headers.get_all("Transfer-Encoding") or []
    if len(lengths) > 1:
        return "more than one Content-Length"
    if encodings and (len(encodings) > 1 or encodings[0].strip().lower() != "chunked"):
        return "a Transfer-Encoding other than chunked"
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding"
    return ""


class WebSocketWorker(GeventWebSocketWorker):
    wsgi_handler = AccessLoggedWebSocketHandler

    def run(self):
        from .web.extension import node_of
        handler = self.wsgi_handler
        handler.keepalive = float(self.cfg.keepalive)
        node = node_of(self.wsgi)
        if node is not None:
            handler.head_timeout = node.cfg["app.headerTimeout"]
            # The pool must keep room for requests being served and for new sockets, or
            # waiting ones would stop the worker from accepting at all.
            handler.max_waiting = max(1, min(node.cfg["app.maxPendingSockets"],
                                             self.worker_connections // 2))
        super().run()

    def init_signals(self):
        super().init_signals()
        # Ctrl+C drains the node (1001 to every client) as SIGTERM does; SIGQUIT stays the
        # immediate stop.
        signal.signal(signal.SIGINT, self.handle_exit)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        gevent.spawn(self.wsgi_handler.close_all_waiting)
