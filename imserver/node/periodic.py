"""Background work: run a function every N seconds in a greenlet of its own."""
import logging
from typing import Callable, Union

import gevent

log = logging.getLogger("imserver.node")


def every(interval: Union[float, Callable[[], float]], fn: Callable[[], object],
          what: str) -> gevent.Greenlet:
    """Call ``fn()`` every ``interval`` seconds (a number, or a function read before each
    wait), first after one interval. An exception is logged as "``what`` failed" and the
    loop goes on: background work must survive anything. Kill the greenlet to stop."""
    wait = interval if callable(interval) else (lambda: interval)

    def loop():
        while True:
            gevent.sleep(wait())
            try:
                fn()
            except Exception:
                log.exception("%s failed", what)

    return gevent.spawn(loop)
