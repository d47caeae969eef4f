#!/usr/bin/env python3
"""The kernel's share of a delivery: one process sends a small frame to each of N
loopback TCP sockets whose other ends another process reads, and reports user and
system CPU per send() of the sender. No server, no Python framing: the floor under
any server's "CPU per delivery" measured on loopback, where the sender's system time
also pays for the receiving side of the TCP stack.

    .venv/bin/python -m imserver.bench.send_floor [N=3000] [ROUNDS=40] [BYTES=150] [--json]

``--json`` prints one JSON object (``sends``, ``bytes``, ``user_us``, ``system_us``,
``total_us`` per send, ``complete``) instead of the sentence; the broadcast scenario's
``--send-floor`` runs it so, beside its own measurement.
"""
import json
import os
import resource
import selectors
import socket
import sys


def measure(n=3000, rounds=40, size=150) -> dict:
    """Send ``rounds`` frames of ``size`` bytes to each of ``n`` loopback sockets; the
    sender's CPU per send (µs). Forks the reader: call it from a process of its own."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # the reader: n clients, reading until every byte arrived
        sel = selectors.DefaultSelector()
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
        os.write(ready_w, b"x")
        expected, got = n * rounds * size, 0
        while got < expected:
            events = sel.select(10)
            if not events:
                break
            for key, _ in events:
                got += len(key.fileobj.recv(65536))
        os._exit(0 if got == expected else 1)
    servers = [listener.accept()[0] for _ in range(n)]
    os.read(ready_r, 1)
    payload = b"x" * size
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(rounds):
        for s in servers:
            s.send(payload)
    after = resource.getrusage(resource.RUSAGE_SELF)
    _, status = os.waitpid(child, 0)
    sends = n * rounds
    user = (after.ru_utime - before.ru_utime) / sends * 1e6
    system = (after.ru_stime - before.ru_stime) / sends * 1e6
    for s in servers:
        s.close()
    listener.close()
    return {"connections": n, "rounds": rounds, "sends": sends, "bytes": size,
            "user_us": round(user, 3), "system_us": round(system, 3),
            "total_us": round(user + system, 3), "complete": os.WEXITSTATUS(status) == 0}


def main(n=3000, rounds=40, size=150, as_json=False):
    r = measure(n, rounds, size)
    if as_json:
        print(json.dumps(r))
        return
    print(f"{r['sends']} sends of {size} bytes to {n} loopback sockets: "
          f"user {r['user_us']:.2f} us/send, system {r['system_us']:.2f} us/send"
          + ("" if r["complete"] else " (reader did not get every byte)"))


if __name__ == "__main__":
    argv = sys.argv[1:]
    as_json = "--json" in argv
    main(*[int(a) for a in argv if a != "--json"][:3], as_json=as_json)
