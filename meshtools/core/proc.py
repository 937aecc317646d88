"""Process liveness that survives pid reuse: a pid plus its start time names one process."""

import os

_HOST = os.uname().nodename


def hostname() -> str:
    return _HOST


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such pid."""
    try:
        state, _, _, started = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return _psutil_start_time(pid)
    if state == b"Z":  # a zombie has exited; only its parent has not reaped it
        return None
    return started


def _stat(pid) -> tuple[bytes, int, int, int]:
    """State, parent pid, session id and start time from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _psutil_start_time(pid: int) -> int | None:
    import psutil  # only where /proc is missing (macOS, BSD)

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return int(proc.create_time() * 100)
    except psutil.Error:
        return None


if not os.path.isdir("/proc/self"):
    start_time = _psutil_start_time  # noqa: F811


def is_alive(pid: int, started: int | None = None, host: str | None = None) -> bool | None:
    """True/False for a process on this host; None when it lives on another host (unknown)."""
    if host is not None and host != _HOST:
        return None
    if not isinstance(pid, int) or pid <= 0:
        return False
    actual = start_time(pid)
    if actual is None:
        return False
    return started is None or actual == started


def ancestors(pid: int | None = None) -> list[tuple[int, int | None]]:
    """(pid, start time) of this process (or pid) and each of its ancestors, nearest
    first: the processes whose lives this one is part of (a lock anchored at any of them is
    held on behalf of this process)."""
    pid = os.getpid() if pid is None else pid
    if not os.path.isdir("/proc/self"):
        return _psutil_ancestors(pid)
    found = []
    while pid > 0:
        try:
            _, parent, _, started = _stat(pid)
        except (OSError, ValueError, IndexError):
            break
        found.append((pid, started))
        pid = parent
    return found


def _psutil_ancestors(pid: int) -> list[tuple[int, int | None]]:
    import psutil  # only where /proc is missing (macOS, BSD)

    try:
        chain = [psutil.Process(pid), *psutil.Process(pid).parents()]
    except psutil.Error:
        return [(pid, _psutil_start_time(pid))]
    return [(p.pid, _psutil_start_time(p.pid)) for p in chain]


def identity(pid: int | None = None) -> dict:
    """What a record needs to recognise this process later: pid, its start time, host."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "pid_start": start_time(pid), "host": _HOST}


PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 1, 36, 37


def _prctl():
    """Linux's prctl(2), or None where there is none (macOS, BSD)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent():
    """A preexec function asking Linux to SIGTERM the child when this process dies (even by
    kill -9), so nothing it started runs on unwatched; None where prctl is unavailable.
    (preexec_fn rules out vfork: keep it for long-lived children, not hot paths.)"""
    prctl = _prctl()
    if prctl is None:
        return None
    import signal

    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def parent_death_signal(signum: int) -> bool:
    """Ask Linux to send this process signum when its parent (the thread that started it)
    dies, even by kill -9; False where prctl is unavailable."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def set_subreaper(on: bool) -> bool | None:
    """Make orphans below this process its children rather than init's, so that a daemon
    that left its parent's process group (setsid, a double fork) can still be found and
    stopped. Returns the previous setting; None where prctl is unavailable."""
    prctl = _prctl()
    if prctl is None:
        return None
    import ctypes

    previous = ctypes.c_int(0)
    prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
    prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    return bool(previous.value)


def session_members_below(session: int) -> list[tuple[int, int]]:
    """(pid, start time) of each live process below this one that belongs to
    `session`, from one pass over /proc (no psutil: its import would stay in a long-lived
    supervisor for good). A process that started a session of its own has left on purpose
    (a daemon: the mesh's Redis, a tmux server, a detached peer) and is not listed, nor is
    anything below it."""
    if not os.path.isdir("/proc/self"):
        return _psutil_session_members_below(session)
    return _below(lambda sid: sid == session)


# The mark of a process the mesh started to outlive its starter (its own redis-server, a
# detached peer's supervisor), so that a task that started one does not take it down.
DAEMON_ENV = "MESH_DAEMON"


def as_daemon(env: dict | None = None) -> dict:
    """An environment that marks the process started with it as one of the mesh's daemons."""
    return {**(os.environ if env is None else env), DAEMON_ENV: "1"}


def is_mesh_daemon(pid: int) -> bool:
    """Whether pid was started as one of the mesh's daemons (its initial environment)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{DAEMON_ENV}=1".encode() in f.read().split(b"\0")
    except OSError:
        return False


def descendants(spare=None, root: int | None = None) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below this one (or root), whatever its
    session: for a process that answers for all it started (the task guard), or for all a
    process it stops started (meshctl down). A process for which spare(pid) is true is left
    out, and all below it."""
    if not os.path.isdir("/proc/self"):
        return _psutil_session_members_below(None, root)
    return _below(lambda sid: True, spare, root)


def _below(keep, spare=None, root: int | None = None) -> list[tuple[int, int]]:
    """The live processes below this one (or root) whose session id passes keep(sid), and
    below them (but for those spare(pid) leaves out, with theirs)."""
    below: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, parent, sid, started = _stat(entry)
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            if state != b"Z" and keep(sid):
                below.setdefault(parent, []).append((int(entry), started))
    found, todo = [], [os.getpid() if root is None else root]
    while todo:
        for child in below.get(todo.pop(), ()):
            if spare is None or not spare(child[0]):
                found.append(child)
                todo.append(child[0])
    return found


def _psutil_session_members_below(session: int | None,
                                  root: int | None = None) -> list[tuple[int, int]]:
    import psutil  # only where /proc is missing (macOS, BSD)

    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            if session is None or os.getsid(child.pid) == session:
                found.append((child.pid, _psutil_start_time(child.pid)))
        except OSError:
            pass
    return found


def exited(pid: int) -> bool:
    """Whether this process's child pid has exited, without reaping it (its Popen still
    reads the status); True once it has been reaped."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def signal_all(processes: list[tuple[int, int]], signum: int) -> None:
    """Send signum to each (pid, start time) that still names the same process."""
    for pid, started in processes:
        if start_time(pid) == started:
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


def guarded(argv: list[str], grace: float) -> list[str]:
    """argv run under the task guard (meshtools/core/guard.py), on behalf of this process:
    no process of the run outlives it or this process; a SIGTERM to the run's group gives
    it grace seconds, then kills all of it."""
    import sys

    guard = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.py")
    return [sys.executable, "-I", "-S", guard, f"{grace:g}", str(os.getpid()), *argv]


def meshtools_command(name: str) -> str:
    """The absolute path of a meshtools command from this very install (beside the running
    interpreter), else the one on PATH, else the bare name. Spawned agents and hooks run
    with whatever PATH they get, so they are given a path, of matching version."""
    import shutil
    import sys

    sibling = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(sibling, os.X_OK):
        return sibling
    found = shutil.which(name)
    return os.path.abspath(found) if found else name
