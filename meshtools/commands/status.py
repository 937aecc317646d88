"""meshctl status: one screen of the mesh's health; --check for cron and monitors."""

import os

import click

from .. import cli
from ..core import errors, jsonl


@cli.command("status")
@click.option("--check", is_flag=True,
              help="Show nothing but problems, one line each on stderr, and exit 1 when there "
                   "is one; 0 and silent (\"ok\" on a terminal) when there is none.")
@cli.mesh_options(redis=True)
def status(check, mesh):
    """The mesh's health: Redis (round trip, persistence), each session's state, phase and
    task, the queues (depth, pending, oldest), dead letters, a pause in force, today's spend
    and the daily budget, and what needs a person now.

    Problems: Redis unreachable, a peer dead, FATAL or stuck, the mesh down while tasks are
    queued (mesh_down) or a queue with tasks no live worker drains (no_worker), no
    mesh-anchor for a mesh with an anchor session (anchor), landing waiting and why
    (landing) or cut off after main moved (landing_interrupted), dispatch paused, the day's
    budget spent, dead letters waiting. Status never starts the mesh's Redis: down is shown.
    """
    from ..mesh import health
    from ..queue.connection import resolve_url

    home = mesh.home
    if not os.path.isdir(home.path):
        raise errors.ConfigError(f"no mesh at {home.path}: meshctl init makes one")
    broker, error = None, None
    try:
        broker = mesh.broker(start=False)
    except errors.Unavailable as e:
        error = str(e)
    snapshot = health.collect(home, broker, resolve_url(home, mesh.redis_url, start=False),
                              error)
    if check:
        for problem in snapshot["problems"]:
            click.echo(f"{cli.prog_name()}: {problem['kind']}: {problem['text']}", err=True)
        if snapshot["problems"]:
            return errors.NEGATIVE
        mesh.tell("ok: nothing needs you")
    elif mesh.as_json:
        for record in health.records(snapshot):
            jsonl.write(record)
    else:
        click.echo("\n".join(health.render(snapshot)))
