"""``python -m imserver.bench soak``: a long run with churn and faults, orchestrated.

Unlike the other scenarios, which load addresses they are given, the soak controls its
processes, so it starts them itself, on loopback, and stops them by pid at the end:

- its own ``redis-server`` (``--save "" --appendonly no``) and two cluster nodes A and B
  (``python -m imserver --config <run folder>/node-a.yaml``), on free ports below the
  kernel's ephemeral range (a restarted process gets its port back);
- ``--steady`` users logged in on node A for the whole run, with heartbeats;
- churners: ``--churn-rate`` connect/login/hold/leave cycles a second, alternating A and
  B, each holding a random ``--churn-hold-min``..``--churn-hold-max`` seconds, drawn from
  ``--churners`` user IDs (a user comes back under the same ID; at most that many at once);
- traffic: ``/user/sendMessage`` to random steady users at ``--rate``/s with unique
  msgIDs, the HTTP entry alternating A and B (half of them cross nodes), and a room
  broadcast ``/user/sendMessageAll`` every ``--broadcast-interval`` s, also alternating;
- events: at 1/3 of ``--duration`` Redis is stopped (SIGTERM) for ``--redis-down`` s and
  started again, empty, on its port; the nodes must register again and rewrite their
  users (checked from node B: ``/user/list`` lists every steady user and ``/user/online``
  answers true). At 2/3 node B's master and worker are SIGKILLed and B restarted after
  ``--node-down`` s (checked the same way).

A send is ACCEPTED when it answers code 200 with ``sendResults`` true; anything else is
refused and counted by answer (``1004``, ``1100``, ``200 user is not online``, ``error
ConnectionRefusedError`` ...). A broadcast answered "delivered on this node only" (Redis
down) is accepted locally: it must reach the steady users only when it entered at A.

Measured: node A's worker RSS at the baseline (steady users logged in, a short warm-up,
before churn) and at the end (churn stopped, ``--settle`` s later), sampled every
``--sample-interval`` s; every accepted unicast must reach its user (matched by msgID),
every accepted broadcast every steady user; steady users dropped (must be 0); churn rate
and failures by reason and phase; the events' times and the recoveries.

Exit code 0 when every accepted message reached its steady user(s), no steady user was
dropped, both recoveries were seen, nothing was refused or failed outside the event
windows (a send or churn cycle overlapping a window, give or take 1 s, is put down to
it), and the end RSS of node A's worker is at most the baseline plus the larger of
``--rss-tolerance-pct`` (20 %) and ``--rss-tolerance-mb`` (10 MB); 1 otherwise (the
reasons on stderr and in results.json), 2 when the run could not be set up, 3 when
``--max-seconds`` stopped it, 130 when interrupted.

Output in ``--out``: results.json, results.md, rss.png (RSS over time with the events),
sends.jsonl (every send and its answer), and the nodes' and Redis's logs.
"""
from .memory import rss_limit_kb
from .options import NAME, add_parser
from .run import main
from .traffic import classify_answer

__all__ = ["NAME", "add_parser", "main", "classify_answer", "rss_limit_kb"]
