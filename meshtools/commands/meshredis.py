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
    stopped = server.stop()
    mesh.emit({"ts": clock.iso(), "kind": "redis", "url": server.url, "stopped": stopped},
              "stopped" if stopped else "not running")


@mesh_redis.command(cls=cli.Command)
@cli.mesh_options()
def status(mesh):
    """Running or not (exit 1 when not), with pid, version and memory."""
    server = _server(mesh)
    record = {"ts": clock.iso(), "kind": "redis", "url": server.url, "running": server.running(),
              "pid": server.pid()}
    if record["running"]:
        from ..queue.connection import connect

        info = connect(mesh.home, server.url, start=False).info()
        record.update(version=info["redis_version"], uptime=info["uptime_in_seconds"],
                      used_memory=info["used_memory"], aof=bool(info.get("aof_enabled")))
    mesh.emit(record, f"{'running' if record['running'] else 'stopped'}: {server.url}")
    sys.exit(errors.OK if record["running"] else errors.NEGATIVE)


@mesh_redis.command(cls=cli.Command)
@cli.mesh_options()
def url(mesh):
    """Print the URL to reach it (for $MESH_REDIS_URL or redis-cli -u)."""
    click.echo(_server(mesh).url)
