"""mesh-spawn: start a role's agent in its worktree, under the supervisor.

    mesh-spawn ROLE                    a persistent agent (the standing prompt, re-run on exit)
    mesh-spawn ROLE --queue            a queue-drain worker running each task through the agent
    ... --detach                       in the background: pid and log under MESH_HOME/spawns/
    ... --tmux                         in a tmux window (a new session "meshtools" outside tmux)

In the foreground mesh-spawn becomes the supervisor (exec), so ^C and SIGTERM reach it.
"""

import os
import sys

import click

from .. import cli, complete
from ..agents import launch
from ..core import clock, config, errors, lifecycle


@cli.command("mesh-spawn")
@click.argument("role", shell_complete=complete.roles)
@click.option("--queue", is_flag=True,
              help="Drain the role's queue (tasks:queue:<queue>) instead of re-running its "
                   "standing prompt.")
@click.option("--id", "session_id", metavar="ID",
              help="Session id (default: the first free <role>-<n>; a dead one is taken over).")
@click.option("--agent", default="claude", show_default=True, metavar="NAME",
              help="With --queue: the executor (claude, shell, or one of config [agents]).")
@click.option("--root", metavar="DIR", help="Where worktrees go (default: config "
                                            "[worktrees] root, else beside the repository).")
@click.option("--detach", is_flag=True, help="Run in the background.")
@click.option("--tmux", is_flag=True, help="Run in a tmux window.")
@click.option("--tmux-session", metavar="NAME",
              help="With --tmux: the tmux session of the window, made if need be (default: "
                   "the current one, else \"meshtools\"); meshctl init --tmux gives its own.")
@cli.mesh_options()
def mesh_spawn(role, queue, session_id, agent, root, detach, tmux, tmux_session, mesh):
    """Register a session for ROLE, ensure its worktree and run its agent under
    mesh-supervise. With --detach or --tmux, prints the session record once the agent is
    registered (JSON lines when piped) and exits."""
    from ..core import roles
    from ..landing import worktree
    from ..core.ids import validate_name

    from ..coord import registry

    cli.exclusive(("--detach", detach), ("--tmux", tmux))
    if tmux_session is not None and not tmux:
        raise errors.UsageError("--tmux-session goes with --tmux")
    mode = "detach" if detach else "tmux" if tmux else None
    repository = mesh.home.repository()  # no repository: say so before anything else
    role_def = roles.get(mesh.home, role)
    if session_id is not None:
        registry.check_free(mesh.home, validate_name(session_id, "session id"))
    registry.check_limit(mesh.home, role_def.name, session_id, role_def.concurrency)
    launch.check_agent(mesh.home, role_def, agent if queue else "claude")
    tree = worktree.ensure(mesh.home, repository.root, role_def.name, root)
    argv = launch.supervisor_argv(role_def, session_id,
                                  launch.child_argv(role_def, tree["path"], queue, agent),
                                  config.of(mesh.home), persistent=not queue)
    env = launch.spawn_env(mesh.home)
    info = launch.spawn_info(role_def.name, queue, mode or "foreground", tree["path"], argv)
    if mode is None:
        sys.stdout.flush()
        os.chdir(tree["path"])  # the session's worktree and branch, in the registry
        os.execvpe(argv[0], argv, env)
    with lifecycle.starting(mesh.home):  # none while meshctl down runs
        if mode == "detach":
            child, info["log"] = launch.detach(mesh.home, argv, env, role_def.name,
                                               tree["path"])
            pid = child.pid
        else:
            pid = launch.tmux(argv, env, session_id or role_def.name, tree["path"],
                              session=tmux_session)
        record = launch.wait_registered(mesh.home, pid, info.get("log"))
        info.update(pid=pid, respawn=launch.respawn_argv(role_def.name, record["id"], mode,
                                                         queue, agent, root, tmux_session))
        info = launch.record_spawn(mesh.home, record["id"], info)
    mesh.emit({"ts": clock.iso(), "kind": "spawn", **{k: v for k, v in info.items()
                                                      if k != "spawned"}},
              f"{record['id']} ({role_def.name}) pid {pid} in {tree['path']}"
              + (f", log {info['log']}" if info.get("log") else ""))

