"""Reaching the mesh's Redis: --redis-url, then $MESH_REDIS_URL, then the embedded server
(started on first need). redis-py is imported here and only here, on first use."""

import os

from ..core.errors import Unavailable
from ..core.home import MeshHome

MIN_VERSION = (6, 2)  # XAUTOCLAIM
URL_ENV = "MESH_REDIS_URL"


def resolve_url(home: MeshHome, explicit: str | None = None, start: bool = True) -> str:
    url = explicit or os.environ.get(URL_ENV)
    if url:
        return url
    from .server import EmbeddedRedis

    server = EmbeddedRedis(home)
    if start:
        server.start()
    return server.url


def connect(home: MeshHome, url: str | None = None, *, blocking: bool = False,
            start: bool = True):
    """A checked client: reachable, and new enough. Blocking clients (XREADGROUP BLOCK) get
    no socket timeout, so a long BLOCK never reads as a dead server."""
    import redis

    url = resolve_url(home, url, start)
    try:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                      socket_timeout=None if blocking else 30,
                                      health_check_interval=30 if blocking else 0)
        version = client.info("server")["redis_version"]
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise Unavailable(f"redis unavailable at {url}: {describe(e)}")
    except ValueError as e:
        raise Unavailable(f"bad redis url {url!r}: {e}")
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_VERSION:
        raise Unavailable(f"redis {version} at {url} is too old: meshtools needs >= "
                          f"{'.'.join(map(str, MIN_VERSION))} (XAUTOCLAIM)")
    return client


def describe(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def unavailable(error: Exception) -> bool:
    """Whether error says Redis cannot serve for now, a state to wait out: down or
    restarting, or refusing writes because it cannot persist them (MISCONF: a full disk,
    an AOF or snapshot that cannot be written), in a pipeline or a script too."""
    import redis

    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return True
    return isinstance(error, redis.ResponseError) and "MISCONF" in str(error)


def reviver(home: MeshHome, explicit: str | None = None):
    """For a long-lived client: a function that starts the mesh's own Redis again if it
    died (kill -9, the OOM killer: its pid file names a dead process) and says whether it
    did, so that a crash heals without anyone running a command. A clean stop (`mesh-redis
    stop`: Redis removes its pid file) is left alone, and so is a server given by
    --redis-url or $MESH_REDIS_URL: None then."""
    if explicit or os.environ.get(URL_ENV):
        return None
    from .server import EmbeddedRedis

    server = EmbeddedRedis(home)

    def revive() -> bool:
        return os.path.exists(server.pidfile) and server.pid() is None and server.start()

    return revive
