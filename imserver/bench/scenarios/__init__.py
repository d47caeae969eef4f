"""The scenarios. A ``Bench`` holds the client workers, the connections' state, the
server processes and the results; each scenario is a module whose ``run(bench)`` adds one
entry to ``results["scenarios"]``. In a suite they share one set of connections: connect
once, then idle, broadcast and unicast on those connections, churn alongside them.
"""
from .bench import ORDER, Bench
from .connect import NothingConnected

__all__ = ["ORDER", "Bench", "NothingConnected"]
