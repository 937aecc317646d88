"""Small helpers the test modules share."""

import json
import time


def wait_until(predicate, timeout=10.0):
    """Poll until predicate() is truthy; fail the test if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition never became true")


def lock_table(mesh_home):
    path = mesh_home / "locks" / "table.json"
    return json.loads(path.read_text()) if path.exists() else {"locks": {}, "waits": {}}


def redis_of(mesh_home):
    """A client of the test's own Redis (the embedded one in its MESH_HOME, started on
    first need)."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.connection import connect

    return connect(MeshHome(str(mesh_home)))


def run_tree(pid: int) -> list:
    """The supervisor pid and every process under it (psutil), but the mesh's Redis: a
    worker may have started it on first need, and it outlives any run by design."""
    import psutil

    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    redis = EmbeddedRedis(MeshHome.find()).pid()
    top = psutil.Process(pid)
    return [top, *(p for p in top.children(recursive=True) if p.pid != redis)]
