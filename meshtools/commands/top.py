"""mesh-top (meshctl top): the dash's snapshot without the full screen, for cron, pipes
and monitors."""

import time

import click

from .. import cli
from ..core import errors

PANEL_NAMES = ("redis", "peers", "queues", "services", "offload", "gpus", "problems", "events")
SETTLE = 5.0  # seconds a round waits for slow sources (each still bounded by its timeout)


@cli.command("mesh-top")
@click.option("-n", "rounds", type=click.IntRange(min=1), metavar="N",
              help="Print N snapshots (default 1; with --interval: until interrupted).")
@click.option("--interval", type=cli.Seconds(positive=True), metavar="S",
              help="Seconds between snapshots (default 2 with -n).")
@click.option("--panel", "panels", multiple=True, type=click.Choice(PANEL_NAMES),
              help="Only this panel (repeatable); events only when named.")
@cli.mesh_options(redis=True)
def mesh_top(rounds, interval, panels, mesh):
    """The mesh's snapshot as `meshctl dash` collects it: Redis, the peers (state, phase,
    task, CPU, memory, branch, unpicked commits, forecast), queues, dead letters, the pause
    and the budget, services, the offload chain, GPUs and problems.

    On a terminal a few compact lines per panel, as wide as the terminal (the peer table
    drops columns as the dash does); piped or --json, JSON lines, one record per peer
    (kind session), queue, service, offload endpoint, GPU, problem, ... each with ts and
    kind. Once by default; -n N rounds, --interval S apart. The mesh's Redis is never
    started for it: down is shown.
    """
    from ..core import clock, jsonl
    from ..dash import snapshot, top
    from ..dash.collector import Collector

    chosen = panels or top.DEFAULT
    rounds = rounds or (None if interval else 1)
    interval = interval or 2.0
    link = snapshot.Link(mesh.home, mesh.redis_url, mesh.namespace)
    sources, _ = snapshot.sources(mesh.home, link)
    if "gpus" not in chosen:  # NVML costs a start-up; not sampled when not shown
        sources = [s for s in sources if s.name != "gpus"]
    if mesh.as_json:
        errors.exit_on_sigterm()
    with Collector(sources) as collector:
        done = 0
        while True:
            started = time.monotonic()
            found = snapshot.assemble(collector.settled(SETTLE), clock.iso(),
                                      roles=())
            if mesh.as_json:
                for record in top.records(found, chosen):
                    jsonl.write(record)
            else:
                _tables(top, found, chosen, done)
            done += 1
            if rounds is not None and done >= rounds:
                return
            time.sleep(max(0.0, started + interval - time.monotonic()))


def _tables(top, found, chosen, done) -> None:
    import shutil

    if done:
        click.echo()
    click.echo("\n".join(top.lines(found, chosen, shutil.get_terminal_size().columns)))
