"""Real Redis servers for cluster tests, started and stopped by the tests themselves."""
import os

import redis

from imserver.bench import harness
from support import free_port

INSTALL_HINT = ("redis-server is not installed: `python3 dev.py test` installs it with "
                "apt-get when run as root; otherwise `sudo apt-get install redis-server`")


def redis_binary() -> str:
    path = harness.redis_server_path()
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


class RedisProcess(harness.RedisServer):
    """A throw-away redis-server on a free loopback port, without persistence, that a
    test may stop and start again on the same port."""

    start_timeout = 10.0

    def __init__(self, workdir):
        self.workdir = str(workdir)
        port = free_port()
        super().__init__(redis_binary(), port, self.workdir,
                         os.path.join(self.workdir, f"redis-{port}.log"))

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           decode_responses=True)
