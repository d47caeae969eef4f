"""imserver: a distributed WebSocket chat and push server (IM) on gevent.

Layers, each a module or package: ``protocol`` (codes, envelope, framing, the message
value) -> ``connection`` (one socket) -> ``hub`` (local connections and users) ->
``cluster`` (presence store, relay and peer service contracts, with memory, Redis and gRPC
engines) -> ``node`` (sessions and commands, presence, delivery, composed by ``Node``) ->
``runtime`` (building nodes in a server process, worker hooks) -> ``web`` (Flask app
factory and blueprints) -> ``__main__`` and ``gunicorn.conf.py`` (entry points).
"""
__version__ = "0.1.0"
