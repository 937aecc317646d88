"""meshctl down: stop every process of this mesh (the logic: meshtools.mesh.stop)."""

import click

from .. import cli
from ..core import errors, lifecycle
from ..mesh import stop


@cli.command("down")
@click.option("--timeout", type=cli.SECONDS, default=stop.DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="How long a running task may take to finish; then it "
                                      "is handed back (0: at once).")
@click.option("--all", "everything", is_flag=True,
              help="Also stop the mesh's embedded Redis (never an external --redis-url one).")
@cli.mesh_options(redis=True)
def down(timeout, everything, mesh):
    """Stop every process of this mesh, found from its own records (never by name): its
    supervisors with their agents and queue workers, and the anchor loop; unregister their
    sessions. A queue worker finishes its task within --timeout, else hands it back (never
    lost); what outlives that by 5 s is killed. Queues, results and worktrees stay; a
    session the mesh did not start, or on another host, is left. A start under way
    (meshctl init, mesh-spawn) is waited for and stopped too, and nothing of the mesh starts
    while down runs: after it returns, nothing of the mesh runs. Idempotent: on a stopped
    mesh it says "nothing runs". Exit 75 names what could not be stopped."""
    # what is starting is recorded first; nothing of the mesh starts until down returns
    with lifecycle.stopping(mesh.home):
        todo = stop.survey(mesh.home)
        if todo["stop"]:
            mesh.tell(f"stopping {len(todo['stop'])} process(es) of {mesh.home.path}; a "
                      f"running task has {timeout:g}s to finish")
        summary = stop.down(mesh.home, todo, timeout, redis=everything,
                            external_redis=bool(mesh.redis_url),
                            report=lambda record: mesh.emit(record, stop.describe(record)))
    if summary["not_stopped"]:
        raise errors.Busy("could not stop: " + ", ".join(summary["not_stopped"]))
