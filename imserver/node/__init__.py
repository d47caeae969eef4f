"""The node: one process's connections, presence and delivery, composed over a cluster's
presence store and relay (``Node``), with its parts in one module each."""
from . import room_commands  # noqa: F401  (registers join, leave, publish, history)
from .commands import CommandRegistry, commands
from .node import Node

__all__ = ["CommandRegistry", "Node", "commands"]
