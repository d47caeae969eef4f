"""The node as the app's extension: ``init_app`` attaches it to the app, ``get_node`` reaches
it from a request, ``node_of`` from the app outside one. Blueprints import this module,
never the app factory."""
from typing import Optional

from flask import Flask, current_app

from ..node import Node

NODE_KEY = "imserver.node"


def init_app(app: Flask, node: Node) -> None:
    app.extensions[NODE_KEY] = node


def get_node() -> Node:
    """The node of the app that handles the current request."""
    return current_app.extensions[NODE_KEY]


def node_of(app) -> Optional[Node]:
    """The node of ``app``, or None when it has none (another WSGI app)."""
    extensions = getattr(app, "extensions", None)
    return extensions.get(NODE_KEY) if extensions else None
