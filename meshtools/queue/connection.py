"""Reaching the mesh's Redis: --redis-url, then $MESH_REDIS_URL, then the embedded server
(started on first need, authenticated with the mesh's password so that a server that is not
the mesh's own is refused). redis-py is imported here and only here, on first use."""

import os
import sys
import time

from ..core.errors import DiskError, MeshError, Unavailable, describe
from ..core.home import MeshHome

MIN_VERSION = (6, 2)  # XAUTOCLAIM
LOADING_WAIT = 60.0  # seconds a command waits for a Redis still reading its data back
URL_ENV = "MESH_REDIS_URL"
NOT_REQUIRED = "it does not require the mesh's password"


def resolve_url(home: MeshHome, explicit: str | None = None, start: bool = True) -> str:
    """The URL to show: the given one, else the embedded server's (without its password)."""
    url = explicit or os.environ.get(URL_ENV)
    if url:
        return shown(url)
    from .server import EmbeddedRedis

    server = EmbeddedRedis(home)
    if start:
        server.start()
    return server.url


def connect(home: MeshHome, url: str | None = None, *, blocking: bool = False,
            start: bool = True, timeout: float | None = None, loaded: bool = True):
    """A checked client: reachable and new enough; a URL given carries its own credentials,
    else it is the embedded server's (see embedded()). timeout: seconds to connect and to
    answer, for a caller that cannot wait (a TAB). loaded: return once the server has read
    its data back (wait_loaded); a worker, which waits out LOADING for as long as it takes,
    passes False."""
    url = url or os.environ.get(URL_ENV)
    if url:
        client = _checked(url, shown(url), blocking, f"redis at {shown(url)}: {{}}",
                          timeout=timeout)
    else:
        from .server import EmbeddedRedis

        client = embedded(EmbeddedRedis(home), blocking=blocking, start=start, timeout=timeout)
    if loaded:
        wait_loaded(client, LOADING_WAIT if timeout is None else timeout, quiet=bool(timeout))
    return client


def wait_loaded(client, bound: float, quiet: bool = False) -> None:
    """Return once Redis has read its data back from disk: after a (re)start it answers
    LOADING to every command that touches data for as long as that takes, and a push then
    would fail where a few seconds' wait succeeds. Says once on stderr that it waits
    (unless quiet); Unavailable after bound seconds."""
    deadline = time.monotonic() + bound
    pause = 0.02
    while _loading(client):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unavailable(f"redis is still loading its data after {bound:g}s; try again")
        if pause == 0.02 and not quiet:
            print(f"{os.path.basename(sys.argv[0])}: redis is loading its data; waiting up "
                  f"to {bound:g}s", file=sys.stderr, flush=True)
        time.sleep(min(pause, left))
        pause = min(0.5, pause * 2)


def _loading(client) -> bool:
    import redis

    try:
        return bool(client.info("persistence").get("loading"))
    except redis.BusyLoadingError:  # a server that refuses INFO while loading, too
        return True


def shown(url: str) -> str:
    """url without its password: what records and messages show (a URL given by
    --redis-url or $MESH_REDIS_URL may carry one)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    where = parts.netloc.rpartition("@")[2]
    scheme, rest = url.split("://", 1)  # netloc first: geturl() drops an empty one (unix)
    return (f"{scheme}://{parts.username + '@' if parts.username else ''}{where}"
            f"{rest[len(parts.netloc):]}")


def embedded(server, *, blocking: bool = False, start: bool = True,
             timeout: float | None = None):
    """A checked client of the mesh's own server (started if `start`): one that refuses the
    mesh's password, or does not require it, is not ours (Unavailable). Not started and
    not running (`meshctl down`, `mesh-redis stop`): said as a person would, not redis-py's
    "Error 2 connecting to ...sock"."""
    from .server import NOT_RUNNING, RESTART

    if start:
        server.start()
    elif not server.running():
        try:
            server.authed_url()  # a socket directory that is not ours is refused all the same
        except Unavailable:
            pass
        raise Unavailable(NOT_RUNNING)
    return _checked(server.authed_url(), server.url, blocking,
                    f"the server at {server.socket} is not the mesh's own Redis ({{}}); stop "
                    f"it, then: {RESTART}", _requiring(server, server.password()),
                    timeout=timeout)


def peer(connection) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected unix socket (SO_PEERCRED:
    the kernel's word, not the server's)."""
    import socket
    import struct

    creds = connection._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _requiring(server, password: str):
    """A connect hook for redis-py, run on every (re)connection. Before a word is sent
    (AUTH carries the password: an impostor could echo it back), the socket's peer must be
    the mesh's redis-server process (its pid file's pid, our uid): whatever swapped the
    socket, and whenever, the kernel names who listens. Then the server must require
    exactly this password (Redis >= 6 accepts any AUTH when it has none), and it is told to
    fsync as the mesh's server does (one an older meshtools started fsyncs once a second)."""
    from .server import APPENDFSYNC

    def on_connect(connection) -> None:
        import redis

        pid, uid = peer(connection)
        expected = server.pid()
        if uid != os.getuid() or pid != expected:
            raise redis.AuthenticationError(
                f"its process is pid {pid} of uid {uid}, not the mesh's redis-server "
                f"(pid {expected} of uid {os.getuid()})")
        connection.on_connect()
        connection.send_command("CONFIG", "GET", "requirepass", check_health=False)
        reply = connection.read_response()  # RESP3: a map; RESP2: [name, value]
        values = list(reply.values()) if isinstance(reply, dict) else list(reply or [])[1:]
        value = values[0] if values else None
        if (value.decode() if isinstance(value, bytes) else value) != password:
            raise redis.AuthenticationError(NOT_REQUIRED)
        connection.send_command("CONFIG", "SET", "appendfsync", APPENDFSYNC, check_health=False)
        try:
            connection.read_response()
        except redis.ResponseError:  # loading its data ("only CONFIG GET"): the next time
            pass

    return on_connect


def _checked(url: str, shown: str, blocking: bool, refused: str, on_connect=None,
             timeout: float | None = None):
    """Connect to url (messages name `shown`, never a password). Blocking clients
    (XREADGROUP BLOCK) get no socket timeout, so a long BLOCK never reads as a dead
    server."""
    import redis

    try:
        client = redis.Redis.from_url(url, decode_responses=True,
                                      socket_connect_timeout=timeout or 5,
                                      socket_timeout=None if blocking else timeout or 30,
                                      health_check_interval=30 if blocking else 0,
                                      redis_connect_func=on_connect)
        version = client.info("server")["redis_version"]
    except redis.AuthenticationError as e:  # a ConnectionError: first
        why = describe(e)
        raise Unavailable(refused.format(why if why == NOT_REQUIRED or why.startswith(
            "its process") else f"it refused the password: {why}"))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise Unavailable(f"redis unavailable at {shown}: {describe(e)}")
    except ValueError as e:
        raise Unavailable(f"bad redis url {shown!r}: {e}")
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_VERSION:
        raise Unavailable(f"redis {version} at {shown} is too old: meshtools needs >= "
                          f"{'.'.join(map(str, MIN_VERSION))} (XAUTOCLAIM)")
    return client


def lost_to_disk(error: Exception, home: MeshHome) -> DiskError | None:
    """Why the mesh's own Redis went away in the middle of a command, when it is its disk:
    with appendfsync always it exits rather than acknowledge a write it could not put in
    its append-only file, so the client sees only a closed connection. A DiskError when it
    is gone and its directory cannot take a write now; else None."""
    import redis

    if not isinstance(error, redis.ConnectionError) or isinstance(error, redis.BusyLoadingError):
        return None
    from .server import EmbeddedRedis

    server = EmbeddedRedis(home)
    if not os.path.exists(server.pidfile) or server.pid() is not None:
        return None  # stopped on purpose, or still there: not the disk
    full = server.disk_error()
    if full is None:
        return None
    return DiskError(f"the mesh's Redis stopped: it cannot write its append-only file "
                     f"({full.strerror}: {server.dir}); the write was not acknowledged")


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
