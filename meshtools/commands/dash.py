"""meshctl dash: the live full-screen view of the mesh (meshtools.dash.app)."""

from .. import cli


@cli.command("dash")
@cli.mesh_options(redis=True)
def dash(mesh):
    """The live full-screen view of the mesh: services and the offload chain, queues, the
    pause and the budget, the peer table (state, heartbeat, phase, task, CPU, memory,
    branch, unpicked commits, conflict forecast), GPU sparklines, the event feed and a
    problems line; a peer's detail on Enter; `:` commands (exec, send, kill, restart, pick,
    pause, resume, retry). `?` lists the keys (meshctl(1), KEYS).

    It needs a terminal: piped, with --json or TERM=dumb it refuses with one line and
    exit 64 (mesh-top prints the same snapshot there). NO_COLOR keeps the layout in
    monochrome. The mesh's Redis is never started for it: down is shown.
    """
    from ..dash import app

    app.run(mesh.home, mesh.redis_url, mesh.namespace, mesh.as_json)
