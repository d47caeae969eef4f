"""Request bodies, bounded at app.maxBodyBytes whoever reaches the node (a proxy may bound
them too, but the node is reachable directly): a body over the bound answers HTTP 413 with
code 1001 before more than the bound is read, chunked or not, and its connection is closed
instead of reading the rest. A route that takes larger bodies (file uploads) has its own
bound, set with ``allow_larger``; every other route keeps app.maxBodyBytes."""
import socket
import time

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..protocol import Code
from .responses import json_answer

LINGER_SECONDS = 2.0  # reading what a refused client still sends, before closing
BOUNDS_KEY = "imserver.bodies"  # app.extensions: endpoint -> (bound, detail) of allow_larger


def init_app(app: Flask, limit: int) -> None:
    # Flask's own bound covers a body read by a route (a form field too); the hooks below
    # cover what it leaves: a body no route reads, and a chunked body, which werkzeug cuts
    # off at the bound without a word.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_FORM_MEMORY_SIZE"] = limit
    detail = (f"the request body is larger than app.maxBodyBytes ({limit} bytes), or its "
              f"multipart form has more than {app.config['MAX_FORM_PARTS']} parts")
    larger = app.extensions[BOUNDS_KEY] = {}

    def bound() -> "tuple[int, str]":
        """(largest body, what a refusal says) for the route the request is for."""
        return larger.get(request.endpoint, (limit, detail))

    @app.before_request
    def bound_the_body():
        most, _ = bound()
        if most != limit:
            request.max_content_length = most  # for this request only
        if request.content_length is not None:
            if request.content_length > most:
                raise RequestEntityTooLarge()  # before any of it is read
        elif request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            request.get_data(cache=True)  # at most the bound, kept for the route
            if request.environ["wsgi.input"].read(1):
                raise RequestEntityTooLarge()

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        answer = json_answer(Code.PARAMETER_ILLEGAL, None, bound()[1], status=413)
        answer.headers["Access-Control-Allow-Origin"] = "*"
        return close_unread(answer)


def allow_larger(app: Flask, endpoint: str, most: int, detail: str) -> None:
    """Bodies of the route ``endpoint``, and of no other, may be up to ``most`` bytes
    instead of app.maxBodyBytes; a larger one is refused as any other, saying ``detail``.
    Form fields that are not files stay bounded by app.maxBodyBytes."""
    app.extensions[BOUNDS_KEY][endpoint] = (most, detail)


def close_unread(response: Response) -> Response:
    """Answer a request whose body is not read to its end, then close its connection
    instead of reading the rest (the WSGI server would read it all to keep the connection
    alive, however much the client sends)."""
    environ = request.environ
    response.headers["Connection"] = "close"
    response.call_on_close(lambda: _drop_rest_of_body(environ))
    return response


def _drop_rest_of_body(environ) -> None:
    stream = environ.get("wsgi.input")
    if hasattr(stream, "chunked_input") and hasattr(stream, "position"):
        # gevent's input stream: mark it read to its end, so that the server reads no more
        stream.chunked_input = False
        stream.content_length = stream.position
    sock = environ.get("gunicorn.sock")
    if sock is None:
        return
    # The answer is sent. A client that writes its whole body before it reads would get a
    # reset instead of the answer if the socket closed on unread data: take in what it
    # sends for a moment (a lingering close), then let the server close.
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass
