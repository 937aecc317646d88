"""The first process of every task run: it runs the task's command and sees to it that no
process of the task outlives the task, nor the worker that runs it.

    python -I -S guard.py GRACE PARENT_PID CMD [ARGS...]     (see proc.guarded)

- It is a subreaper: a process of the task that left its group or its session (setsid, a
  double fork) is re-parented here, so it can still be found.
- When CMD exits, every process left below the guard is killed and the guard exits as CMD
  did (with its code, or of its signal). A task's escapees are the task's, whatever they
  call themselves: nothing started by a task runs on unwatched.
- SIGTERM (the worker stopping the task on a timeout or an interrupt; it goes to the whole
  process group) is not for the guard: the task gets GRACE seconds to end, then all of it
  is killed.
- The mesh's own daemons are not the task's: a process started with MESH_DAEMON=1 in its
  environment (proc.as_daemon: the mesh's redis-server that a task started on first need,
  a peer that an agent spawned with `mesh-spawn --detach`) is left running, with all below
  it. The task's command itself starts without the mark.
- SIGINT is ignored (a ^C in a terminal is for the command, which gets it as given to the
  guard).
- SIGHUP kills all of it at once. The kernel sends it when the worker dies, even by
  kill -9 (PR_SET_PDEATHSIG), which by itself would only reach this one process.

A separate interpreter (-I -S: nothing but the standard library and meshtools.core.proc),
because a multi-threaded worker cannot safely run Python between fork and exec.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from meshtools.core import proc  # noqa: E402

_STOP = signal.SIGHUP
_DEFAULTS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ")
                  if hasattr(signal, name))  # Python ignores these; the task must not


def task_processes() -> list[tuple[int, int]]:
    return proc.descendants(spare=proc.is_mesh_daemon)


def kill_all(*_) -> None:
    """SIGKILL everything below, again until nothing is left (a fork may race a pass)."""
    for _ in range(100):
        left = task_processes()
        if not left:
            return
        proc.signal_all(left, signal.SIGKILL)


def main(argv: list[str]) -> int:
    grace, parent, command = float(argv[1]), int(argv[2]), argv[3:]
    signal.signal(signal.SIGTERM, lambda *_: signal.setitimer(signal.ITIMER_REAL, grace)
                  if signal.getitimer(signal.ITIMER_REAL)[0] == 0 else None)
    signal.signal(signal.SIGALRM, kill_all)
    hung_up = []  # a SIGHUP before the command had started must still end it

    def hang_up(*_):
        hung_up.append(True)
        kill_all()

    signal.signal(_STOP, hang_up)
    # A ^C in a terminal (file-lock PATH -- CMD runs in the foreground) is for the command:
    # the guard ignores it and waits; the command gets SIGINT as it was given to the guard.
    default_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proc.set_subreaper(True)
    proc.parent_death_signal(_STOP)
    if os.getppid() != parent:  # the worker died before the request took effect
        return 128 + _STOP
    try:
        environ = {k: v for k, v in os.environ.items() if k != proc.DAEMON_ENV}
        child = os.posix_spawnp(command[0], command, environ, setsigmask=(),
                                setsigdef=_DEFAULTS + ((signal.SIGINT,) if default_int else ()))
    except OSError as e:
        print(f"{command[0]}: {e.strerror}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126
    if hung_up or os.getppid() != parent:  # told to stop, or it died, while it started
        kill_all()
    status = None
    while status is None or task_processes():  # then only the mesh's daemons are left
        try:
            pid, waited = os.waitpid(-1, 0 if status is None else os.WNOHANG)
        except ChildProcessError:
            break  # all reaped
        if pid == child:
            status = waited
            kill_all()
        elif pid == 0:  # what was killed is not gone yet
            time.sleep(0.005)
    if os.WIFSIGNALED(status):
        die_of = os.WTERMSIG(status)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(die_of, signal.SIG_DFL)
        os.kill(os.getpid(), die_of)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
