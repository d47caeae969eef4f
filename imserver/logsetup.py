"""Logging: the application log and the access log, to stderr and to ``app.logFile``."""
import os

ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


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
