"""Log lines that an attacker or a broken peer could make repeat thousands of times a
second: at most one per interval for each kind, with how many were held back."""
import logging
import time

DEFAULT_EVERY = 10.0  # seconds between two lines of one kind


class ThrottledLog:
    def __init__(self, logger: logging.Logger, level: int, text: str,
                 every: float = DEFAULT_EVERY, clock=time.monotonic):
        self.logger = logger
        self.level = level
        self.text = text
        self.every = every
        self.clock = clock
        self.held = 0  # lines not written since the last one
        self.last = float("-inf")

    def __call__(self, *args) -> bool:
        """Write the line now if the interval has passed (True), else count it."""
        now = self.clock()
        if now - self.last < self.every:
            self.held += 1
            return False
        held, self.held, self.last = self.held, 0, now
        suffix = f" ({held} more like it in the last {self.every:.0f}s)" if held else ""
        self.logger.log(self.level, self.text + suffix, *args)
        return True
