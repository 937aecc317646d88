"""mesh-anchor: the anchor's deterministic loop (see meshtools.agents.anchor)."""

import os
import time

import click

from .. import cli
from ..core import errors
from ..core import clock, events


@cli.command("mesh-anchor")
@click.option("--once", is_flag=True,
              help="One pass (schedule, peers, the results so far), then exit: for cron.")
@click.option("--gate", metavar="CMD",
              help="Run CMD on each landing's commits in a scratch worktree; main moves only "
                   "if it passes, else the task is handed back (default: config [pick] gate).")
@click.option("--interval", type=cli.Seconds(minimum=0.1), default=5.0, show_default=True,
              metavar="SECONDS", help="How long to wait for results between checks of the "
                                      "schedule and the peers.")
@click.option("--max-handbacks", type=click.IntRange(min=0), metavar="N",
              help="Hand a failed task back at most N times (default: config [anchor] "
                   "max_handbacks, else 1).")
@click.option("--no-respawn", is_flag=True,
              help="Report dead and FATAL peers, never respawn them.")
@click.option("--no-schedule", is_flag=True,
              help="Never enqueue the roles' standing tasks (their prompts are for an "
                   "agent: a mesh whose workers run shell commands has none to run).")
@click.option("--drain", is_flag=True,
              help="Also run the anchor's queue worker (queue-drain --queue anchor --role "
                   "anchor) as a child, in this session: if it exits, so does mesh-anchor "
                   "(non-zero, for its supervisor to restart both); a stop signal is passed "
                   "on and the worker's task finished first. What `meshctl init` runs.")
@click.option("--agent", default="claude", show_default=True, metavar="NAME",
              help="With --drain: the worker's executor (claude, shell, or config [agents]).")
@cli.mesh_options(redis=True)
def mesh_anchor(once, gate, interval, max_handbacks, no_respawn, no_schedule, drain, agent,
                mesh):
    """Follow tasks:results: land finished work on main through mesh-pick, hand failed or
    conflicting tasks back, enqueue scheduled roles' standing tasks, notice stale, dead or
    FATAL peers and respawn dead and FATAL ones. Each decision is printed as it is made
    (JSON lines when piped) and is an event (mesh-events --event anchor.). One mesh-anchor
    runs per mesh (it is no session: the anchor's session is its agent's); another is
    refused (75)."""
    from ..core import roles
    from ..agents.anchor import Anchor, AnchorWorker, describe, hold_the_anchor

    cli.exclusive(("--once", once), ("--drain", drain))
    errors.exit_on_sigterm()
    repo = mesh.home.repository()
    hold_the_anchor(mesh.home)
    anchor = Anchor(mesh.home, mesh.broker(blocking=True), roles.load(mesh.home), repo.root,
                    gate=gate, max_handbacks=max_handbacks, respawn=not no_respawn,
                    schedule=not no_schedule, report=lambda record: mesh.emit(record, describe(record)))
    if not once:
        events.emit(mesh.home, "anchor.started", pid=os.getpid())
        mesh.tell(f"anchor of {repo.root}: following tasks:results, each decision below "
                  "(^C to stop)")
    handled, worker = 0, None
    try:
        if drain:  # last, right before the try: its finally stops it
            worker = AnchorWorker.start(mesh.home, agent, repo.root)
        while True:
            handled += anchor.step(None if once else int(interval * 1000), everything=once)
            if once:
                break
            if worker is not None:
                worker.check()
            time.sleep(0)  # a signal between steps lands here
    finally:
        if worker is not None:
            worker.stop()
        if not once:
            events.emit(mesh.home, "anchor.stopped", pid=os.getpid(), handled=handled)
    mesh.emit({"ts": clock.iso(), "kind": "anchor", "handled": handled},
              f"handled {handled} result(s)")
