"""Configuration loading (imserver.config): defaults, the YAML file, IMSERVER_* variables,
overrides, and one-line errors that name the key and where the bad value came from."""
import os

import pytest

from imserver.config import SCHEMA, ConfigError, load_config

DEFAULTS = {
    "app.logFile": "",
    "app.logLevel": "info",
    "app.accessLog": True,
    "app.host": "0.0.0.0",
    "app.httpPort": 8080,
    "app.webSocketPort": 8089,
    "app.rpcPort": 9001,
    "app.rpcHost": "0.0.0.0",
    "app.advertiseAddr": "",
    "app.httpUrl": "",
    "app.webSocketUrl": "",
    "app.workers": 1,
    "app.workerConnections": 1000,
    "app.headerTimeout": 5.0,
    "app.maxPendingSockets": 400,
    "app.maxConnections": 10000,
    "app.appIDs": (101, 102, 103, 104),
    "app.maxUserIDLength": 64,
    "app.maxMessageLength": 16384,
    "app.maxBodyBytes": 1048576,
    "app.maxFrameBytes": 65536,
    "app.heartbeatTimeout": 360.0,
    "app.sweepInterval": 30.0,
    "app.clientHeartbeatInterval": 30,
    "app.presenceMaxRoom": 1000,
    "app.sendQueueBytes": 1048576,
    "app.sendQueueFrames": 4096,
    "app.rateLimit": 20.0,
    "app.rateBurst": 40,
    "app.pingInterval": 60.0,
    "app.pingTimeout": 30.0,
    "app.drainWindow": 5.0,
    "app.writeTimeout": 10.0,
    "app.reportInterval": 30.0,
    "app.rpcTimeout": 2.0,
    "app.historySize": 100,
    "app.historyTTL": 86400.0,
    "app.recoveryMax": 300,
    "app.maxRoomsPerConnection": 100,
    "app.inboxSize": 1000,
    "app.inboxTTL": 604800.0,
    "app.maxUploadBytes": 5242880,
    "app.uploadDir": "uploads",
    "redis.addr": "",
    "redis.url": "",
    "redis.cluster": (),
    "redis.sentinels": (),
    "redis.masterName": "",
    "redis.password": "",
    "redis.DB": 0,
    "redis.poolSize": 30,
    "redis.minIdleConns": 2,
    "redis.timeout": 1.0,
    "auth.secret": (),
    "auth.tokenTTL": 86400,
    "auth.apiKey": (),
    "auth.protectLists": False,
    "auth.rpcSecret": (),
    "auth.origins": (),
}

# key -> (environment value, expected config value, extra environment it needs); every
# expected value differs from the default.
ENV_CASES = {
    "app.logFile": ("log/other.log", "log/other.log", {}),
    "app.logLevel": ("DEBUG", "debug", {}),
    "app.accessLog": ("false", False, {}),
    "app.host": ("127.0.0.2", "127.0.0.2", {}),
    "app.httpPort": ("8081", 8081, {}),
    "app.webSocketPort": ("8090", 8090, {}),
    "app.rpcPort": ("9002", 9002, {}),
    "app.rpcHost": ("127.0.0.1", "127.0.0.1", {}),
    "app.advertiseAddr": ("10.1.2.3", "10.1.2.3", {}),
    "app.httpUrl": ("http://im.example:8081", "http://im.example:8081", {}),
    "app.webSocketUrl": ("ws://im.example:8090/acc", "ws://im.example:8090/acc", {}),
    "app.workers": ("3", 3, {"IMSERVER_REDIS_ADDR": "127.0.0.1:6379"}),
    "app.workerConnections": ("500", 500, {}),
    "app.headerTimeout": ("2.5", 2.5, {}),
    "app.maxPendingSockets": ("100", 100, {}),
    "app.maxConnections": ("20000", 20000, {}),
    "app.maxMessageLength": ("100", 100, {}),
    "app.maxBodyBytes": ("65536", 65536, {}),
    "app.sendQueueFrames": ("10", 10, {}),
    "app.rateLimit": ("2.5", 2.5, {}),
    "app.rateBurst": ("5", 5, {}),
    "app.pingInterval": ("15", 15.0, {}),
    "app.pingTimeout": ("5", 5.0, {}),
    "app.drainWindow": ("0", 0.0, {}),
    "app.appIDs": ("[7, 8]", (7, 8), {}),
    "app.maxUserIDLength": ("10", 10, {}),
    "app.maxFrameBytes": ("1024", 1024, {}),
    "app.heartbeatTimeout": ("60", 60.0, {}),
    "app.sweepInterval": ("2.5", 2.5, {}),
    "app.clientHeartbeatInterval": ("15", 15, {}),
    "app.presenceMaxRoom": ("0", 0, {}),
    "app.sendQueueBytes": ("4096", 4096, {}),
    "app.writeTimeout": ("3", 3.0, {}),
    "app.reportInterval": ("5", 5.0, {}),
    "app.rpcTimeout": ("0.5", 0.5, {}),
    "app.historySize": ("0", 0, {}),
    "app.historyTTL": ("60", 60.0, {}),
    "app.recoveryMax": ("10", 10, {}),
    "app.maxRoomsPerConnection": ("3", 3, {}),
    "app.inboxSize": ("0", 0, {}),
    "app.inboxTTL": ("3600", 3600.0, {}),
    "app.maxUploadBytes": ("1048576", 1048576, {}),
    "app.uploadDir": ("/srv/imserver/uploads", "/srv/imserver/uploads", {}),
    "redis.addr": ("10.0.0.5:6379", "10.0.0.5:6379", {}),
    "redis.url": ("redis://10.0.0.5:6379/1", "redis://10.0.0.5:6379/1", {}),
    "redis.cluster": ("10.0.0.5:7000,10.0.0.6:7000", ("10.0.0.5:7000", "10.0.0.6:7000"), {}),
    "redis.sentinels": ("s1:26379, s2:26379", ("s1:26379", "s2:26379"),
                        {"IMSERVER_REDIS_MASTERNAME": "mymaster"}),
    "redis.masterName": ("mymaster", "mymaster", {"IMSERVER_REDIS_SENTINELS": "s1:26379"}),
    "redis.password": ("s3cret", "s3cret", {}),
    "redis.DB": ("3", 3, {}),
    "redis.poolSize": ("20", 20, {}),
    "redis.minIdleConns": ("0", 0, {}),
    "redis.timeout": ("0.25", 0.25, {}),
    # secrets are text as written; a leading [ makes a YAML list (rotation)
    "auth.secret": ("0123" * 8, ("0123" * 8,), {}),
    "auth.tokenTTL": ("3600", 3600, {}),
    "auth.apiKey": ("[key-new-0123456789, key-old-0123456789]",
                    ("key-new-0123456789", "key-old-0123456789"), {}),
    "auth.protectLists": ("true", True, {}),
    "auth.rpcSecret": ("rpc-secret-0123456789", ("rpc-secret-0123456789",), {}),
    "auth.origins": ("[https://Chat.Example.com/, http://localhost:8080]",
                     ("https://chat.example.com", "http://localhost:8080"), {}),
}


def env_name(key: str) -> str:
    section, name = key.split(".")
    return f"IMSERVER_{section.upper()}_{name.upper()}"


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def no_default_file(tmp_path, monkeypatch):
    """Run in a directory without config/app.yaml."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(tmp_path, yaml_text="", env=None, overrides=None):
    """load_config with an explicit file (empty by default), so that the checkout's
    config/app.yaml never leaks in."""
    path = write(tmp_path / "app.yaml", yaml_text)
    return load_config(path, env=env or {}, overrides=overrides)


def config_error(*args, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load(*args, **kw)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


# -- defaults --------------------------------------------------------------------------------

def test_schema_has_the_documented_keys():
    assert list(SCHEMA) == list(DEFAULTS)


def test_defaults_without_a_file(no_default_file):
    assert not os.path.exists("config/app.yaml")
    assert load_config(env={}) == DEFAULTS


def test_empty_file_gives_defaults(tmp_path):
    assert load(tmp_path, "") == DEFAULTS


def test_comment_only_file_gives_defaults(tmp_path):
    assert load(tmp_path, "# nothing set\n") == DEFAULTS


def test_default_file_is_config_app_yaml_of_cwd(no_default_file):
    (no_default_file / "config").mkdir()
    write(no_default_file / "config" / "app.yaml", "app:\n  httpPort: 8181\n")
    cfg = load_config(env={})
    assert cfg["app.httpPort"] == 8181
    assert cfg["app.webSocketPort"] == 8089


def test_config_keeps_its_key_order():
    cfg = load_config(os.devnull, env={})
    assert list(cfg) == list(DEFAULTS)


# -- the YAML file -------------------------------------------------------------------------------

def test_file_values(tmp_path):
    cfg = load(tmp_path, """
app:
  logFile: log/x.log
  logLevel: warning
  accessLog: false
  host: 127.0.0.1
  httpPort: 18080
  webSocketPort: 18089
  rpcPort: 19001
  appIDs: [201, 202]
  heartbeatTimeout: 90
  sweepInterval: 0.5
  presenceMaxRoom: 0
redis:
  addr: "redis.local:6380"
  password: pw
  DB: 2
  poolSize: 5
  minIdleConns: 1
""")
    assert cfg == dict(DEFAULTS, **{
        "app.logFile": "log/x.log", "app.logLevel": "warning", "app.accessLog": False,
        "app.host": "127.0.0.1", "app.httpPort": 18080, "app.webSocketPort": 18089,
        "app.rpcPort": 19001, "app.appIDs": (201, 202), "app.heartbeatTimeout": 90.0,
        "app.sweepInterval": 0.5, "app.presenceMaxRoom": 0, "redis.addr": "redis.local:6380",
        "redis.password": "pw", "redis.DB": 2, "redis.poolSize": 5, "redis.minIdleConns": 1})


def test_file_keys_match_without_regard_to_case(tmp_path):
    cfg = load(tmp_path, "APP:\n  httpport: 8181\nredis:\n  db: 4\n")
    assert (cfg["app.httpPort"], cfg["redis.DB"]) == (8181, 4)


def test_single_app_id_becomes_a_tuple(tmp_path):
    assert load(tmp_path, "app:\n  appIDs: 105\n")["app.appIDs"] == (105,)


def test_log_level_is_lower_cased(tmp_path):
    assert load(tmp_path, "app:\n  logLevel: ERROR\n")["app.logLevel"] == "error"


def test_repository_config_file_is_valid():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "config", "app.yaml"), env={})
    assert cfg["app.httpPort"] == 8080
    assert cfg["app.webSocketPort"] == 8089
    assert cfg["app.rpcPort"] == 9001
    assert cfg["app.appIDs"] == (101, 102, 103, 104)
    assert cfg["redis.addr"] == ""


def test_unknown_key_in_file_is_named(tmp_path):
    message = config_error(tmp_path, "app:\n  httpPort: 8081\n  httpPortt: 8082\n")
    assert message == (f"config file {tmp_path / 'app.yaml'}: unknown key app.httpPortt; "
                       "did you mean app.httpPort?")


@pytest.mark.parametrize("text,key,meant", [
    ("app:\n  webSocketport: 1\n", "app.webSocketport", None),  # case only: not an error
    ("app:\n  websocketPrt: 1\n", "app.websocketPrt", "app.webSocketPort"),
    ("redsi:\n  addr: x\n", "redsi.addr", "redis.addr"),
    ("redis:\n  adr: x\n", "redis.adr", "redis.addr"),
    ("auth:\n  apiKeys: [x]\n", "auth.apiKeys", "auth.apiKey"),
])
def test_unknown_key_in_file_suggests_the_key_meant(tmp_path, text, key, meant):
    if meant is None:
        load(tmp_path, text)
        return
    message = config_error(tmp_path, text)
    assert message.endswith(f"unknown key {key}; did you mean {meant}?")


def test_unknown_key_without_a_close_one_points_to_the_reference(tmp_path):
    message = config_error(tmp_path, "app:\n  colour: blue\n")
    assert message == (f"config file {tmp_path / 'app.yaml'}: unknown key app.colour; "
                       "docs/CONFIG.md lists every key")
    assert "app.httpPort" not in message  # not the whole list of keys


def test_unknown_section_in_file_is_named(tmp_path):
    message = config_error(tmp_path, "mysql:\n  addr: x\n")
    assert message.endswith("unknown key mysql.addr; the sections are app, redis, auth")


def test_file_that_is_not_a_mapping(tmp_path):
    message = config_error(tmp_path, "- 1\n- 2\n")
    assert message == (f"config file {tmp_path / 'app.yaml'}: "
                       "must be a mapping of sections (app:, redis:)")


def test_section_that_is_not_a_mapping(tmp_path):
    message = config_error(tmp_path, "app: 5\n")
    assert message == (f"config file {tmp_path / 'app.yaml'}: "
                       "section 'app' must be a mapping of keys")


def test_section_with_every_key_commented_out_is_empty(tmp_path):
    # The shipped config/app.yaml invites commenting keys out; a section left with only
    # comments is YAML null and means "no keys set", not an error.
    cfg = load(tmp_path, "app:\n  httpPort: 8081\nredis:\n  # addr: 127.0.0.1:6379\n")
    assert cfg["app.httpPort"] == 8081
    assert cfg["redis.addr"] == ""


def test_invalid_yaml_names_the_line(tmp_path):
    message = config_error(tmp_path, "app:\n  httpPort: 8081\n webSocketPort: 1\n")
    assert message == (f"config file {tmp_path / 'app.yaml'} line 3: not valid YAML: "
                       "the indentation does not match the lines above")


# The parser notices some mistakes a line later (or at the end of the file); the message
# names the line the mistake is on.
@pytest.mark.parametrize("text,line,what", [
    ("app:\n  logLevel: \"info\n", 2, "a quote opened here is not closed"),
    ("app:\n  logLevel: 'info\n\n# the end\n", 2, "a quote opened here is not closed"),
    ("app:\n  appIDs: [101, 102\n  httpPort: 8081\n", 2, "a bracket opened here is not closed"),
    ("app:\n  httpPort 8081\n  logLevel: info\n", 2, "a key without ':' (write key: value)"),
    ("app:\n  logLevel: info\n  # ports\n  httpPort 8081\n  rpcPort: 9001\n", 4,
     "a key without ':' (write key: value)"),
    ("app:\n  httpPort: 8081\n    webSocketPort: 8089\n", 3,
     "this line is indented more than the key above"),
    ("app:\n  logFile: C:/x: y\n", 2, "a ':' inside a value: put the value in quotes"),
    ("app:\n\thttpPort: 8081\n", 2, "a tab: indent with spaces"),
], ids=["quote", "quote-then-more", "bracket", "no-colon", "no-colon-after-comment",
        "over-indented", "colon-in-value", "tab"])
def test_invalid_yaml_names_the_line_of_the_mistake(tmp_path, text, line, what):
    message = config_error(tmp_path, text)
    assert message == f"config file {tmp_path / 'app.yaml'} line {line}: not valid YAML: {what}"


def test_missing_explicit_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"config file {path}: No such file or directory"


def test_missing_file_named_by_imserver_config(tmp_path, no_default_file):
    path = str(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(env={"IMSERVER_CONFIG": path})
    assert str(info.value) == f"config file {path}: No such file or directory"


def test_imserver_config_names_the_file(tmp_path, no_default_file):
    path = write(tmp_path / "elsewhere.yaml", "app:\n  httpPort: 8282\n")
    assert load_config(env={"IMSERVER_CONFIG": path})["app.httpPort"] == 8282


def test_imserver_config_wins_over_default_file(tmp_path, no_default_file):
    (no_default_file / "config").mkdir()
    write(no_default_file / "config" / "app.yaml", "app:\n  httpPort: 8181\n")
    path = write(tmp_path / "elsewhere.yaml", "app:\n  httpPort: 8282\n")
    assert load_config(env={"IMSERVER_CONFIG": path})["app.httpPort"] == 8282


def test_explicit_path_wins_over_imserver_config(tmp_path):
    a = write(tmp_path / "a.yaml", "app:\n  httpPort: 8181\n")
    b = write(tmp_path / "b.yaml", "app:\n  httpPort: 8282\n")
    assert load_config(a, env={"IMSERVER_CONFIG": b})["app.httpPort"] == 8181


# -- environment -----------------------------------------------------------------------------------

def test_env_cases_cover_every_key():
    assert set(ENV_CASES) == set(SCHEMA)
    for key, (_, expected, _) in ENV_CASES.items():
        assert expected != DEFAULTS[key], key


@pytest.mark.parametrize("key", list(ENV_CASES))
def test_every_key_is_overridable_by_env(tmp_path, key):
    raw, expected, extra = ENV_CASES[key]
    cfg = load(tmp_path, env=dict(extra, **{env_name(key): raw}))
    assert cfg[key] == expected
    assert type(cfg[key]) is type(expected)
    untouched = set(DEFAULTS) - {key} - {k for k in DEFAULTS if env_name(k) in extra}
    assert {k: cfg[k] for k in untouched} == {k: DEFAULTS[k] for k in untouched}


@pytest.mark.parametrize("name,key,raw,expected", [
    ("IMSERVER_APP_httpPort", "app.httpPort", "8081", 8081),
    ("IMSERVER_APP_HttpPort", "app.httpPort", "8081", 8081),
    ("IMSERVER_REDIS_db", "redis.DB", "5", 5),
    ("IMSERVER_APP_appids", "app.appIDs", "[1]", (1,)),
    ("IMSERVER_app_httpPort", "app.httpPort", "8083", 8083),
])
def test_env_key_part_is_case_insensitive(tmp_path, name, key, raw, expected):
    assert load(tmp_path, env={name: raw})[key] == expected


def test_env_value_is_yaml(tmp_path):
    cfg = load(tmp_path, env={"IMSERVER_APP_APPIDS": "[101, 102]",
                              "IMSERVER_APP_ACCESSLOG": "no",
                              "IMSERVER_APP_HEARTBEATTIMEOUT": "1.5"})
    assert cfg["app.appIDs"] == (101, 102)
    assert cfg["app.accessLog"] is False
    assert cfg["app.heartbeatTimeout"] == 1.5


def test_env_value_that_is_not_yaml_is_taken_as_text(tmp_path):
    assert load(tmp_path, env={"IMSERVER_REDIS_PASSWORD": "[abc"})["redis.password"] == "[abc"


def test_env_empty_string_for_a_text_key(tmp_path):
    cfg = load(tmp_path, "app:\n  logFile: a.log\n", env={"IMSERVER_APP_LOGFILE": ""})
    assert cfg["app.logFile"] == ""


@pytest.mark.parametrize("raw", ["0123", "12:30", "#pw", "on", "1_000", "0x1F"])
def test_env_text_value_is_kept_as_written(tmp_path, raw):
    # A password, host or URL taken from the environment must reach the node unchanged;
    # reading "0123" as YAML would silently make the password "83".
    assert load(tmp_path, env={"IMSERVER_REDIS_PASSWORD": raw})["redis.password"] == raw


def test_unknown_app_env_variable_is_named(tmp_path):
    message = config_error(tmp_path, env={"IMSERVER_APP_NOPE": "1"})
    assert message == ("environment variable IMSERVER_APP_NOPE: no such config key; "
                       "docs/CONFIG.md lists every key")


def test_unknown_redis_env_variable_is_named(tmp_path):
    message = config_error(tmp_path, env={"IMSERVER_REDIS_HOST": "x"})
    assert message.startswith("environment variable IMSERVER_REDIS_HOST: no such config key")


@pytest.mark.parametrize("name,meant", [
    ("IMSERVER_APP_HTTPPORTT", "IMSERVER_APP_HTTPPORT (app.httpPort)"),
    ("IMSERVER_REDIS_ADR", "IMSERVER_REDIS_ADDR (redis.addr)"),
    # a typo in the section would otherwise pass for another tool's variable
    ("IMSERVER_REDSI_ADDR", "IMSERVER_REDIS_ADDR (redis.addr)"),
    ("IMSERVER_RDIS_ADDR", "IMSERVER_REDIS_ADDR (redis.addr)"),
    ("IMSERVER_AUHT_SECRET", "IMSERVER_AUTH_SECRET (auth.secret)"),
    ("IMSERVER_APPS_HTTPPORT", "IMSERVER_APP_HTTPPORT (app.httpPort)"),
])
def test_misspelt_env_variable_names_the_one_meant(tmp_path, name, meant):
    message = config_error(tmp_path, env={name: "1"})
    assert message == f"environment variable {name}: no such config key; did you mean {meant}?"


def test_other_imserver_variables_are_ignored(tmp_path):
    # IMSERVER_API_KEY is the shell variable docs/SECURITY.md passes to curl.
    cfg = load(tmp_path, env={"IMSERVER_TEST_FLAG": "1", "IMSERVER_X": "y", "PATH": "/bin",
                              "IMSERVERAPP_HTTPPORT": "1", "IMSERVER_API_KEY": "k" * 20,
                              "IMSERVER_WORKER_INDEX": "2"})
    assert cfg == DEFAULTS


# -- bad values ------------------------------------------------------------------------------------

FILE_BAD_VALUES = [
    ("app:\n  httpPort: 70000\n", "app.httpPort", "70000"),
    ("app:\n  httpPort: 0\n", "app.httpPort", "0"),
    ("app:\n  httpPort: true\n", "app.httpPort", "True"),
    ("app:\n  webSocketPort: \"8089\"\n", "app.webSocketPort", "'8089'"),
    ("app:\n  rpcPort: 90.5\n", "app.rpcPort", "90.5"),
    ("app:\n  heartbeatTimeout: -1\n", "app.heartbeatTimeout", "-1"),
    ("app:\n  heartbeatTimeout: 0\n", "app.heartbeatTimeout", "0"),
    ("app:\n  sweepInterval: false\n", "app.sweepInterval", "False"),
    ("app:\n  appIDs: []\n", "app.appIDs", "[]"),
    ("app:\n  appIDs: [0]\n", "app.appIDs", "[0]"),
    ("app:\n  appIDs: [\"101\"]\n", "app.appIDs", "['101']"),
    ("app:\n  appIDs: [101, true]\n", "app.appIDs", "[101, True]"),
    ("app:\n  appIDs: [4294967296]\n", "app.appIDs", "[4294967296]"),
    ("app:\n  logLevel: loud\n", "app.logLevel", "'loud'"),
    ("app:\n  accessLog: 1\n", "app.accessLog", "1"),
    ("app:\n  workers: 0\n", "app.workers", "0"),
    ("app:\n  workerConnections: 0\n", "app.workerConnections", "0"),
    ("app:\n  maxFrameBytes: 127\n", "app.maxFrameBytes", "127"),
    ("app:\n  presenceMaxRoom: -1\n", "app.presenceMaxRoom", "-1"),
    ("app:\n  sendQueueBytes: 1023\n", "app.sendQueueBytes", "1023"),
    ("app:\n  maxBodyBytes: 1023\n", "app.maxBodyBytes", "1023"),
    ("app:\n  maxUploadBytes: 1023\n", "app.maxUploadBytes", "1023"),
    ("app:\n  uploadDir: 12\n", "app.uploadDir", "12"),
    ("app:\n  uploadDir: ''\n", "app.uploadDir", "''"),
    ("app:\n  host: [a]\n", "app.host", "['a']"),
    ("app:\n  maxUserIDLength: 2.5\n", "app.maxUserIDLength", "2.5"),
    ("redis:\n  DB: -1\n", "redis.DB", "-1"),
    ("redis:\n  poolSize: 0\n", "redis.poolSize", "0"),
    ("redis:\n  url: http://r:6379\n", "redis.url", "'http://r:6379'"),
    ("redis:\n  timeout: 0\n", "redis.timeout", "0"),
]


@pytest.mark.parametrize("text,key,shown", FILE_BAD_VALUES,
                         ids=[f"{k}={s}" for _, k, s in FILE_BAD_VALUES])
def test_bad_file_value_names_key_value_and_file(tmp_path, text, key, shown):
    message = config_error(tmp_path, text)
    assert message.startswith(key + " ")
    assert f", got {shown} (from config file {tmp_path / 'app.yaml'})" in message


def test_bad_port_message_exactly(tmp_path):
    message = config_error(tmp_path, "app:\n  httpPort: 70000\n")
    assert message == ("app.httpPort must be a port number from 1 to 65535, got 70000 "
                       f"(from config file {tmp_path / 'app.yaml'})")


def test_port_abc_from_env_names_key_and_variable(tmp_path):
    message = config_error(tmp_path, env={"IMSERVER_APP_HTTPPORT": "abc"})
    assert message == ("app.httpPort must be a port number from 1 to 65535, got 'abc' "
                       "(from environment variable IMSERVER_APP_HTTPPORT)")


@pytest.mark.parametrize("name,raw,key", [
    ("IMSERVER_APP_WEBSOCKETPORT", "70000", "app.webSocketPort"),
    ("IMSERVER_APP_HTTPPORT", "true", "app.httpPort"),
    ("IMSERVER_APP_HTTPPORT", "", "app.httpPort"),
    ("IMSERVER_APP_HEARTBEATTIMEOUT", "-5", "app.heartbeatTimeout"),
    ("IMSERVER_APP_APPIDS", "[]", "app.appIDs"),
    ("IMSERVER_APP_LOGLEVEL", "loud", "app.logLevel"),
    ("IMSERVER_REDIS_POOLSIZE", "many", "redis.poolSize"),
])
def test_bad_env_value_names_key_and_variable(tmp_path, name, raw, key):
    message = config_error(tmp_path, env={name: raw})
    assert message.startswith(key + " ")
    assert message.endswith(f"(from environment variable {name})")


def test_bad_override_names_key_and_overrides(tmp_path):
    message = config_error(tmp_path, overrides={"app.httpPort": "x"})
    assert message == "app.httpPort must be a port number from 1 to 65535, got 'x' (from overrides)"


def test_unknown_override_key(tmp_path):
    assert config_error(tmp_path, overrides={"app.nope": 1}) == "overrides: unknown key app.nope"


def test_bad_file_value_is_reported_even_when_env_is_fine(tmp_path):
    message = config_error(tmp_path, "app:\n  logLevel: loud\n",
                           env={"IMSERVER_APP_HTTPPORT": "8081"})
    assert message.startswith("app.logLevel ")


def test_env_replacing_a_bad_file_value_fixes_it(tmp_path):
    cfg = load(tmp_path, "app:\n  httpPort: 70000\n", env={"IMSERVER_APP_HTTPPORT": "8081"})
    assert cfg["app.httpPort"] == 8081


# -- cross-key checks ------------------------------------------------------------------------------

def test_equal_http_and_websocket_ports(tmp_path):
    message = config_error(tmp_path, "app:\n  httpPort: 9000\n  webSocketPort: 9000\n")
    assert message.startswith("app.httpPort, app.webSocketPort and ")
    assert message.endswith("must all differ, got [9000, 9000]")


def test_rpc_port_equal_to_http_port_in_cluster_mode(tmp_path):
    message = config_error(tmp_path, "app:\n  rpcPort: 8080\nredis:\n  addr: r:6379\n")
    assert message.startswith("app.httpPort, app.webSocketPort and ")
    assert "app.rpcPort" in message
    assert message.endswith("must all differ, got [8080, 8089, 8080]")


def test_rpc_ports_of_several_workers_must_not_hit_the_http_ports(tmp_path):
    # In cluster mode worker i listens on app.rpcPort + i.
    message = config_error(tmp_path, "app:\n  workers: 3\n  rpcPort: 8078\n"
                                     "redis:\n  addr: r:6379\n")
    assert message.endswith("must all differ, got [8080, 8089, 8078, 8079, 8080]")


def test_redis_url_alone_turns_cluster_mode_on(tmp_path):
    cfg = load(tmp_path, "app:\n  workers: 2\nredis:\n  url: redis://r:6379/0\n")
    assert (cfg["app.workers"], cfg["redis.url"]) == (2, "redis://r:6379/0")


def test_rpc_port_is_unused_in_embedded_mode(tmp_path):
    assert load(tmp_path, "app:\n  rpcPort: 8080\n")["app.rpcPort"] == 8080


def test_several_workers_need_redis(tmp_path):
    message = config_error(tmp_path, "app:\n  workers: 2\n")
    assert message.startswith("app.workers > 1 needs cluster mode (set redis.addr)")


def test_several_workers_with_redis(tmp_path):
    cfg = load(tmp_path, "app:\n  workers: 4\nredis:\n  addr: 127.0.0.1:6379\n")
    assert (cfg["app.workers"], cfg["redis.addr"]) == (4, "127.0.0.1:6379")


# -- precedence ----------------------------------------------------------------------------------

def test_env_wins_over_file(tmp_path):
    cfg = load(tmp_path, "app:\n  httpPort: 8081\n  webSocketPort: 8091\n",
               env={"IMSERVER_APP_HTTPPORT": "8082"})
    assert (cfg["app.httpPort"], cfg["app.webSocketPort"]) == (8082, 8091)


def test_overrides_win_over_env_and_file(tmp_path):
    cfg = load(tmp_path, "app:\n  httpPort: 8081\n  rpcPort: 9101\n",
               env={"IMSERVER_APP_HTTPPORT": "8082", "IMSERVER_APP_RPCPORT": "9102"},
               overrides={"app.httpPort": 8083})
    assert (cfg["app.httpPort"], cfg["app.rpcPort"]) == (8083, 9102)


def test_override_wins_over_imserver_config_file(tmp_path, no_default_file):
    path = write(tmp_path / "c.yaml", "app:\n  logLevel: error\n")
    cfg = load_config(env={"IMSERVER_CONFIG": path}, overrides={"app.logLevel": "debug"})
    assert cfg["app.logLevel"] == "debug"


def test_load_config_does_not_modify_its_inputs(tmp_path):
    env = {"IMSERVER_APP_HTTPPORT": "8082"}
    overrides = {"app.rpcPort": 9100}
    load(tmp_path, "app:\n  httpPort: 8081\n", env=env, overrides=overrides)
    assert env == {"IMSERVER_APP_HTTPPORT": "8082"}
    assert overrides == {"app.rpcPort": 9100}


def test_rpc_port_range_of_several_workers_must_fit(tmp_path):
    message = config_error(tmp_path, "app:\n  workers: 2\n  rpcPort: 65535\n"
                                     "redis:\n  addr: r:6379\n")
    assert message == "app.rpcPort + app.workers - 1 must be a port number <= 65535"


# -- Redis beyond one instance -----------------------------------------------------------

def test_redis_cluster_and_sentinels_take_lists_or_comma_separated_text():
    from imserver.config import is_cluster, redis_mode
    cfg = load_config(path=os.devnull, env={
        "IMSERVER_REDIS_CLUSTER": "10.0.0.1:7000, 10.0.0.2:7000,redis-3:7000"})
    assert cfg["redis.cluster"] == ("10.0.0.1:7000", "10.0.0.2:7000", "redis-3:7000")
    assert is_cluster(cfg) and redis_mode(cfg) == "cluster"
    cfg = load_config(path=os.devnull, env={"IMSERVER_REDIS_SENTINELS": "[s1:26379, s2:26379]",
                                            "IMSERVER_REDIS_MASTERNAME": "mymaster"})
    assert cfg["redis.sentinels"] == ("s1:26379", "s2:26379")
    assert cfg["redis.masterName"] == "mymaster"
    assert is_cluster(cfg) and redis_mode(cfg) == "sentinel"
    cfg = load_config(path=os.devnull, env={},
                      overrides={"redis.cluster": ["10.0.0.1:7000"], "app.workers": 2})
    assert cfg["app.workers"] == 2  # a Cluster is cluster mode: workers are nodes


@pytest.mark.parametrize("overrides, named", [
    ({"redis.addr": "r:6379", "redis.cluster": ["c:7000"]}, "redis.addr and redis.cluster"),
    ({"redis.url": "redis://r", "redis.sentinels": ["s:26379"], "redis.masterName": "m"},
     "redis.url and redis.sentinels"),
    ({"redis.cluster": ["c:7000"], "redis.sentinels": ["s:26379"], "redis.masterName": "m"},
     "redis.cluster and redis.sentinels"),
    ({"redis.sentinels": ["s:26379"]}, "redis.sentinels needs redis.masterName"),
    ({"redis.masterName": "m"}, "redis.masterName is set without redis.sentinels"),
    ({"redis.cluster": ["c:7000"], "redis.DB": 2}, "redis.DB must be 0 with redis.cluster"),
    ({"redis.cluster": ["c"]}, "redis.cluster must be a list of host:port"),
    ({"redis.sentinels": ["s:99999"], "redis.masterName": "m"},
     "redis.sentinels must be a list of host:port"),
    ({"redis.cluster": [7000]}, "redis.cluster must be a list of host:port"),
])
def test_redis_store_keys_are_checked(overrides, named):
    with pytest.raises(ConfigError, match=named):
        load_config(path=os.devnull, env={}, overrides=overrides)
