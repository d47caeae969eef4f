"""nginx for the tests: the production deploy/nginx.conf, rewritten only where a test must
differ (free loopback port, the test's nodes, files in the test's directory), run as a child
process of the test and stopped by its pid."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

from support import ROOT, NodeProcess, free_port

DEPLOY_CONF = os.path.join(ROOT, "deploy", "nginx.conf")
INSTALL_HINT = ("nginx is not installed: `python3 dev.py test` installs it with apt-get when "
                "run as root; otherwise `sudo bash scripts/install-test-deps.sh` "
                "(or `sudo apt-get install nginx`)")


def nginx_binary() -> str:
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


def _replace_servers(conf: str, upstream: str, servers) -> str:
    """The ``server`` lines of ``upstream <name> { ... }`` replaced by ``servers``."""
    block = re.compile(r"(upstream\s+" + upstream + r"\s*\{)(.*?)(\n\s*\})", re.S)
    match = block.search(conf)
    if match is None:
        raise ValueError(f"deploy/nginx.conf has no upstream {upstream}")
    body = re.sub(r"\n[ \t]*server\s+[^;]+;[^\n]*", "", match.group(2))
    body += "".join(f"\n        server {s};" for s in servers)
    return conf[:match.start(2)] + body + conf[match.end(2):]


def config_for_test(conf: str, workdir: str, port: int, http_servers, ws_servers) -> str:
    """deploy/nginx.conf for a test: listen on 127.0.0.1:``port``, proxy to the given
    ``host:port`` servers, keep pid, logs and temporary files in ``workdir``."""
    # main context: no system paths; workers as this user (root needs it said)
    conf = re.sub(r"(?m)^[ \t]*(user|pid|error_log|access_log)\s[^;]*;[^\n]*\n", "", conf)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = (f"{user}daemon off;\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/error.log info;\n") + conf
    temp = "".join(f"    {kind}_temp_path {workdir}/{kind}_temp;\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf, n = re.subn(r"(?m)^http\s*\{\n",
                      lambda m: m.group(0) + f"    access_log {workdir}/access.log;\n" + temp,
                      conf)
    if n != 1:
        raise ValueError("deploy/nginx.conf has no http { block")
    conf, n = re.subn(r"(?m)^([ \t]*)listen\s+80\s*;", rf"\1listen 127.0.0.1:{port};", conf)
    if n != 1:
        raise ValueError("deploy/nginx.conf has no `listen 80;` line")
    conf = _replace_servers(conf, "imserver_http", http_servers)
    return _replace_servers(conf, "imserver_ws", ws_servers)


class NginxProcess:
    """nginx on a free loopback port in front of the given nodes (NodeProcess objects):
    HTTP to their http ports, /acc to their WebSocket ports. ``get``, ``post``,
    ``request`` and ``client`` work as on a NodeProcess, through nginx."""

    def __init__(self, workdir, nodes=(), conf_path=DEPLOY_CONF):
        self.workdir = os.path.join(str(workdir), f"nginx-{os.getpid()}-{free_port()}")
        self.port = free_port()
        self.nodes = list(nodes)
        self.conf_path = conf_path
        self.proc = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/acc"

    request = NodeProcess.request
    get = NodeProcess.get
    post = NodeProcess.post
    client = NodeProcess.client

    def output(self) -> str:
        text = []
        for name in ("nginx.stderr", "error.log"):
            try:
                with open(os.path.join(self.workdir, name), errors="replace") as fh:
                    text.append(f"--- {name}\n{fh.read()[-4000:]}")
            except OSError:
                pass
        return "\n".join(text)

    def start(self, timeout: float = 10.0) -> "NginxProcess":
        binary = nginx_binary()
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.conf_path, encoding="utf-8") as fh:
            conf = config_for_test(fh.read(), self.workdir, self.port,
                               [f"127.0.0.1:{n.http_port}" for n in self.nodes],
                               [f"127.0.0.1:{n.ws_port}" for n in self.nodes])
        conf_file = os.path.join(self.workdir, "nginx.conf")
        with open(conf_file, "w", encoding="utf-8") as fh:
            fh.write(conf)
        with open(os.path.join(self.workdir, "nginx.stderr"), "ab") as err:
            self.proc = subprocess.Popen([binary, "-p", self.workdir, "-c", conf_file],
                                         stdout=err, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n"
                                   + self.output())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not listen within {timeout}s:\n"
                                       + self.output())
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM): a graceful one would wait for every WebSocket."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
