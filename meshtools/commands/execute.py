"""meshctl execute: hand a task in plain words to the role that fits it."""

import os
import sys
import time

import click

from .. import cli, complete
from ..core import clock, errors

FOLLOW_SLICE = 0.5  # seconds between updates of the live line


@cli.command("execute")
@click.argument("words", nargs=-1, metavar="[TASK... | -]")
@click.option("--role", metavar="ROLE", shell_complete=complete.roles, help="Send it to ROLE, no routing (as a leading "
                                             "@ROLE in the task does).")
@click.option("--id", "task_id", metavar="ID", help="The task's id (default: generated).")
@click.option("--dry-run", is_flag=True, help="Decide and show the scores; enqueue nothing.")
@click.option("--wait", is_flag=True, help="Follow the task until its result; print it and "
                                           "exit with its status.")
@click.option("--timeout", type=cli.SECONDS, metavar="SECONDS",
              help="With --wait: give up after SECONDS (exit 75).")
@cli.mesh_options(redis=True)
def execute(words, role, task_id, dry_run, wait, timeout, mesh):
    """Route TASK to the role that fits it and enqueue it; `-` (or no TASK, stdin piped)
    reads many, one per line (JSON {"prompt", "role"?, "id"?, ...} or plain text): all
    routed, then all enqueued or none (65 naming the line).

    \b
    meshctl execute "cut the 2.4.0 release"               -> triage
    meshctl execute "fix the failing test in tests/test_x.py" --wait
    meshctl execute @security "review the deploy scripts"   (or --role security)
    meshctl execute --dry-run "compare rq and celery"      the scores, nothing enqueued

    Routing scores each role's rules in roles.toml (route_words: word patterns at word
    boundaries; route_paths: globs on the paths the task names). The best role gets the
    task when it is confidently ahead; otherwise the anchor does, and re-dispatches it with
    `meshctl execute --role ROLE`. The paths named become the task's lock scopes (`scopes`,
    and a line in the prompt of a role that writes).

    The route never loops: run inside a task ($MESH_TASK, $MESH_TASK_HOPS), execute makes
    the new task its child (parent, hops + 1). A task handed on twice that routing would
    give the anchor is for the anchor's own judgement (it does the work, it does not
    re-dispatch); from the third hand-on the anchor's queue refuses it (77), and after
    the fifth every queue does.

    A task's own @ROLE (or a line's "role") wins over --role. --wait shows, on a terminal,
    one live line on stderr (the peer that runs the task, its phase, the time since it was
    queued), then prints the result and exits 0 if it is ok, else the task's exit code when
    it is 1..125, else 1; 75 when --timeout runs out. Empty task or unknown role: 65.
    Enqueued where no live worker drains the queue, it warns in one line on stderr, naming
    the role's dead sessions: the task waits until a worker runs.
    """
    from ..mesh import dispatch

    cli.exclusive(("--dry-run", dry_run), ("--wait", wait))
    if timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    text = " ".join(words) if words else None
    from_stdin = text is None or text == "-"
    if from_stdin:
        if task_id is not None or wait:
            raise click.UsageError(f"{'--id' if task_id else '--wait'} names one task: give "
                                   "TASK, or ids in the JSON lines")
        given = dispatch.read_batch(cli.stdin_lines())
        if not given:
            raise errors.BadInput("no tasks on stdin")
    else:
        given = [(1, {"prompt": text, **({"id": task_id} if task_id else {})})]
    home = mesh.home_if_any if dry_run else mesh.home
    planned = dispatch.queued(home, given, role, dispatch.lineage(os.environ),
                              batch=from_stdin)
    if dry_run:
        for task, route, queue in planned:
            _show(mesh, task, route, {"queue": queue, "dry_run": True})
        return
    broker = mesh.broker(blocking=wait)
    pushed = broker.push([(task, queue) for task, _, queue in planned])
    for (task, route, _), record in zip(planned, pushed):
        _show(mesh, task, route, dispatch.pushed(record))
    for line in dispatch.warnings_for(mesh.home, broker, planned):
        click.echo(f"{cli.prog_name()}: {line}", err=True)
    if wait:
        sys.exit(_follow(mesh, broker, planned[0][0]["id"], timeout))


def _show(mesh, task: dict, route, extra: dict) -> None:
    record = {"ts": clock.iso(), "kind": "route", "id": task["id"], "role": route.role,
              "reason": route.reason, "scores": route.scores, "confident": route.confident,
              "scopes": task["scopes"], "hops": task["hops"], "parent": task.get("parent"),
              "judge": route.judge, **extra}
    line = f"{task['id']} -> {route.role} ({route.reason})"
    if task["scopes"]:
        line += f"; scopes {' '.join(task['scopes'])}"
    if extra.get("duplicate"):
        line += f" (duplicate: {extra.get('state')})"
    if extra.get("dry_run"):
        ranked = sorted(route.scores.items(), key=lambda kv: (-kv[1], kv[0]))
        line += "; not enqueued (--dry-run)\n  scores: " + ", ".join(
            f"{name} {value:g}" for name, value in ranked)
    mesh.emit(record, line)


def _follow(mesh, broker, task_id: str, timeout: float | None) -> int:
    """Wait for the task's result, on a terminal with one live line on stderr (who runs it,
    its phase, the time since it was queued); print the result; its exit status."""
    from ..coord import registry
    from ..mesh import dispatch
    from ..queue.results import Results
    from .queue import result_line

    results = Results(broker)
    live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    start = time.monotonic()
    try:
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise errors.Busy(f"task {task_id} has no result after {timeout:g}s")
            try:
                record = results.wait(task_id, FOLLOW_SLICE if left is None
                                      else min(FOLLOW_SLICE, left))
                break
            except errors.Busy:
                if live:
                    line = dispatch.progress(registry.all_sessions(mesh.home), task_id,
                                             time.monotonic() - start)
                    click.echo(f"\r\x1b[K{line}", err=True, nl=False)
    finally:
        if live:
            click.echo("\r\x1b[K", err=True, nl=False)
    output = (record.get("output") or "").rstrip("\n")
    mesh.emit(record, result_line(record) + (f"\n{output}" if output else ""))
    return dispatch.exit_status(record)
