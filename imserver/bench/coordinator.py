"""The coordinator's side: client worker processes and the HTTP push client.

``Workers(k)`` starts ``k`` processes ``python -m imserver.bench.client`` (each
gevent-patched at start) and talks JSON lines to them; ``call_all`` sends one command
to each and gathers the answers. ``HttpPool`` posts form requests with keep-alive
connections. The process using this module must be gevent-patched (the CLI is).
"""
import http.client
import itertools
import json
import os
import sys
import time
from urllib.parse import urlencode, urlsplit

import gevent
from gevent import subprocess
from gevent.event import AsyncResult
from gevent.queue import LifoQueue, Empty

from .harness import ROOT
from .jsonlines import encode, messages



class WorkerError(Exception):
    pass


class WorkerProcess:
    """``python -m <module> --id wid``: ``imserver.bench.client`` or a module whose worker
    extends its commands (``client.main(worker_class=...)``)."""

    def __init__(self, wid: int, max_seconds: float, module: str = "imserver.bench.client"):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        self.wid = wid
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--id", str(wid),
             "--max-seconds", str(int(max_seconds))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
        self.pid = self.proc.pid
        self._ids = itertools.count(1)
        self._waiting = {}
        self._reader = gevent.spawn(self._read)
        self.alive = True

    def _read(self):
        for msg in messages(self.proc.stdout.readline):
            if not isinstance(msg, dict):
                continue
            waiter = self._waiting.pop(msg.get("id"), None)
            if waiter is not None:
                waiter.set(msg)
        self.alive = False
        for waiter in self._waiting.values():
            waiter.set({"ok": False, "error": f"worker {self.wid} exited"})
        self._waiting.clear()

    def send(self, cmd: str, **kw) -> AsyncResult:
        rid = next(self._ids)
        result = AsyncResult()
        if not self.alive:
            result.set({"ok": False, "error": f"worker {self.wid} is gone"})
            return result
        self._waiting[rid] = result
        try:
            self.proc.stdin.write(encode({"id": rid, "cmd": cmd, **kw}))
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self._waiting.pop(rid, None)
            result.set({"ok": False, "error": f"worker {self.wid}: {exc}"})
        return result

    def call(self, cmd: str, timeout: float = 30.0, **kw) -> dict:
        result = self.send(cmd, **kw)
        # wait() rather than get(timeout): an outer gevent.Timeout (--max-seconds) must
        # pass through, not be taken for this call's.
        if not result.wait(timeout):
            raise WorkerError(f"worker {self.wid}: no answer to {cmd} within {timeout:.0f}s")
        answer = result.get()
        if not answer.get("ok"):
            raise WorkerError(f"worker {self.wid}: {cmd} failed: {answer.get('error')}")
        return answer

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.kill(block=False)


class Workers:
    """``k`` client worker processes."""

    def __init__(self, k: int, max_seconds: float, module: str = "imserver.bench.client"):
        self.procs = [WorkerProcess(i, max_seconds, module) for i in range(k)]
        for w in self.procs:
            w.call("hello", timeout=60)

    def __len__(self):
        return len(self.procs)

    @property
    def pids(self):
        return [w.pid for w in self.procs]

    def call_all(self, cmd: str, timeout: float = 30.0, per_worker=None, **kw) -> list:
        """Send ``cmd`` to every worker at once (``per_worker(i)`` adds arguments for
        worker i) and wait for all answers."""
        results = []
        for i, w in enumerate(self.procs):
            extra = per_worker(i) if per_worker else {}
            results.append(w.send(cmd, **kw, **extra))
        answers = []
        deadline = time.monotonic() + timeout
        for w, r in zip(self.procs, results):
            if not r.wait(max(0.0, deadline - time.monotonic())) and not r.ready():
                raise WorkerError(f"worker {w.wid}: no answer to {cmd} within {timeout:.0f}s")
            answer = r.get()
            if not answer.get("ok"):
                raise WorkerError(f"worker {w.wid}: {cmd} failed: {answer.get('error')}")
            answers.append(answer)
        return answers

    def stop(self):
        for w in self.procs:
            gevent.spawn(w.stop)
        gevent.sleep(0)
        deadline = time.monotonic() + 10
        for w in self.procs:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()


class HttpPool:
    """Form POSTs and GETs to one base URL over kept-alive connections."""

    def __init__(self, base_url: str, size: int = 64, timeout: float = 10.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// is supported, got {base_url!r}")
        self.base = base_url.rstrip("/")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._idle = LifoQueue(maxsize=size)

    def _conn(self, fresh: bool = False):
        if not fresh:
            try:
                return self._idle.get_nowait()
            except Empty:
                pass
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _release(self, conn):
        try:
            self._idle.put_nowait(conn)
        except Exception:
            conn.close()

    def request(self, method: str, path: str, params: dict = None) -> "tuple[int, dict]":
        """(HTTP status, JSON body); retried once, on a new connection, when a kept-alive one
        turns out to be closed (the server ends idle ones after its keep-alive time, and
        the other idle ones are as old; sends carry a msgID, so a repeat is never delivered
        twice)."""
        body = None
        headers = {}
        url = self.prefix + path
        if params and method == "GET":
            url += "?" + urlencode(params)
        elif params:
            body = urlencode(params)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (0, 1):
            conn = self._conn(fresh=attempt == 1)
            try:
                conn.request(method, url, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (http.client.HTTPException, OSError):
                conn.close()
                if attempt:
                    raise
                continue
            if resp.will_close:
                conn.close()
            else:
                self._release(conn)
            try:
                return status, json.loads(data)
            except ValueError:
                return status, {"raw": data[:200].decode("utf-8", "replace")}
        raise OSError("unreachable")

    def post(self, path: str, **form) -> "tuple[int, dict]":
        return self.request("POST", path, form)

    def get(self, path: str, **params) -> "tuple[int, dict]":
        return self.request("GET", path, params)
