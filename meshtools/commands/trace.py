"""meshctl trace: what an agent did, from its task's trace (MESH_HOME/tasks/<id>/stream.jsonl,
executors.trace), as readable steps (executors.steps) or, piped or --json, the records.

    meshctl trace TASK               the task's runs so far
    meshctl trace TASK --follow      ... then its run's lines as they come, until it ends
    meshctl trace PEER               what that session runs now, and next (^C to stop)
    meshctl trace PEER --no-follow   its current task's latest run, as far as it got

A name that is a registered session is a PEER, anything else a TASK.
"""

import sys
import time

import click

from .. import cli, complete
from ..core import errors

POLL = 0.2  # seconds between looks for a queued task's first run


@cli.command("trace")
@click.argument("target", metavar="TASK|PEER", shell_complete=complete.traced)
@click.option("--follow/--no-follow", "-f", default=None,
              help="Keep printing as the run goes (default: no for a TASK; yes for a PEER, "
                   "waiting between its tasks until ^C).")
@cli.mesh_options()
def trace(target, follow, mesh):
    """Show what an agent did in task TASK, or follow what session PEER runs."""
    from ..executors import trace as traces

    home = mesh.home
    show = _printer(mesh)
    peers = _peers(home)
    if target in peers:
        records = traces.follow_peer(home, target, keep_following=follow is not False)
    else:
        records = traces.follow_task(_stream_of(mesh, target, peers, bool(follow)),
                                     bool(follow))
    try:
        for record in records:
            show(record)
    except KeyboardInterrupt:  # the way out of a follow: no "interrupted" line
        sys.exit(errors.INTERRUPTED)


def _stream_of(mesh, task_id: str, peers: list[str], follow: bool) -> str:
    """The task's trace file. Following a task still queued waits for its run to start
    (a task never pushed, or one that ended with no trace, is 65 all the same)."""
    from ..executors import trace as traces

    try:
        return traces.find(mesh.home, task_id, names=peers)
    except errors.BadInput:
        if not follow:
            raise
        no_trace = sys.exc_info()[1]
    from ..queue.results import Results

    results = Results(mesh.broker())
    try:
        if results.final(task_id) is not None:
            raise no_trace
    except errors.BadInput:  # never pushed: what find said
        raise no_trace from None
    mesh.tell(f"{task_id} is queued: waiting for its run to start (^C to stop)")
    try:
        while True:
            time.sleep(POLL)
            try:
                return traces.find(mesh.home, task_id)
            except errors.BadInput:
                if results.final(task_id) is not None:  # it ended with no trace
                    raise no_trace from None
    except KeyboardInterrupt:
        sys.exit(errors.INTERRUPTED)


def _peers(home) -> list[str]:
    from ..coord import registry

    return [r["id"] for r in registry.all_sessions(home) if isinstance(r.get("id"), str)]


def _printer(mesh):
    """Each record as it comes: its JSON line, or its steps' lines on a terminal."""
    from ..executors import steps

    def show(record: dict) -> None:
        lines = [] if mesh.as_json else steps.render(steps.record_steps(record))
        if mesh.as_json or lines:
            mesh.emit(record, "\n".join(lines))

    return show
