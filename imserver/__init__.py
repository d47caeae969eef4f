"""imserver: a distributed WebSocket chat and push server (IM) on gevent.

Layers, each a module or package: ``protocol`` (envelope, codes, framing) ->
``connection`` (one socket) -> ``hub`` (local connections and users) -> ``cluster``
(presence store and relay) -> ``node`` (composition and delivery) -> ``web`` (Flask
app factory and blueprints) -> ``__main__`` and ``gunicorn.conf.py`` (entry points).
"""
__version__ = "0.1.0"
