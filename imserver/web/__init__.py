"""Web layer: the Flask app factory and the blueprints."""
from .app import create_app
from .extension import get_node

__all__ = ["create_app", "get_node"]
