"""mesh-anchor: the anchor's deterministic loop (see meshtools.agents.anchor)."""

import os
import time

import click

from .. import cli
from ..core import clock

LOOP_ID = "anchor-loop"


@cli.command("mesh-anchor")
@click.option("--once", is_flag=True,
              help="One pass (schedule, peers, the results so far), then exit: for cron.")
@click.option("--gate", metavar="CMD",
              help="Run CMD in the main checkout after each landing; a failure rolls main "
                   "back and hands the task back (default: config [pick] gate).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              metavar="SECONDS", help="How long to wait for results between checks of the "
                                      "schedule and the peers.")
@click.option("--max-handbacks", type=click.IntRange(min=0), metavar="N",
              help="Hand a failed task back at most N times (default: config [anchor] "
                   "max_handbacks, else 1).")
@click.option("--no-respawn", is_flag=True, help="Report dead peers, never respawn them.")
@cli.mesh_options(redis=True)
def mesh_anchor(once, gate, interval, max_handbacks, no_respawn, mesh):
    """Follow tasks:results: land finished work on main through mesh-pick, hand failed or
    conflicting tasks back, enqueue scheduled roles' standing tasks, and notice stale, dead
    or FATAL peers. Every decision is an event (mesh-events --event anchor.)."""
    from ..agents import roles
    from ..agents.anchor import Anchor
    from ..agents.sessions import join
    from ..coord import registry

    cli.exit_on_sigterm()
    repo = mesh.home.repository()
    anchor = Anchor(mesh.home, mesh.broker(blocking=True), roles.load(mesh.home), repo.root,
                    gate=gate, max_handbacks=max_handbacks, respawn=not no_respawn)
    registered = False
    if not once:
        join(mesh.home, LOOP_ID, LOOP_ID, os.getpid(), phase="following")
        registered = True
    handled = 0
    try:
        while True:
            handled += anchor.step(None if once else int(interval * 1000), everything=once)
            if once:
                break
            registry.heartbeat(mesh.home, LOOP_ID, phase=f"following ({handled} results)")
            time.sleep(0)  # a signal between steps lands here
    finally:
        if registered:
            registry.unregister(mesh.home, LOOP_ID)
    mesh.emit({"ts": clock.iso(), "kind": "anchor", "handled": handled},
              f"handled {handled} result(s)")
