"""What every part of a soak run shares: its settings and randomness, its clock, the
event log with the fault windows, and its background greenlets."""
import random
import sys
import time

import gevent
from gevent.event import Event
from gevent.pool import Group

EVENT_GRACE = 1.0  # seconds around an event window in which a failure is put down to it


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) to the soak: stop and clean up."""


class Context:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.run_id = "soak%04x" % random.getrandbits(16)
        self.quiet = args.quiet
        self.errors = []
        self.t0 = None  # wall time at which churn and traffic start
        self.setup_t = time.time()
        self.t_end = None
        self.windows = []  # [name, start, end or None], relative seconds
        self.events = []
        self.stopping = Event()
        self.stage = "setup"
        self.background = Group()

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"soak: {text}", file=sys.stderr, flush=True)

    def rel(self, t=None) -> float:
        """Seconds since the start of churn and traffic (since the setup before it)."""
        t = time.time() if t is None else t
        return round(t - self.t0, 3) if self.t0 is not None else round(t - self.setup_t, 3)

    def event(self, name: str, **info) -> None:
        now = time.time()
        entry = {"event": name, "t": self.rel(now),
                 "at": time.strftime("%H:%M:%S", time.localtime(now)), **info}
        self.events.append(entry)
        self.log(f"event {name} at t={entry['t']:.1f}s " + " ".join(
            f"{k}={v}" for k, v in info.items()))

    def open_window(self, name: str) -> None:
        self.windows.append([name, self.rel(), None])

    def close_window(self, name: str) -> None:
        for w in self.windows:
            if w[0] == name and w[2] is None:
                w[2] = self.rel()

    def phase(self, rel_t: float, rel_end: float = None) -> str:
        """The event window at ``rel_t``; else one that the span ``rel_t``..``rel_end``
        overlaps, give or take EVENT_GRACE s (a send under way when Redis stopped);
        else "normal": no fault was injected then."""
        for name, start, end in reversed(self.windows):
            if start <= rel_t and (end is None or rel_t < end):
                return name
        if rel_end is not None:
            for name, start, end in reversed(self.windows):
                if start - EVENT_GRACE <= rel_end and (end is None or rel_t <= end + EVENT_GRACE):
                    return name
        return "normal"

    def guarded(self, fn, *args):
        """Run a background loop; an unexpected error is recorded, not lost."""
        try:
            fn(*args)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            name = getattr(fn, "__qualname__", fn.__name__)
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"soak: error in {name}: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)

    def spawn(self, fn, *args):
        """A background greenlet, killed when the run closes."""
        g = gevent.spawn(self.guarded, fn, *args)
        self.background.add(g)
        return g

    def sleep_until(self, rel_t: float) -> bool:
        """Sleep until ``rel_t`` seconds after t0; False when the run is stopping."""
        delay = self.t0 + rel_t - time.time()
        if delay > 0:
            return not self.stopping.wait(delay)
        return not self.stopping.is_set()

    def keeps_going(self, rel_t: float) -> bool:
        """Sleep until ``rel_t``; False when the run is stopping or the traffic is over."""
        return self.sleep_until(rel_t) and time.time() < self.t_end
