"""Starting a role's agent under mesh-supervise, as mesh-spawn and meshctl init both do: the
command lines (the supervisor's, its child's, the one that starts it again), the agent
check, the two ways to start it in the background (detached, or in a tmux window), waiting
until its session is registered, and the spawn record the anchor respawns it from."""

import os
import shlex
import shutil
import subprocess
import time

from ..core import clock, config, errors, events, proc
from . import spawns

READY_TIMEOUT = 30.0
RERUN_DELAY = config.default("supervisor", "rerun_delay")  # a persistent agent's pause
TASK_GRACE = 3600.0  # how long a stopping queue worker may finish a task with no timeout
TMUX_SESSION = "meshtools"


def child_argv(role, workdir: str, queue: bool, agent: str) -> list[str]:
    if queue:
        return [proc.meshtools_command("queue-drain"), "--queue", role.queue,
                "--role", role.name, "--agent", agent, "--workdir", workdir]
    return [proc.meshtools_command("mesh-agent"), role.name, "--workdir", workdir]


def anchor_argv(agent: str) -> list[str]:
    """The anchor session's child: the anchor's loop, which runs the anchor's queue worker
    as its own child (mesh-anchor --drain). The roles' standing prompts are for an agent:
    with the shell one they would only fail as commands, so none are enqueued."""
    argv = [proc.meshtools_command("mesh-anchor"), "--drain", "--agent", agent]
    return argv + ["--no-schedule"] if agent == "shell" else argv


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


def respawn_argv(role: str, session: str, mode: str, queue: bool, agent: str,
                 root: str | None, tmux_session: str | None = None) -> list[str]:
    """The mesh-spawn command that starts this session again the same way (the anchor runs
    it when the session dies), in the same tmux session if it ran in one."""
    argv = [proc.meshtools_command("mesh-spawn"), role, "--id", session, f"--{mode}"]
    if mode == "tmux" and tmux_session:
        argv += ["--tmux-session", tmux_session]
    if queue:
        argv += ["--queue", "--agent", agent]
    if root:
        argv += ["--root", os.path.abspath(root)]
    return argv


def check_agent(home, role, agent: str) -> None:
    """A missing agent CLI is exit 69 now, not a crash loop under the supervisor later."""
    from ..executors.choose import make_executor

    make_executor(agent, home=home, role=role).check()


def spawn_env(home, redis_url: str | None = None, namespace: str | None = None) -> dict:
    """The environment of a spawned supervisor: this mesh (and its Redis, when one was
    named on the command line), and no session: the supervisor sets the spawned one's."""
    env = dict(os.environ, MESH_HOME=home.path)
    env.pop("MESH_SESSION", None)
    if redis_url:
        env["MESH_REDIS_URL"] = redis_url
    if namespace:
        env["MESH_NAMESPACE"] = namespace
    return env


def detach(home, argv: list[str], env: dict, role: str, cwd: str):
    """Start argv in the background, in a session of its own, its output in a log under
    spawns/: (the Popen, the log's path)."""
    folder = home.ensure(home.spawns)
    log = os.path.join(folder, f"{role}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        child = subprocess.Popen(argv, env=proc.as_daemon(env), stdin=subprocess.DEVNULL,
                                 stdout=fd, stderr=fd, start_new_session=True, cwd=cwd)
    finally:
        os.close(fd)
    return child, log


def tmux(argv: list[str], env: dict, name: str, cwd: str, session: str | None = None) -> int:
    """argv in a new tmux window called name: in the tmux session `session` (made if need
    be); without one, in the current tmux session, else in the detached session
    "meshtools". The window's pid (argv is exec'ed there)."""
    if not shutil.which("tmux"):
        raise errors.Unavailable("tmux: command not found (use --detach instead)")
    command = "exec " + shlex.join(argv)
    forwarded = ["-e", f"MESH_HOME={env['MESH_HOME']}", "-c", cwd]
    for var in ("MESH_REDIS_URL", "MESH_NAMESPACE"):
        if env.get(var):
            forwarded[:0] = ["-e", f"{var}={env[var]}"]
    target = session or TMUX_SESSION
    if session is None and env.get("TMUX"):
        tmux_argv = ["tmux", "new-window", "-d", *forwarded, "-n", name]
    elif tmux_has_session(target, env):
        tmux_argv = ["tmux", "new-window", "-d", *forwarded, "-t", f"{target}:", "-n", name]
    else:
        tmux_argv = ["tmux", "new-session", "-d", *forwarded, "-s", target, "-n", name]
    done = subprocess.run([*tmux_argv, "-P", "-F", "#{pane_pid}", command], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise errors.Unavailable(f"tmux: {done.stderr.strip() or 'failed'}")
    return int(done.stdout.strip())


def tmux_has_session(name: str, env: dict) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", f"={name}"], env=env,
                          capture_output=True).returncode == 0


def wait_registered(home, pid: int, log: str | None) -> dict:
    """The session the supervisor (pid) registered; an error if it dies or never does."""
    from ..coord import registry

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for record in registry.all_sessions(home):
            if record.get("pid") == pid:
                return record
        if proc.is_alive(pid) is False or reaped(pid):
            raise errors.Unavailable(f"the agent's supervisor (pid {pid}) exited before it "
                                     f"registered{tail(log)}")
        time.sleep(0.02)
    raise errors.Busy(f"the agent's supervisor (pid {pid}) did not register within "
                      f"{READY_TIMEOUT:.0f}s{tail(log)}")


def reaped(pid: int) -> bool:
    """Reap our own detached child if it already exited (so it is not a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return False


def tail(log: str | None) -> str:
    """The log's last line, as the end of an error message."""
    if not log:
        return ""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else f" (log: {log})"


def record_spawn(home, session: str, info: dict) -> dict:
    """Keep what was started (spawns/<session>.spawn.json: how to start it again) and say
    so (spawn.spawned). Returns info with the session."""
    info = dict(info, session=session)
    spawns.write(home, session, info)
    events.emit(home, "spawn.spawned", session=session, role=info["role"], pid=info["pid"],
                mode=info["mode"], queue=info["queue"], worktree=info["worktree"])
    return info


def spawn_info(role: str, queue: bool, mode: str, worktree: str, argv: list[str]) -> dict:
    """The start of a spawn record (record_spawn adds the session; callers the pid, log and
    the respawn command)."""
    return {"role": role, "queue": queue, "mode": mode, "worktree": worktree, "argv": argv,
            "spawned": clock.iso()}
