"""mesh-events: everything that changed the mesh, oldest first, as JSON lines.

Two sources: the event log in MESH_HOME (registry, inbox, locks, agents: the commands that
need no Redis) and the Redis events stream (the queue, written atomically with each change),
into which the log is copied (queue.mirror). With Redis, the history is the copied part of
the log and the stream's own entries merged by time, then the stream alone; without, the
log alone. Redis is read only if it runs; the embedded one is not started for this.
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
    """The mesh's events: registry, inbox, locks, agents and the task queue."""
    wanted = tuple(kinds)
    stream = _stream(mesh)
    if stream:
        _from_stream(mesh.home, *stream, follow, wanted)
    else:
        _from_log(mesh.home, follow, wanted)


def _from_stream(home, client, names, follow: bool, wanted: tuple) -> None:
    """The log up to the copied position and the stream's own entries, merged by time;
    then, after one more copy, whatever the stream gains (live with --follow)."""
    from ..queue import mirror

    mirror.forward(client, names, home)
    pipe = client.pipeline(transaction=True)  # one snapshot: the entries and the position
    pipe.xrange(names.events)
    pipe.get(names.events_position)
    entries, position = pipe.execute()
    logged = events.lines_after(home, None, until=position)[0] if position else []
    shown = [jsonl.try_parse(line) for line in logged]
    shown += [jsonl.try_parse(fields["e"]) for _, fields in entries
              if fields.get("from") != "log"]
    for record in sorted(filter(None, shown), key=lambda r: r.get("ts", "")):
        _show(record, wanted)
    last_id = entries[-1][0] if entries else "0-0"
    if follow:
        errors.exit_on_sigterm()
    while True:
        mirror.forward(client, names, home)
        records, last_id = mirror.read_after(client, names, last_id,
                                             block=200 if follow else None)
        for record in records:
            _show(record, wanted)
        if not follow:
            return


def _from_log(home, follow: bool, wanted: tuple) -> None:
    """No Redis running: the log file is all there is."""
    position = None
    if follow:
        errors.exit_on_sigterm()
    while True:
        lines, position = events.lines_after(home, position)
        for line in lines:
            _show(jsonl.try_parse(line), wanted)
        if not follow:
            return
        time.sleep(0.2)


def _show(record: dict | None, wanted: tuple) -> None:
    if record and (not wanted or record.get("event", "").startswith(wanted)):
        jsonl.write(record)


def _stream(mesh):
    """(client, names) when a Redis is there to read, else None."""
    from ..queue.connection import URL_ENV, connect
    from ..queue.names import Names

    explicit = mesh.redis_url or os.environ.get(URL_ENV)
    try:
        client = connect(mesh.home, explicit, blocking=True, start=False)
    except errors.Unavailable:
        if explicit:
            raise
        return None  # the embedded server is not running: the log file is all there is
    return client, Names.from_env(mesh.namespace)
