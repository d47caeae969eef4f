"""``python -m imserver.bench recovery``: a node drained under a room's traffic; its clients
recover the room's messages on the other node.

Like the soak, it starts what it measures, on loopback ports below the kernel's ephemeral
range, and stops it by pid at the end (also on Ctrl-C, SIGTERM or ``--max-seconds``):

- its own ``redis-server`` (``--save "" --appendonly no``) and two cluster nodes A and B
  (``python -m imserver --config <out>/node-a.yaml``, one worker each,
  ``drainWindow: --drain-window``);
- ``-n`` clients log in on node A and ``join`` the named ``--room``; ``--b-members``
  clients do the same on node B and stay there;
- Redis commands per message: ``INFO commandstats`` over ``--stats-idle`` s with no sends,
  then around ``--stats-messages`` ``/room/publish`` calls and as many
  ``/user/sendMessageAll`` through node B, one at a time; reported by command, per
  message, gross and net of the idle rate;
- the drain: node A gets SIGTERM (its clients get close 1001, spread over its drain
  window) while ``--messages`` go to the room through node B's ``/room/publish`` at
  ``--publish-rate``/s. Each closed client waits a random 0..``--spread`` s, connects to
  node B, logs in and sends ``join`` with ``since`` = the last epoch/offset it saw
  (``--reconnect-tries`` attempts, with a growing pause);
- verified: every client (those of A and B) has every accepted message of the room
  published after its first join exactly once (join-reply publications and live pushes),
  in offset order. Reported: counts, recovered / not recovered, the time from the drain
  to the last client recovered and per client (drain -> recovered, close -> recovered,
  p50/p99).

Exit code 0 when every client of A was closed with 1001 and recovered, every message
was accepted and none was lost, duplicated or out of order; 1 otherwise (the reasons on
stderr and in results.json), 2 when the run could not be set up, 3 when
``--max-seconds`` stopped it, 130 when interrupted.

Output in ``--out``: results.json, results.md, publications.jsonl (every publish and its
answer) and the nodes' and Redis's logs.
"""
from .options import NAME, add_parser
from .run import main

__all__ = ["NAME", "add_parser", "main"]
