"""Logging: the application log and the access log, to stderr and to ``app.logFile``."""
import logging
import os

from .protocol.envelope import CONTROL_CHARS

ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n``, ``\\x1b``)."""
    return CONTROL_CHARS.sub(_escaped, text)


class OneLineFormatter(logging.Formatter):
    """Each record is one line that starts with its time: what a client sent (a path, a
    header, a name) cannot start a line of its own or move the terminal's cursor. A
    traceback keeps its lines, each indented under its record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return self._indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return self._indented(super().formatStack(stack_info))

    @staticmethod
    def _indented(text: str) -> str:
        return "\n".join("    " + escape_controls(line) for line in text.split("\n"))


def logging_dict(cfg: dict) -> dict:
    """A logging.config.dictConfig mapping for gunicorn's ``logconfig_dict``."""
    level = cfg["app.logLevel"].upper()
    handlers = {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                           "stream": "ext://sys.stderr"}}
    log_file = cfg["app.logFile"]
    if log_file:
        folder = os.path.dirname(os.path.abspath(log_file))
        os.makedirs(folder, exist_ok=True)
        handlers["file"] = {"class": "logging.handlers.WatchedFileHandler", "formatter": "plain",
                            "filename": log_file, "encoding": "utf-8"}
    names = list(handlers)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {
            "()": "imserver.logsetup.OneLineFormatter",
            "format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"}},
        "handlers": handlers,
        "root": {"level": level, "handlers": names},
        "loggers": {
            "imserver": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO" if cfg["app.accessLog"] else "CRITICAL",
                                "handlers": [], "propagate": True},
        },
    }
