"""Redis and its disk, for real: a full disk (a small tmpfs, filled), kill -9 of Redis, and a
Redis still loading its data after a start. What a command was told is stored survives;
what could not be stored is refused with 74, not acknowledged."""

import errno
import os
import signal
import subprocess

import pytest

from .helpers import redis_of, wait_until

PROMPT = "echo " + "x" * 300  # a push of some size: the disk fills within a few


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that a test can fill. Needs root (CAP_SYS_ADMIN), as CI has."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs, and mount was refused here: "
                    f"{made.stderr.strip() or made.returncode}")
    yield mount
    for pidfile in mount.rglob("*.pid"):  # a redis-server of the test's still runs there
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk) -> None:
    """Take every free byte of disk (a file grown until the write fails with ENOSPC)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return


def push_until_refused(run, count=200) -> tuple[list[str], object]:
    """Push tasks one at a time until one is refused: the ids acknowledged (exit 0), and
    the refused command's result."""
    acknowledged = []
    for n in range(count):
        pushed = run("queue-push", "--id", f"t{n}", PROMPT)
        if pushed.returncode != 0:
            return acknowledged, pushed
        acknowledged.append(f"t{n}")
    raise AssertionError(f"{count} pushes on a full disk were all acknowledged")


def queued_ids(client) -> set[str]:
    import json

    return {json.loads(fields["task"])["id"]
            for _, fields in client.xrange("tasks:queue:default")}


def test_every_acknowledged_push_survives_a_full_disk_and_kill_9(run, small_disk, monkeypatch):
    """#17.9: the last push acknowledged before its failed AOF write was lost."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    home = small_disk / "home"
    monkeypatch.setenv("MESH_HOME", str(home))
    run("queue-push", "--id", "first", "true", check=0)
    server = EmbeddedRedis(MeshHome(str(home)))
    fill(small_disk)
    acknowledged, refused = push_until_refused(run)
    pid = server.pid()
    if pid is not None:  # it exits rather than acknowledge what it could not store
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: server.pid() is None)
    (small_disk / "filler").unlink()  # space again: Redis starts and reads its file back
    run("mesh-redis", "start", check=0)
    assert queued_ids(redis_of(home)) >= {"first", *acknowledged}
    assert refused.returncode == 74, (refused.returncode, refused.stderr)
    assert "append-only file (No space left on device" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr


def test_a_server_an_older_meshtools_started_fsyncs_every_write_once_reached(run, mesh_home):
    """An upgrade leaves the mesh's Redis running as it was started: fsyncing once a second."""
    client = redis_of(mesh_home)
    client.config_set("appendfsync", "everysec")  # as meshtools started it until now
    run("queue-push", "--id", "after-the-upgrade", "true", check=0)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}


@pytest.fixture
def everysec_redis(small_disk, monkeypatch):
    """A Redis of someone else's (--redis-url) on the small disk, persisting as Redis does
    by default with append-only on: fsync once a second."""
    from meshtools.queue.server import binary

    socket = small_disk / "r.sock"
    subprocess.run([binary(), "--port", "0", "--unixsocket", str(socket),
                    "--dir", str(small_disk), "--appendonly", "yes", "--appendfsync", "everysec",
                    "--save", "", "--daemonize", "yes", "--pidfile", str(small_disk / "r.pid"),
                    "--logfile", str(small_disk / "r.log")], check=True)
    wait_until(socket.exists)
    monkeypatch.setenv("MESH_REDIS_URL", f"unix://{socket}")
    return socket


def test_a_redis_that_cannot_persist_a_push_is_74_not_69(run, small_disk, everysec_redis):
    """#17.14: MISCONF (it cannot write its append-only file: the disk is full) said 69."""
    run("queue-push", "--id", "first", "true", check=0)
    fill(small_disk)
    _, refused = push_until_refused(run)
    if "MISCONF" not in refused.stderr:  # everysec: the first failed write was answered OK
        refused = run("queue-push", "--id", "again", PROMPT)
    assert refused.returncode == 74, (refused.returncode, refused.stderr)
    assert refused.stderr.startswith("queue-push: redis cannot store the write: MISCONF ")
    assert refused.stderr.count("\n") == 1


def test_a_full_redis_memory_is_74(run, mesh_home):
    """OOM (maxmemory reached, noeviction) is a write that cannot be stored: 74, one line."""
    client = redis_of(mesh_home)
    run("queue-push", "--id", "first", "true", check=0)
    client.config_set("maxmemory", 1)
    try:
        refused = run("queue-push", "--id", "second", "true")
    finally:
        client.config_set("maxmemory", 0)
    assert refused.returncode == 74, (refused.returncode, refused.stderr)
    assert "redis cannot store the write: OOM command not allowed" in refused.stderr


@pytest.fixture
def slow_loading_redis(tmp_path, monkeypatch, mesh_home):
    """The mesh's Redis, stopped with 24 MB in 3,000 keys in its append-only file's base
    (an RDB; random bytes, which it cannot compress), and its next start made to take a
    millisecond a key to read them back (key-load-delay: Redis's own knob for its tests).
    Meanwhile it serves clients each time it has read 2 MB (a dozen times: a client's
    round trips are that slow), with LOADING to all but a few commands (INFO, AUTH)."""
    from meshtools.queue.server import binary

    client = redis_of(mesh_home)
    client.eval("for n = 1, tonumber(ARGV[2]) do redis.call('SET', 'filler:' .. n, ARGV[1]) "
                "end", 0, os.urandom(4000).hex(), 3000)  # one command: one fsync
    client.bgrewriteaof()

    def rewritten():
        info = client.info("persistence")
        return not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])

    wait_until(rewritten)
    subprocess.run(["mesh-redis", "stop"], check=True, capture_output=True)
    wrapper = tmp_path / "redis-server"
    wrapper.write_text(f'#!/bin/sh\nexec {binary()} "$@" --key-load-delay 1000\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("MESH_REDIS_SERVER", str(wrapper))


def test_a_push_waits_for_a_redis_loading_its_data(run, slow_loading_redis, mesh_home):
    """#17.14: queue-push exited 69 at once while Redis loaded its data (workers wait)."""
    pushed = run("queue-push", "--id", "late", "true")
    assert pushed.returncode == 0, (pushed.returncode, pushed.stderr)
    assert "redis is loading its data; waiting" in pushed.stderr  # it met the loading
    client = redis_of(mesh_home)
    assert "late" in queued_ids(client) and client.get("filler:3000")


def test_the_wait_for_a_loading_redis_is_bounded(run, slow_loading_redis, mesh_home):
    from meshtools.core.errors import Unavailable
    from meshtools.core.home import MeshHome
    from meshtools.queue.connection import connect, wait_loaded

    client = connect(MeshHome(str(mesh_home)), loaded=False)
    with pytest.raises(Unavailable, match="still loading its data after 0.2s"):
        wait_loaded(client, 0.2, quiet=True)
    wait_loaded(client, 60, quiet=True)
    assert client.get("filler:3000")
