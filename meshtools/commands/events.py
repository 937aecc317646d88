"""mesh-events: everything that changed the mesh, oldest first, as JSON lines.

Two sources, merged by time: the event log in MESH_HOME (registry, inbox, locks: the
primitives that need no Redis) and the Redis events stream (the queue, written atomically
with each change). Redis is read only if it runs; the embedded one is not started for this.
"""

import os
import time

import click

from .. import cli
from ..core import errors, events, jsonl


@cli.command("mesh-events")
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they happen.")
@click.option("--event", "kinds", multiple=True, metavar="PREFIX",
              help="Only events whose name starts with PREFIX (e.g. task., lock.).")
@cli.mesh_options(redis=True)
def mesh_events(follow, kinds, mesh):
    """The mesh's events: registry, inbox, locks and the task queue."""
    stream = _stream(mesh)
    wanted = tuple(kinds)
    shown = [r for r in events.read(mesh.home)]
    last_id = "0-0"
    if stream:
        for last_id, fields in stream[0].xrange(stream[1]):
            shown.append(jsonl.parse_line(fields["e"], 1))
    for record in sorted(shown, key=lambda r: r.get("ts", "")):
        _show(record, wanted)
    if not follow:
        return
    cli.exit_on_sigterm()
    offset = _size(mesh.home.events_file)
    while True:
        offset = _tail_file(mesh.home.events_file, offset, wanted)
        if stream:
            reply = stream[0].xread({stream[1]: last_id}, block=200) or []
            for _, entries in reply:
                for last_id, fields in entries:
                    _show(jsonl.parse_line(fields["e"], 1), wanted)
        else:
            time.sleep(0.2)


def _show(record: dict, wanted: tuple) -> None:
    if not wanted or record.get("event", "").startswith(wanted):
        jsonl.write(record)


def _stream(mesh):
    """(client, events key) when a Redis is there to read, else None."""
    from ..queue.connection import URL_ENV, connect
    from ..queue.names import Names

    explicit = mesh.redis_url or os.environ.get(URL_ENV)
    try:
        client = connect(mesh.home, explicit, blocking=True, start=False)
    except errors.Unavailable:
        if explicit:
            raise
        return None  # the embedded server is not running: the log file is all there is
    return client, Names.from_env(mesh.namespace).events


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _tail_file(path: str, offset: int, wanted: tuple) -> int:
    size = _size(path)
    if size < offset:  # rotated
        offset = 0
    if size == offset:
        return offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]
    for n, line in enumerate(complete.decode("utf-8", "replace").splitlines(), 1):
        try:
            record = jsonl.parse_line(line, n, path)
        except errors.BadInput:
            continue
        if record:
            _show(record, wanted)
    return offset + len(complete)
