"""Configuration: defaults in code, then ``config/app.yaml``, then environment variables.

Every key has a default, so the file is optional. Keys keep the original system's
names (``app.httpPort``, ``redis.addr`` ...). An environment variable
``IMSERVER_<SECTION>_<KEY>`` (upper case, e.g. ``IMSERVER_APP_HTTPPORT=8081``,
``IMSERVER_REDIS_ADDR=127.0.0.1:6379``) overrides a key; its value is read as YAML,
so ``IMSERVER_APP_APPIDS="[101, 102]"`` gives a list. ``IMSERVER_CONFIG`` names the file.
Secrets (``auth.secret``, ``auth.apiKey``, ``auth.rpcSecret``) are taken as written unless
they start with ``[`` (a YAML list, for rotation), and never appear in an error message.

The result is a flat dict keyed by dotted names: ``cfg["app.httpPort"]``.
"""
import difflib
import os
import re
from typing import Any, Callable, Mapping, Optional

import yaml

DEFAULT_PATH = os.path.join("config", "app.yaml")
ENV_PREFIX = "IMSERVER_"
CONFIG_ENV = "IMSERVER_CONFIG"


class ConfigError(Exception):
    """A bad config value; the message is one line naming the key and the fix."""


def _port(v):
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return v


def _int_at_least(low):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"must be a whole number >= {low}")
        return v
    return check


def _seconds(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError("must be a number of seconds > 0")
    return float(v)


def _non_negative(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError("must be a number of seconds >= 0")
    return float(v)


def _str(v):
    if v is None:
        return ""
    if not isinstance(v, str):
        # YAML reads 0123 as 83 and 12:30 as 750: only the quoted text is what was meant.
        raise ValueError("must be a string: put the value in quotes")
    return v


def _directory(v):
    v = _str(v)
    if not v.strip():
        raise ValueError("must name a directory, e.g. uploads or /srv/imserver/uploads")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _level(v):
    levels = ("debug", "info", "warning", "error", "critical")
    if not isinstance(v, str) or v.lower() not in levels:
        raise ValueError("must be one of " + ", ".join(levels))
    return v.lower()


def _app_ids(v):
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if (not isinstance(v, list) or not v
            or any(isinstance(x, bool) or not isinstance(x, int) or not 0 < x < 2**32 for x in v)):
        raise ValueError("must be a non-empty list of positive whole numbers, e.g. [101, 102]")
    return tuple(v)


def _redis_url(v):
    v = _str(v)
    if v and not v.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
    return v


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def _host_ports(v):
    """A list of ``host:port`` (Redis Cluster seed nodes, Sentinels): a YAML list, or one
    string of them separated by commas (as an environment variable gives them)."""
    if v is None or v == "" or v == []:
        return ()
    if isinstance(v, str) and v.lstrip().startswith("["):
        try:
            v = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ValueError("must be a list of host:port, e.g. [10.0.0.1:7000, 10.0.0.2:7000] "
                             "or 10.0.0.1:7000,10.0.0.2:7000") from None
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise ValueError("must be a list of host:port, e.g. [10.0.0.1:7000, 10.0.0.2:7000]")
    found = []
    for item in items:
        match = _HOST_PORT.fullmatch(item) if isinstance(item, str) else None
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(f"must be a list of host:port, e.g. [10.0.0.1:7000, 10.0.0.2:7000]; "
                             f"{item!r} is not one")
        found.append(item)
    return tuple(found)


MAKE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _secrets(min_bytes):
    """A string, or a list of strings for rotation (the first one is used to sign or
    send, any one is accepted); empty: not set."""
    def check(v):
        if v is None or v == "" or v == []:
            return ()
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or any(not isinstance(x, str) or not x for x in items):
            raise ValueError("must be a string, or a list of strings for rotation (the new one "
                             "first); put each in quotes")
        if any(len(x.encode("utf-8")) < min_bytes for x in items):
            raise ValueError(f"must be at least {min_bytes} bytes long; make one with {MAKE_SECRET}")
        return tuple(items)
    return check


_ORIGIN = re.compile(r"https?://[^/\s?#]+")


def _origins(v):
    if v is None or v == "" or v == []:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or any(not isinstance(x, str) for x in items):
        raise ValueError('must be a list of origins, e.g. ["https://chat.example.com"]')
    origins = []
    for item in items:
        origin = item.strip().rstrip("/").lower()
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ValueError('must list origins written scheme://host[:port] without a path, '
                             'e.g. ["https://chat.example.com"], or ["*"]')
        origins.append(origin)
    return tuple(origins)


# key -> (default, validator); the order is the order of the reference in docs/CONFIG.md
SCHEMA: "dict[str, tuple[Any, Callable[[Any], Any]]]" = {
    "app.logFile": ("", _str),
    "app.logLevel": ("info", _level),
    "app.accessLog": (True, _bool),
    "app.host": ("0.0.0.0", _str),
    "app.httpPort": (8080, _port),
    "app.webSocketPort": (8089, _port),
    "app.rpcPort": (9001, _port),
    "app.rpcHost": ("0.0.0.0", _str),
    "app.advertiseAddr": ("", _str),
    "app.httpUrl": ("", _str),
    "app.webSocketUrl": ("", _str),
    "app.workers": (1, _int_at_least(1)),
    "app.workerConnections": (1000, _int_at_least(1)),
    "app.headerTimeout": (5.0, _seconds),
    "app.maxPendingSockets": (400, _int_at_least(1)),
    "app.maxConnections": (10000, _int_at_least(1)),
    "app.appIDs": ((101, 102, 103, 104), _app_ids),
    "app.maxUserIDLength": (64, _int_at_least(1)),
    "app.maxMessageLength": (16384, _int_at_least(1)),
    "app.maxBodyBytes": (1 << 20, _int_at_least(1024)),
    "app.maxFrameBytes": (65536, _int_at_least(128)),
    "app.heartbeatTimeout": (360.0, _seconds),
    "app.sweepInterval": (30.0, _seconds),
    "app.clientHeartbeatInterval": (30, _int_at_least(1)),
    "app.presenceMaxRoom": (1000, _int_at_least(0)),
    "app.sendQueueBytes": (1 << 20, _int_at_least(1024)),
    "app.sendQueueFrames": (4096, _int_at_least(1)),
    "app.rateLimit": (20.0, _seconds),
    "app.rateBurst": (40, _int_at_least(1)),
    "app.pingInterval": (60.0, _seconds),
    "app.pingTimeout": (30.0, _seconds),
    "app.drainWindow": (5.0, _non_negative),
    "app.writeTimeout": (10.0, _seconds),
    "app.reportInterval": (30.0, _seconds),
    "app.rpcTimeout": (2.0, _seconds),
    "app.historySize": (100, _int_at_least(0)),
    "app.historyTTL": (86400.0, _seconds),
    "app.recoveryMax": (300, _int_at_least(1)),
    "app.maxRoomsPerConnection": (100, _int_at_least(1)),
    "app.inboxSize": (1000, _int_at_least(0)),
    "app.inboxTTL": (7 * 86400.0, _seconds),
    "app.maxUploadBytes": (5 << 20, _int_at_least(1024)),
    "app.uploadDir": ("uploads", _directory),
    "redis.addr": ("", _str),
    "redis.url": ("", _redis_url),
    "redis.cluster": ((), _host_ports),
    "redis.sentinels": ((), _host_ports),
    "redis.masterName": ("", _str),
    "redis.password": ("", _str),
    "redis.DB": (0, _int_at_least(0)),
    "redis.poolSize": (30, _int_at_least(1)),
    "redis.minIdleConns": (2, _int_at_least(0)),
    "redis.timeout": (1.0, _seconds),
    "auth.secret": ((), _secrets(32)),
    "auth.tokenTTL": (86400, _int_at_least(1)),
    "auth.apiKey": ((), _secrets(16)),
    "auth.protectLists": (False, _bool),
    "auth.rpcSecret": ((), _secrets(16)),
    "auth.origins": ((), _origins),
}

SECRET_KEYS = frozenset(("auth.secret", "auth.apiKey", "auth.rpcSecret"))

_BY_FOLDED = {k.lower(): k for k in SCHEMA}
_TEXT_CHECKS = (_str, _redis_url, _directory, _host_ports)
SECTIONS = ("app", "redis", "auth")


def _flatten(doc: Mapping, source: str) -> "dict[str, Any]":
    flat = {}
    for section, body in doc.items():
        if body is None:
            continue  # a section whose keys are all commented out
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys")
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    return flat


# An unknown key is a typo of the closest known one when this alike (difflib's ratio); a
# variable of another section is another tool's unless it is very alike (IMSERVER_REDSI_ADDR,
# not IMSERVER_API_KEY, the variable docs/SECURITY.md uses for the key in a shell).
_KEY_CUTOFF = 0.75
_OTHER_SECTION_CUTOFF = 0.85


def _closest(word: str, candidates: "dict[str, str]", cutoff: float) -> Optional[str]:
    """The value of the candidate (keyed in lower case) closest to ``word``, if close enough."""
    found = difflib.get_close_matches(word.lower(), list(candidates), n=1, cutoff=cutoff)
    return candidates[found[0]] if found else None


def meant_key(section: str, key: str, cutoff: float = _KEY_CUTOFF) -> Optional[str]:
    """The config key that ``section.key`` (not in SCHEMA) most likely means, or None."""
    if section.lower() in SECTIONS:
        same = {d.partition(".")[2].lower(): d for d in SCHEMA
                if d.partition(".")[0] == section.lower()}
        return _closest(key, same, cutoff)
    return _closest(f"{section}.{key}", {d.lower(): d for d in SCHEMA}, cutoff)


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _unknown_key(section: str, key: str) -> str:
    """What to say about a key that is not in SCHEMA: the one meant, or where to look."""
    meant = meant_key(section, key)
    if meant:
        return f"did you mean {meant}?"
    if section.lower() not in SECTIONS:
        return f"the sections are {', '.join(SECTIONS)}"
    return "docs/CONFIG.md lists every key"


def _env_values(env: Mapping[str, str]) -> "dict[str, tuple[Any, str]]":
    found = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("_")
        dotted = _BY_FOLDED.get(f"{section}.{key}".lower())
        if dotted is None:
            known_section = section.lower() in SECTIONS
            meant = meant_key(section, key, _KEY_CUTOFF if known_section else _OTHER_SECTION_CUTOFF)
            if not known_section and meant is None:
                continue  # another tool's IMSERVER_* variable
            hint = (f"did you mean {_env_name(meant)} ({meant})?" if meant
                    else "docs/CONFIG.md lists every key")
            raise ConfigError(f"environment variable {name}: no such config key; {hint}")
        if SCHEMA[dotted][1] in _TEXT_CHECKS or (
                dotted in SECRET_KEYS and not raw.lstrip().startswith("[")):
            value = raw  # text as written: a password of 0123 stays 0123
        else:
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
        found[dotted] = (value, f"environment variable {name}")
    return found


def _yaml_problem(exc: yaml.YAMLError, text: str) -> "tuple[Optional[int], str]":
    """(1-based line of the mistake, what is wrong) for a YAML error. The parser reports
    where it noticed the problem, which is often a line later: after an unclosed quote or
    bracket, at the start of the construct; after a key without ':', on that key's line."""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return None, problem
    line = mark.line
    context = getattr(exc, "context", None) or ""
    context_mark = getattr(exc, "context_mark", None)
    lines = text.splitlines()
    if context_mark is not None and ("quoted scalar" in context or "flow" in context):
        closer = "quote" if "quoted" in context else "bracket"
        return context_mark.line + 1, f"a {closer} opened here is not closed"
    if context_mark is not None and "simple key" in context:
        return context_mark.line + 1, "a key without ':' (write key: value)"
    if problem.startswith("mapping values are not allowed"):
        # "key value\n  other: 1" reads as one value running on to the ':' of the next
        # line: the mistake is on the line above, a key without ':' or a line indented more
        # than the key before it.
        before = line - 1
        while before >= 0 and (not lines[before].strip() or lines[before].lstrip().startswith("#")):
            before -= 1
        here = lines[line] if line < len(lines) else ""
        above = lines[before] if before >= 0 else ""
        indent, above_indent = len(here) - len(here.lstrip()), len(above) - len(above.lstrip())
        has_value = ":" in above and above.split(":", 1)[1].split("#", 1)[0].strip()
        if above and ":" not in above and above_indent <= indent:
            return before + 1, "a key without ':' (write key: value)"
        if has_value and indent > above_indent:
            return line + 1, "this line is indented more than the key above"
        return line + 1, "a ':' inside a value: put the value in quotes"
    if line >= len(lines) and lines:
        line = len(lines) - 1  # end of the file: the last line is where it went wrong
    if "found character '\\t'" in problem or "'\t'" in problem:
        return line + 1, "a tab: indent with spaces"
    if problem.startswith("expected <block end>"):
        return line + 1, "the indentation does not match the lines above"
    return line + 1, problem


def _given_values(path: Optional[str], env: Mapping[str, str],
                  overrides: Optional[Mapping[str, Any]]) -> "dict[str, tuple[Any, str]]":
    """key -> (value as given, where it came from), for the keys that are set."""
    explicit = path or env.get(CONFIG_ENV)
    path = explicit or DEFAULT_PATH
    values: "dict[str, tuple[Any, str]]" = {}
    if explicit or os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path}: not UTF-8 text") from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            line, what = _yaml_problem(exc, text)
            where = f" line {line}" if line else ""
            raise ConfigError(f"config file {path}{where}: not valid YAML: {what}") from None
        if not isinstance(doc, Mapping):
            raise ConfigError(f"config file {path}: must be a mapping of sections (app:, redis:)")
        for key, value in _flatten(doc, f"config file {path}").items():
            dotted = key if key in SCHEMA else _BY_FOLDED.get(key.lower())
            if dotted is None:
                raise ConfigError(f"config file {path}: unknown key {key}; "
                                  f"{_unknown_key(*key.split('.', 1))}")
            values[dotted] = (value, f"config file {path}")
    values.update(_env_values(env))
    for key, value in (overrides or {}).items():
        if key not in SCHEMA:
            raise ConfigError(f"overrides: unknown key {key}")
        values[key] = (value, "overrides")
    return values


def given_keys(path: Optional[str] = None,
               env: Optional[Mapping[str, str]] = None) -> "dict[str, str]":
    """The keys the file or the environment set (not left to the defaults) -> where."""
    env = os.environ if env is None else env
    return {key: source for key, (_, source) in _given_values(path, env, None).items()}


def load_config(path: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> "dict[str, Any]":
    """Defaults, then the YAML file, then ``IMSERVER_*`` variables, then ``overrides``.

    ``path`` defaults to $IMSERVER_CONFIG, else ``config/app.yaml`` when it exists.
    Raises ConfigError with a one-line message naming the key.
    """
    env = os.environ if env is None else env
    values = _given_values(path, env, overrides)
    cfg = {}
    for key, (default, check) in SCHEMA.items():
        if key not in values:
            cfg[key] = default
            continue
        value, source = values[key]
        try:
            cfg[key] = check(value)
        except ValueError as exc:
            shown = "(not shown)" if key in SECRET_KEYS else repr(value)
            raise ConfigError(f"{key} {exc}, got {shown} (from {source})") from None
    _check_redis_store(cfg)
    clustered = is_cluster(cfg)
    ports = [cfg["app.httpPort"], cfg["app.webSocketPort"]]
    if clustered:
        ports += [cfg["app.rpcPort"] + i for i in range(cfg["app.workers"])]
    if len(set(ports)) != len(ports):
        raise ConfigError("app.httpPort, app.webSocketPort and the rpc ports (app.rpcPort + "
                          f"worker index) must all differ, got {ports}")
    if cfg["app.workers"] > 1 and not clustered:
        raise ConfigError("app.workers > 1 needs cluster mode (set redis.addr): in the embedded "
                          "mode each worker would be a separate node that no other knows")
    if cfg["app.rpcPort"] + cfg["app.workers"] - 1 > 65535:
        raise ConfigError("app.rpcPort + app.workers - 1 must be a port number <= 65535")
    return cfg


def _check_redis_store(cfg: dict) -> None:
    """Exactly one key names the store: one instance, a Redis Cluster or Sentinels."""
    named = [name for name, given in (
        ("redis.addr" if not cfg["redis.url"] else "redis.url",
         cfg["redis.addr"] or cfg["redis.url"]),
        ("redis.cluster", cfg["redis.cluster"]),
        ("redis.sentinels", cfg["redis.sentinels"])) if given]
    if len(named) > 1:
        raise ConfigError(f"{' and '.join(named)} are set together: set only one of redis.addr "
                          "(or redis.url: one Redis), redis.cluster (a Redis Cluster) and "
                          "redis.sentinels (a master watched by Sentinels)")
    if cfg["redis.sentinels"] and not cfg["redis.masterName"]:
        raise ConfigError("redis.sentinels needs redis.masterName: the name of the master the "
                          "Sentinels watch (sentinel monitor <name> ...)")
    if cfg["redis.masterName"] and not cfg["redis.sentinels"]:
        raise ConfigError("redis.masterName is set without redis.sentinels: list the Sentinels "
                          "(host:port) that watch it")
    if cfg["redis.cluster"] and cfg["redis.DB"] != 0:
        raise ConfigError("redis.DB must be 0 with redis.cluster: a Redis Cluster has only "
                          "database 0")


def redis_mode(cfg: dict) -> str:
    """Which store the config names: "", "single", "cluster" or "sentinel"."""
    if cfg["redis.cluster"]:
        return "cluster"
    if cfg["redis.sentinels"]:
        return "sentinel"
    return "single" if cfg["redis.addr"] or cfg["redis.url"] else ""


def is_cluster(cfg: dict) -> bool:
    """Cluster mode is on when a Redis is configured: one instance, a Redis Cluster or
    Sentinels."""
    return bool(redis_mode(cfg))
