"""imserver.bench: a load tool that drives any running node or cluster through its public
protocol (WebSocket + HTTP API) and measures it.

``python -m imserver.bench --help`` lists the scenarios. The pieces:

- ``wsclient``: a minimal client-side WebSocket codec on raw gevent sockets (one greenlet
  per connection, masked client frames), cheap enough for ~15,000 connections a process;
- ``drivers``: the two protocols behind one interface, ``acc`` (this project's frames, also
  spoken by the naive gevent-websocket server) and ``socketio`` (Engine.IO v4 / Socket.IO v5);
- ``client``: a client worker process (``python -m imserver.bench.client``), commanded by
  JSON lines (``jsonlines``) on stdin, answering on stdout;
- ``coordinator``: spawns the workers, talks to them, sends HTTP pushes;
- ``procstat``: finds the server processes from a listening port and reads their RSS/CPU;
- ``scenarios``: connect, idle, broadcast, unicast, churn, suite;
- ``report``: results.json, results.md and the PNG plots;
- ``cli`` and ``options``: the command line;
- ``soak``: ``python -m imserver.bench soak``, a long run that starts its own Redis and
  two nodes and injects faults;
- ``inbox``: ``python -m imserver.bench private`` and ``offline``, private messages and the
  inbox on one embedded node or on Redis and two nodes that they start themselves;
- ``harness``: starting and stopping nodes, redis-server and the peers by pid, for the
  soak and the test suite alike;
- ``send_floor``: ``python -m imserver.bench.send_floor``, the kernel's cost of one
  ``send()`` on loopback, the floor under any server's CPU per delivery;
- ``peers/``: the comparison servers (Flask-SocketIO and a naive gevent-websocket one)
  and ``python -m imserver.bench.peers.idle_rss``; see peers/README.md.
"""
