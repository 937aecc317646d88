"""mesh-redis: the mesh's embedded redis-server (a real process on a unix socket)."""

import sys

import click

from .. import cli
from ..core import clock, errors


def _server(mesh):
    from ..queue.server import EmbeddedRedis

    return EmbeddedRedis(mesh.home)


@cli.group("mesh-redis")
def mesh_redis():
    """Start, stop and inspect the mesh's embedded Redis (unused when $MESH_REDIS_URL is set)."""


@mesh_redis.command(cls=cli.Command)
@cli.mesh_options()
def start(mesh):
    """Start it (a no-op when it runs)."""
    server = _server(mesh)
    started = server.start()
    mesh.emit({"ts": clock.iso(), "kind": "redis", "url": server.url, "pid": server.pid(),
               "started": started}, f"{'started' if started else 'running'}: {server.url}")


@mesh_redis.command(cls=cli.Command)
@cli.mesh_options()
def stop(mesh):
    """Stop it; the append-only file keeps every queued task for the next start."""
    server = _server(mesh)
    url = server.url  # before its socket directory goes with it
    stopped = server.stop()
    mesh.emit({"ts": clock.iso(), "kind": "redis", "url": url, "stopped": stopped},
              "stopped" if stopped else "not running")


@mesh_redis.command(cls=cli.Command)
@cli.mesh_options()
def status(mesh):
    """Running or not (exit 1 when not), with pid, version and memory."""
    server = _server(mesh)
    record = {"ts": clock.iso(), "kind": "redis", "url": server.url, "running": server.running(),
              "pid": server.pid()}
    human = f"{'running' if record['running'] else 'stopped'}: {server.url}"
    if record["running"]:
        from ..queue.connection import embedded

        try:
            info = embedded(server, start=False).info()
        except errors.MeshError as e:  # it answers, but is not ours (or not reachable)
            record.update(running=False, error=str(e))
            human = f"not the mesh's: {e}"
        else:
            record.update(version=info["redis_version"], uptime=info["uptime_in_seconds"],
                          used_memory=info["used_memory"], aof=bool(info.get("aof_enabled")))
    mesh.emit(record, human)
    sys.exit(errors.OK if record["running"] else errors.NEGATIVE)


@mesh_redis.command(cls=cli.Command)
@cli.mesh_options()
def url(mesh):
    """Print the URL to reach it, with the mesh's password in it (for $MESH_REDIS_URL or a
    redis client): keep it as secret as the password."""
    click.echo(_server(mesh).authed_url())
