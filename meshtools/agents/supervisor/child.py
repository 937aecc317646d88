"""The processes of a supervisor's runs, and never one left behind.

Each run's child leads a session and process group of its own, and the supervisor is a
subreaper, so that an orphan of the run is re-parented here: every process of the run's
session is stopped when the run ends, and none outlives the supervisor. A process that
starts a session of its own is a daemon by its own choice (the mesh's Redis on first need, a
tmux server, a peer started with mesh-spawn --detach) and is left alone.
"""

import os
import signal

from ...core import proc
from .policy import exit_status


class Runs:
    """The latest run's child (a Popen) and the session it leads. Whether its group may
    still be signalled is the supervisor's state (CHILD_STATES), passed in as `group`."""

    def __init__(self):
        self.child = None
        self._session: int | None = None  # the latest run's session id (its child's pid)

    def start(self, argv: list[str], env: dict) -> int:
        """Start a run in a session and group of its own; its pid. OSError if it cannot."""
        import subprocess

        self.child = None
        self.child = subprocess.Popen(argv, env=env, start_new_session=True,
                                      preexec_fn=proc.die_with_parent())
        self._session = self.child.pid
        return self.child.pid

    def reap_if_exited(self) -> int | None:
        """If the child has exited, kill what is left of its group, then reap it; its exit
        status. The zombie keeps its pid, so the group id cannot be reused by a stranger
        until the reap."""
        pid = self.child.pid
        if hasattr(os, "waitid"):
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    return None
            except ChildProcessError:
                pass
        elif self.child.poll() is None:
            return None
        self.signal(signal.SIGKILL, group=True)
        return exit_status(self.child.wait())

    def signal(self, signum: int, group: bool) -> None:
        """signum to the child's process group (if `group`: not reaped yet) and to every
        other process of its session below this one: one that left the group (a job-control
        shell, setpgid), even once its parent is gone (re-parented here: this process is a
        subreaper), is stopped with the rest. One that started a session of its own is a
        daemon, and is left alone. Each process gets it once: a queue worker takes a second
        SIGTERM as "hand the task back", where one stop means "finish it first"."""
        if group:
            try:
                os.killpg(self.child.pid, signum)  # start_new_session: pgid = its pid
            except (ProcessLookupError, PermissionError):
                pass
        if self._session is not None:
            members = proc.session_members_below(self._session)
            if group:  # the group's members have had it
                members = [m for m in members if _group_of(m[0]) != self.child.pid]
            proc.signal_all(members, signum)

    def reap_strays(self) -> None:
        """Reap orphans that were re-parented here and have exited; the child itself is left
        to reap_if_exited."""
        if not hasattr(os, "waitid"):
            return
        child = self.child.pid if self.child and self.child.returncode is None else None
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == child:
                return
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass

    def end(self, group: bool) -> None:
        """Whatever happened: SIGKILL to all that is left, the child and the strays reaped."""
        self.signal(signal.SIGKILL, group)
        if self.child is not None and self.child.returncode is None:
            self.child.wait()
        self.reap_strays()


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:  # gone meanwhile
        return None
