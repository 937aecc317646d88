"""meshctl init: boot the mesh of the repository around the current directory (the logic is
meshtools.mesh.boot's)."""

import click

from .. import cli
from ..core import errors


@cli.command("init")
@click.option("--roles", "roles_spec", metavar="LIST",
              help="Boot only these roles (comma-separated) and the anchor; '-ROLE' leaves "
                   "one out ('builder,-anchor': a builder alone, '-memory': all but memory).")
@click.option("--agent", default="claude", show_default=True, metavar="NAME",
              help="The agent CLI of the whole mesh (claude, shell, or one of config "
                   "[agents]); checked before anything is spawned.")
@click.option("--tmux", is_flag=True,
              help="Lay the mesh out in a tmux session (a window per agent and one for the "
                   "dash) instead of detached processes, and say how to attach.")
@click.option("--restart-fatal", is_flag=True,
              help="Start a FATAL session (its supervisor gave up) again; else it is only "
                   "reported.")
@click.option("--no-agents", is_flag=True,
              help="Only the state directory, config.toml and Redis: start no agent.")
@click.option("--no-redis", is_flag=True,
              help="Only the state directory and config.toml (the mesh's own redis-server "
                   "starts on first need); implies --no-agents.")
@cli.mesh_options(redis=True)
def init(roles_spec, agent, tmux, restart_fatal, no_agents, no_redis, mesh):
    """Cold-boot the mesh of the repository around the current directory: its state
    directory, config.toml, Redis and the consumer groups of every role's queue, a worktree
    per worker role, then every role's agent as a supervised queue worker, detached; the
    anchor is its loop and its queue worker in one session, anchor-1. Idempotent: on a live
    mesh it says what runs and starts only what is missing (a dead session again under its
    id). One line per step on a terminal; JSON lines (kind "step", then "mesh") when piped.
    A session that fails to start is named with its log's last line: exit 69. While
    meshctl down runs it is refused (75)."""
    from ..core import roles
    from ..mesh import boot

    agents = not (no_agents or no_redis)
    known = roles.load(mesh.home)
    selected = boot.select(known, roles_spec)
    if tmux and agents:
        import shutil

        if not shutil.which("tmux"):
            raise errors.Unavailable("tmux: command not found (leave out --tmux to detach)")
    run = boot.Boot(mesh.home, known, selected, agent, mode="tmux" if tmux else "detach",
                    restart_fatal=restart_fatal, redis_url=mesh.redis_url,
                    namespace=mesh.namespace, dash=_dash())
    steps = []
    for record in run.run(redis=not no_redis, agents=agents):
        if record["kind"] == "step":
            steps.append(record)
            if record.get("was") is not None:
                click.echo(f"meshctl init: {record['path']} was {record['was']:04o}, now 0700 "
                           "(mesh state is private)", err=True)
            mesh.emit(record, boot.describe(record))
            continue
        mesh.emit(record, "\n".join(
            [boot.summary(steps, record["seconds"]) if agents else f"mesh ready: {record['home']}",
             f"  repository {record['root']}"]
            + ([f"  redis      {record['redis']}"] if record["redis"] else [])
            + ([f"  attach:    tmux attach -t {record['tmux']}"] if record.get("tmux") else [])))
    if run.failed:
        raise errors.Unavailable("not started: " + "; ".join(
            f"{s['session']} is FATAL (--restart-fatal starts it again)" if s["status"] == "fatal"
            else f"{s['session']} failed: {s['error']}" for s in run.failed))


def _dash() -> list[str]:
    """What the tmux session's dash window runs: `meshctl dash` where it exists, else the
    live event log."""
    from ..core import proc
    from .meshctl import SUBCOMMANDS

    if "dash" in SUBCOMMANDS:
        return [proc.meshtools_command("meshctl"), "dash"]
    return [proc.meshtools_command("mesh-events"), "--follow"]
