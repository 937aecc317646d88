"""mesh-spawn: start a role's agent in its worktree, under the supervisor.

    mesh-spawn ROLE                    a persistent agent (the standing prompt, re-run on exit)
    mesh-spawn ROLE --queue            a queue-drain worker running each task through the agent
    ... --detach                       in the background: pid and log under MESH_HOME/spawns/
    ... --tmux                         in a tmux window (a new session "meshtools" outside tmux)

In the foreground mesh-spawn becomes the supervisor (exec), so ^C and SIGTERM reach it.
"""

import os
import shlex
import shutil
import subprocess
import sys
import time

import click

from .. import cli, complete
from ..core import clock, config, errors, events, proc

READY_TIMEOUT = 30.0
RERUN_DELAY = config.default("supervisor", "rerun_delay")  # a persistent agent's pause
TASK_GRACE = 3600.0  # how long a stopping queue worker may finish a task with no timeout
TMUX_SESSION = "meshtools"


def child_argv(role, workdir: str, queue: bool, agent: str) -> list[str]:
    if queue:
        return [proc.meshtools_command("queue-drain"), "--queue", role.queue,
                "--role", role.name, "--agent", agent, "--workdir", workdir]
    return [proc.meshtools_command("mesh-agent"), role.name, "--workdir", workdir]


def supervisor_argv(role, session: str | None, child: list[str], settings,
                    persistent: bool) -> list[str]:
    """mesh-supervise with the mesh's [supervisor] settings (base, cap, min_uptime,
    max_failures, grace, rerun_delay) from config.toml (settings: config.of(home)); a
    value mesh-supervise refuses names its option. A persistent agent re-runs its
    standing prompt after each clean exit; a queue worker only exits to stop or crash, and
    on a stop it finishes its task first, so its grace is the role's task timeout (a second
    SIGTERM hands the task back at once)."""
    settings = dict(settings.section("supervisor").items())
    if persistent:
        settings.setdefault("rerun_delay", RERUN_DELAY)
    else:
        settings.pop("rerun_delay", None)
        settings.setdefault("grace", (role.timeout or TASK_GRACE) + 30)
    argv = [proc.meshtools_command("mesh-supervise"), "--role", role.name]
    if session:
        argv += ["--session", session]
    for key, value in sorted(settings.items()):
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + ["--", *child]


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
@cli.mesh_options()
def mesh_spawn(role, queue, session_id, agent, root, detach, tmux, mesh):
    """Register a session for ROLE, ensure its worktree and run its agent under
    mesh-supervise. With --detach or --tmux, prints the session record once the agent is
    registered (JSON lines when piped) and exits."""
    from ..agents import roles, spawns
    from ..landing import worktree
    from ..core.ids import validate_name

    from ..coord import registry

    cli.exclusive(("--detach", detach), ("--tmux", tmux))
    mode = "detach" if detach else "tmux" if tmux else None
    repository = mesh.home.repository()  # no repository: say so before anything else
    role_def = roles.get(mesh.home, role)
    if session_id is not None:
        registry.check_free(mesh.home, validate_name(session_id, "session id"))
    registry.check_limit(mesh.home, role_def.name, session_id, role_def.concurrency)
    _check_agent(mesh.home, role_def, agent if queue else "claude")
    tree = worktree.ensure(mesh.home, repository.root, role_def.name, root)
    argv = supervisor_argv(role_def, session_id,
                           child_argv(role_def, tree["path"], queue, agent), config.of(mesh.home),
                           persistent=not queue)
    env = dict(os.environ, MESH_HOME=mesh.home.path)
    env.pop("MESH_SESSION", None)  # the supervisor sets the spawned session's own
    info = {"role": role_def.name, "queue": queue, "mode": mode or "foreground",
            "worktree": tree["path"], "argv": argv, "spawned": clock.iso()}
    if mode is None:
        sys.stdout.flush()
        os.chdir(tree["path"])  # the session's worktree and branch, in the registry
        os.execvpe(argv[0], argv, env)
    if mode == "detach":
        pid, log = _detach(mesh.home, argv, env, role_def.name, tree["path"])
        info["log"] = log
    else:
        pid = _tmux(argv, env, session_id or role_def.name, tree["path"])
    record = _wait_registered(mesh.home, pid, info.get("log"))
    info.update(session=record["id"], pid=pid,
                respawn=respawn_argv(role_def.name, record["id"], mode, queue, agent, root))
    spawns.write(mesh.home, record["id"], info)
    events.emit(mesh.home, "spawn.spawned", session=record["id"], role=role_def.name,
                pid=pid, mode=info["mode"], queue=queue, worktree=tree["path"])
    mesh.emit({"ts": clock.iso(), "kind": "spawn", **{k: v for k, v in info.items()
                                                      if k != "spawned"}},
              f"{record['id']} ({role_def.name}) pid {pid} in {tree['path']}"
              + (f", log {info['log']}" if info.get("log") else ""))


def respawn_argv(role: str, session: str, mode: str, queue: bool, agent: str,
                 root: str | None) -> list[str]:
    """The mesh-spawn command that starts this session again the same way (the anchor runs
    it when the session dies)."""
    argv = [proc.meshtools_command("mesh-spawn"), role, "--id", session, f"--{mode}"]
    if queue:
        argv += ["--queue", "--agent", agent]
    if root:
        argv += ["--root", os.path.abspath(root)]
    return argv


def _check_agent(home, role, agent: str) -> None:
    """A missing agent CLI is exit 69 now, not a crash loop under the supervisor later."""
    from ..executors.choose import make_executor

    make_executor(agent, home=home, role=role).check()


def _detach(home, argv: list[str], env: dict, role: str, cwd: str) -> tuple[int, str]:
    folder = home.ensure(home.spawns)
    log = os.path.join(folder, f"{role}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        child = subprocess.Popen(argv, env=proc.as_daemon(env), stdin=subprocess.DEVNULL,
                                 stdout=fd, stderr=fd, start_new_session=True, cwd=cwd)
    finally:
        os.close(fd)
    return child.pid, log


def _tmux(argv: list[str], env: dict, name: str, cwd: str) -> int:
    """A window in the current tmux session, else in the detached session "meshtools"."""
    if not shutil.which("tmux"):
        raise errors.Unavailable("tmux: command not found (use --detach instead)")
    command = "exec " + shlex.join(argv)
    forwarded = ["-e", f"MESH_HOME={env['MESH_HOME']}", "-c", cwd]
    if env.get("TMUX"):
        tmux = ["tmux", "new-window", "-d", *forwarded, "-n", name]
    elif subprocess.run(["tmux", "has-session", "-t", TMUX_SESSION], env=env,
                        capture_output=True).returncode == 0:
        tmux = ["tmux", "new-window", "-d", *forwarded, "-t", f"{TMUX_SESSION}:", "-n", name]
    else:
        tmux = ["tmux", "new-session", "-d", *forwarded, "-s", TMUX_SESSION, "-n", name]
    done = subprocess.run([*tmux, "-P", "-F", "#{pane_pid}", command], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise errors.Unavailable(f"tmux: {done.stderr.strip() or 'failed'}")
    return int(done.stdout.strip())


def _wait_registered(home, pid: int, log: str | None) -> dict:
    """The session the supervisor (pid) registered; an error if it dies or never does."""
    from ..coord import registry

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for record in registry.all_sessions(home):
            if record.get("pid") == pid:
                return record
        if proc.is_alive(pid) is False or _reaped(pid):
            raise errors.Unavailable(f"the agent's supervisor (pid {pid}) exited before it "
                                     f"registered{_tail(log)}")
        time.sleep(0.02)
    raise errors.Busy(f"the agent's supervisor (pid {pid}) did not register within "
                      f"{READY_TIMEOUT:.0f}s{_tail(log)}")


def _reaped(pid: int) -> bool:
    """Reap our own detached child if it already exited (so it is not a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return False


def _tail(log: str | None) -> str:
    if not log:
        return ""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else f" (log: {log})"
