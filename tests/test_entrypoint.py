"""The ways a node is started: ``python -m imserver`` (--check, config errors, a real node and
its logs), ``create_app()`` outside gevent, and the values gunicorn.conf.py hands gunicorn."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from imserver.config import load_config
from support import ROOT, NodeProcess


def clean_env(**extra) -> dict:
    """This process's environment without IMSERVER_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSERVER_")}
    env.update(extra)
    return env


def run(args, env=None, cwd=ROOT, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(0.05)


def read(path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


# -- python -m imserver --check ---------------------------------------------------------------

def test_check_prints_the_config_and_exits_0():
    result = run(["-m", "imserver", "--check"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    cfg = load_config(os.path.join(ROOT, "config", "app.yaml"), env={})
    assert result.stdout.splitlines() == [f"{k}: {v!r}" for k, v in cfg.items()]
    lines = result.stdout.splitlines()
    assert "app.httpPort: 8080" in lines
    assert "app.webSocketPort: 8089" in lines
    assert "app.appIDs: (101, 102, 103, 104)" in lines
    assert "redis.addr: ''" in lines


def test_check_shows_env_and_config_file_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("app:\n  httpPort: 18080\n  logLevel: debug\n")
    result = run(["-m", "imserver", "--config", str(path), "--check"],
                 env=clean_env(IMSERVER_APP_WEBSOCKETPORT="18089"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "app.httpPort: 18080" in lines
    assert "app.webSocketPort: 18089" in lines
    assert "app.logLevel: 'debug'" in lines


def test_check_reads_the_file_named_by_imserver_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("app:\n  rpcPort: 19999\n")
    result = run(["-m", "imserver", "--check"], env=clean_env(IMSERVER_CONFIG=str(path)))
    assert result.returncode == 0, result.stderr
    assert "app.rpcPort: 19999" in result.stdout.splitlines()


def test_bad_env_value_exits_2_with_one_line():
    result = run(["-m", "imserver", "--check"], env=clean_env(IMSERVER_APP_HTTPPORT="abc"))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == ("imserver: config error: app.httpPort must be a port number from 1 to "
                        "65535, got 'abc' (from environment variable IMSERVER_APP_HTTPPORT)")


def test_bad_value_without_check_exits_2_before_starting(tmp_path):
    result = run(["-m", "imserver"], env=clean_env(IMSERVER_APP_HTTPPORT="abc"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "app.httpPort" in lines[0]


def test_missing_config_file_exits_2_with_one_line():
    result = run(["-m", "imserver", "--config", "/nonexistent.yaml"])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "imserver: config error: config file /nonexistent.yaml: No such file or directory"]


def test_invalid_yaml_exits_2_with_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("app:\n  httpPort: 8081\n webSocketPort: 1\n")
    result = run(["-m", "imserver", "--config", str(path), "--check"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"imserver: config error: config file {path} line 3: not valid YAML: the indentation "
        "does not match the lines above"]


def test_unknown_option_exits_2():
    result = run(["-m", "imserver", "--bogus"])
    assert result.returncode == 2
    assert "--bogus" in result.stderr


def test_help_is_plain_text_that_says_where_the_settings_are():
    result = run(["-m", "imserver", "--help"])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "``" not in text and "**" not in text  # no markup shown as is
    assert text.startswith("usage: python -m imserver [-h] [--config FILE] [--check] [--dev]")
    assert "docs/CONFIG.md" in text and "IMSERVER_<SECTION>_<KEY>" in text
    assert "--dev" in text and "127.0.0.1" in text


def test_check_into_a_closed_pipe_exits_quietly():
    """`--check | head -3`: the reader goes away; no traceback, exit 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "imserver", "--check"], cwd=ROOT,
                                env=clean_env(), stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 0
    assert result.stderr == ""


def test_dev_py_run_check_piped_to_head_shows_no_traceback():
    result = subprocess.run(["bash", "-c", f"{sys.executable} dev.py run --check | head -3"],
                            cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 3
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


# -- where a node listens ---------------------------------------------------------------------------

def listening(port):
    """Addresses (ip, port) in the kernel's table of listening TCP sockets for ``port``."""
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            hex_ip, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(hex_ip)
    named = {"0100007F": "127.0.0.1", "00000000": "0.0.0.0"}
    return {named.get(ip, ip) for ip in found}


def free_ports(n):
    from support import free_port
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def test_dev_py_run_defaults_to_loopback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("app:\n  logLevel: info\n")
    result = run(["dev.py", "run", "--config", str(path), "--check"])
    assert result.returncode == 0, result.stderr
    assert "app.host: '127.0.0.1'" in result.stdout.splitlines()
    # what the user sets wins: the environment, or app.host in the file
    result = run(["dev.py", "run", "--config", str(path), "--check"],
                 env=clean_env(IMSERVER_APP_HOST="0.0.0.0"))
    assert "app.host: '0.0.0.0'" in result.stdout.splitlines()
    path.write_text("app:\n  host: 127.0.0.2\n")
    result = run(["dev.py", "run", "--config", str(path), "--check"])
    assert "app.host: '127.0.0.2'" in result.stdout.splitlines()
    # python -m imserver itself keeps the documented default
    result = run(["-m", "imserver", "--config", str(path), "--check"],
                 env=clean_env(IMSERVER_APP_HOST="0.0.0.0"))
    assert "app.host: '0.0.0.0'" in result.stdout.splitlines()


def _start(args, tmp_path, env=None, name="dev"):
    out = open(tmp_path / f"{name}.out", "wb")
    proc = subprocess.Popen([sys.executable] + args, cwd=ROOT, env=env or clean_env(),
                            stdout=out, stderr=subprocess.STDOUT)
    return proc, out


def _stop(proc, out):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    out.close()


def test_dev_py_run_listens_on_loopback_only_and_says_so(tmp_path):
    http, ws = free_ports(2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"app": {"httpPort": http, "webSocketPort": ws,
                                            "logFile": str(tmp_path / "dev.log")}}))
    proc, out = _start(["dev.py", "run", "--config", str(path)], tmp_path)
    try:
        assert wait_for(lambda: listening(http) and listening(ws), timeout=30), read(out.name)
        assert listening(http) == {"127.0.0.1"} and listening(ws) == {"127.0.0.1"}
        first = read(out.name).splitlines()[0]
        assert first == (f"imserver: listening on 127.0.0.1 only, other machines cannot connect; "
                         f"chat page http://localhost:{http}/home/index, WebSocket "
                         f"ws://localhost:{ws}/acc; IMSERVER_APP_HOST=0.0.0.0 opens it to the "
                         "network (docs/CONFIG.md)")
    finally:
        _stop(proc, out)


def test_open_push_api_on_every_interface_is_a_warning(tmp_path):
    http, ws = free_ports(2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"app": {"host": "0.0.0.0", "httpPort": http,
                                            "webSocketPort": ws,
                                            "logFile": str(tmp_path / "open.log")}}))
    proc, out = _start(["-m", "imserver", "--config", str(path)], tmp_path, name="open")
    try:
        assert wait_for(lambda: listening(http), timeout=30), read(out.name)
        assert listening(http) == {"0.0.0.0"}
        assert read(out.name).splitlines()[0] == (
            "imserver: WARNING: listening on every interface (app.host 0.0.0.0) with the push "
            f"API open: anyone who reaches port {http} can push messages to any user. Set "
            "auth.apiKey (docs/SECURITY.md), or app.host: 127.0.0.1")
    finally:
        _stop(proc, out)


def _hold(port, host="127.0.0.1"):
    import socket
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    return sock


@pytest.mark.parametrize("key,env", [("httpPort", "IMSERVER_APP_HTTPPORT"),
                                     ("webSocketPort", "IMSERVER_APP_WEBSOCKETPORT")])
def test_port_in_use_exits_2_naming_the_setting(tmp_path, key, env):
    http, ws = free_ports(2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"app": {"host": "127.0.0.1", "httpPort": http,
                                            "webSocketPort": ws}}))
    taken = http if key == "httpPort" else ws
    with _hold(taken):
        result = run(["-m", "imserver", "--config", str(path)], timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"imserver: cannot listen on 127.0.0.1:{taken} (app.{key}): the port is in use by "
        f"another process; stop it, or choose another port with app.{key} (e.g. "
        f"{env}={taken + 1})"]


def test_rpc_port_in_use_names_the_worker(tmp_path):
    http, ws, rpc = free_ports(3)
    path = tmp_path / "c.yaml"
    # cluster mode: the check runs before anything talks to Redis
    path.write_text(yaml.safe_dump({"app": {"host": "127.0.0.1", "rpcHost": "127.0.0.1",
                                            "httpPort": http, "webSocketPort": ws,
                                            "rpcPort": rpc, "workers": 2},
                                    "redis": {"addr": "127.0.0.1:1"}}))
    with _hold(rpc + 1):
        result = run(["-m", "imserver", "--config", str(path)], timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(
        f"imserver: cannot listen on 127.0.0.1:{rpc + 1} (app.rpcPort + 1 (worker 1)): the port "
        "is in use by another process")


# -- a real node -----------------------------------------------------------------------------------

ACCESS_LINE = re.compile(
    r'INFO gunicorn\.access: 127\.0\.0\.1 "GET /user/list\?appID=101 HTTP/1\.1" 200 ')


def _start_logging_node(tmp_path, name, **app):
    node = NodeProcess(tmp_path, {"app": app}, name=name).start()
    answer = node.get("/user/list", appID=101)
    assert answer == {"code": 200, "msg": "Success", "data": {"userCount": 0, "userList": []}}
    return node


def test_node_writes_application_and_access_log_to_log_file(tmp_path):
    node = _start_logging_node(tmp_path, "logged", logLevel="debug")
    log_file = node.config["app"]["logFile"]
    try:
        app_line = re.compile(r"INFO imserver: node \S+:%d serving appIDs 101,102,103,104 in "
                              r"embedded single-node mode" % node.rpc_port)
        assert wait_for(lambda: ACCESS_LINE.search(read(log_file))), read(log_file)
        assert wait_for(lambda: ACCESS_LINE.search(node.output())), node.output()
        log_text = read(log_file)
        assert app_line.search(log_text), log_text
        assert app_line.search(node.output())
        assert "INFO gunicorn.error: Booting worker with pid: " in log_text
        # logLevel debug: debug lines in both places
        assert re.search(r"^\S+ \S+ \[\d+\] DEBUG ", log_text, re.M), log_text
        assert re.search(r"^\S+ \S+ \[\d+\] DEBUG ", node.output(), re.M)
    finally:
        node.stop()


def test_log_level_info_has_no_debug_lines(tmp_path):
    node = _start_logging_node(tmp_path, "quiet", logLevel="info")
    log_file = node.config["app"]["logFile"]
    try:
        assert wait_for(lambda: ACCESS_LINE.search(read(log_file))), read(log_file)
    finally:
        node.stop()
    log_text = read(log_file)
    assert "INFO imserver: node " in log_text
    assert " DEBUG " not in log_text
    assert " DEBUG " not in node.output()


def test_websocket_connection_gets_an_access_line_at_the_handshake(tmp_path):
    """docs/CONFIG.md (app.accessLog): the line is written at the handshake, so it is there
    while the connection is still open, and it is the only one."""
    node = _start_logging_node(tmp_path, "wslog", logLevel="info")
    log_file = node.config["app"]["logFile"]
    ws_line = re.compile(r'INFO gunicorn\.access: 127\.0\.0\.1 "GET /acc HTTP/1\.1" 101 ')
    try:
        client = node.client()
        assert client.request("ping")["response"]["data"] == "pong"
        assert wait_for(lambda: ws_line.search(read(log_file))), read(log_file)
        assert client.request("ping")["response"]["data"] == "pong"  # still open
        client.close()
        time.sleep(0.5)
        assert len(ws_line.findall(read(log_file))) == 1
    finally:
        node.stop()


def test_access_log_false_keeps_application_log(tmp_path):
    node = _start_logging_node(tmp_path, "noaccess", logLevel="info", accessLog=False)
    log_file = node.config["app"]["logFile"]
    try:
        node.get("/system/state")
        assert wait_for(lambda: "INFO imserver: node " in read(log_file))
        time.sleep(0.3)
    finally:
        node.stop()
    assert "gunicorn.access" not in read(log_file)
    assert "gunicorn.access" not in node.output()


# -- create_app outside gevent ---------------------------------------------------------------------

def test_create_app_without_monkey_patching_raises():
    script = (
        "import sys\n"
        "from imserver.web import create_app\n"
        "try:\n"
        "    create_app()\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
        "print('no error')\n"
    )
    result = run(["-c", script])
    assert result.returncode == 3, result.stdout + result.stderr
    assert "monkey-patching" in result.stdout
    assert "python -m imserver" in result.stdout


def test_create_app_with_monkey_patching_has_the_routes(tmp_path, monkeypatch):
    # This suite runs monkey-patched, as the node does.
    from imserver.web import create_app, get_node
    for name in [n for n in os.environ if n.startswith("IMSERVER_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "c.yaml"
    path.write_text("app:\n  httpPort: 18080\n  webSocketPort: 18089\n")
    app = create_app(config_path=str(path), overrides={"app.appIDs": [7]}, start=False)
    assert app.config["IMSERVER"]["app.httpPort"] == 18080
    assert app.config["IMSERVER"]["app.appIDs"] == (7,)
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert {"/acc", "/user/list", "/user/online", "/user/sendMessage", "/user/sendMessageAll",
            "/system/state", "/home/index"} <= rules
    with app.app_context():
        assert get_node().app_ids == frozenset({7})


# -- gunicorn.conf.py ------------------------------------------------------------------------------

GUNICORN_PROBE = (
    "import json, runpy, sys\n"
    "ns = runpy.run_path(sys.argv[1])\n"
    "keys = ('bind', 'workers', 'worker_connections', 'worker_class', 'wsgi_app', 'loglevel',\n"
    "        'access_log_format', 'control_socket_disable', 'logconfig_dict')\n"
    "print(json.dumps({k: ns[k] for k in keys}))\n"
)


def test_gunicorn_conf_values_come_from_the_config(tmp_path):
    log_file = tmp_path / "logs" / "g.log"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"app": {"host": "127.0.0.1", "httpPort": 18080,
                                            "webSocketPort": 18089, "logFile": str(log_file),
                                            "logLevel": "warning"}}))
    env = clean_env(IMSERVER_CONFIG=str(path), IMSERVER_APP_WORKERCONNECTIONS="1234")
    result = run(["-c", GUNICORN_PROBE, os.path.join(ROOT, "gunicorn.conf.py")], env=env,
                 cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    ns = json.loads(result.stdout)
    assert ns["bind"] == ["127.0.0.1:18080", "127.0.0.1:18089"]
    assert ns["worker_connections"] == 1234
    assert ns["worker_class"] == "imserver.worker.WebSocketWorker"
    assert ns["workers"] == 1
    assert ns["wsgi_app"] == "imserver.web:create_app()"
    assert ns["loglevel"] == "warning"
    assert ns["control_socket_disable"] is True
    handlers = ns["logconfig_dict"]["handlers"]
    assert handlers["file"]["filename"] == str(log_file)
    assert set(ns["logconfig_dict"]["root"]["handlers"]) == {"stderr", "file"}
    assert log_file.parent.is_dir()  # the log folder is made for the node


def test_gunicorn_conf_default_bind_has_both_ports(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    result = run(["-c", GUNICORN_PROBE, os.path.join(ROOT, "gunicorn.conf.py")],
                 env=clean_env(IMSERVER_CONFIG=str(path)), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    ns = json.loads(result.stdout)
    assert ns["bind"] == ["0.0.0.0:8080", "0.0.0.0:8089"]
    assert ns["worker_connections"] == 1000
    assert ns["loglevel"] == "info"
    assert list(ns["logconfig_dict"]["handlers"]) == ["stderr"]  # no logFile, no file handler


def test_gunicorn_conf_bad_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    result = run(["-c", GUNICORN_PROBE, os.path.join(ROOT, "gunicorn.conf.py")],
                 env=clean_env(IMSERVER_CONFIG=str(path), IMSERVER_APP_WORKERCONNECTIONS="0"),
                 cwd=str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("imserver: config error: app.workerConnections ")
    assert lines[0].endswith("(from environment variable IMSERVER_APP_WORKERCONNECTIONS)")


def test_worker_class_is_a_gevent_websocket_worker():
    from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
    from imserver.worker import WebSocketWorker
    assert issubclass(WebSocketWorker, GeventWebSocketWorker)
