"""``python -m imserver.bench private`` and ``python -m imserver.bench offline``: private
messages and the inbox (docs/PROTOCOL.md, "Devices, private messages and the inbox").

Both start what they measure, as the recovery scenario does: one embedded node
(``--nodes 1``) or their own ``redis-server`` and two cluster nodes (``--nodes 2``), on
loopback ports below the kernel's ephemeral range, stopped by pid at the end (also on
Ctrl-C, SIGTERM or ``--max-seconds``). The clients live in worker processes
(``python -m imserver.bench.inbox.worker``, 5,000 connections each by default), bound to
127.0.0.2 and up.

- ``private``: users online, each logged in with a deviceID; ``--messages`` private
  messages at ``--rate``/s through ``POST /user/sendMessage``, then as many WebSocket
  ``send`` frames by other logged-in users; latency from the call to the receiver's frame,
  and every accepted message read exactly once by its receiver.
- ``offline``: ``--per-user`` messages stored for each of ``-n`` offline users, memory per
  stored message (Redis ``used_memory``, the nodes' RSS); then every user logs in with a
  deviceID at ``--login-rate``/s and must get each of its messages once, in offset order;
  then acks, and a sample logs in again to find nothing unacknowledged.

``python -m imserver.bench private --help`` (or ``offline --help``) lists the options.
"""
from .options import NAMES, OFFLINE, PRIVATE, add_parsers


def main(args, argv) -> int:
    # Imported here: the worker processes (this package's ``worker`` module) patch with
    # gevent before they import anything that opens sockets.
    from .run import main as run_main
    return run_main(args, argv)

__all__ = ["NAMES", "OFFLINE", "PRIVATE", "add_parsers", "main"]
