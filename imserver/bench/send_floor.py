#!/usr/bin/env python3
"""The kernel's share of a delivery: one process sends a small frame to each of N
loopback TCP sockets whose other ends another process reads, and reports user and
system CPU per send() of the sender. No server, no Python framing: the floor under
any server's "CPU per delivery" measured on loopback, where the sender's system time
also pays for the receiving side of the TCP stack.

    .venv/bin/python -m imserver.bench.send_floor [N=3000] [ROUNDS=40] [BYTES=150]
"""
import os
import resource
import selectors
import socket
import sys


def main(n=3000, rounds=40, size=150):
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
    print(f"{sends} sends of {size} bytes to {n} loopback sockets: "
          f"user {(after.ru_utime - before.ru_utime) / sends * 1e6:.2f} us/send, "
          f"system {(after.ru_stime - before.ru_stime) / sends * 1e6:.2f} us/send"
          + ("" if os.WEXITSTATUS(status) == 0 else " (reader did not get every byte)"))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
