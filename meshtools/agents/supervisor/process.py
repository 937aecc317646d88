"""The supervisor: keep one agent process running under a RestartPolicy, stop it cleanly,
and never leave its processes behind. It moves through the states of states.py, and only
through change_state, which records each one (spawns/<key>.json, the session's phase) and
announces it (spawn.<event>).

The processes of its runs are child.py's (Runs): none outlives the supervisor.

A supervisor whose MESH_HOME is deleted or replaced (the mesh is gone: rm -rf of a scratch
mesh) stops its child and exits 78, writing nothing more there: a leftover must not run on
for a mesh that no longer exists, nor recreate its directory.
"""

import contextlib
import errno
import fcntl
import os
import signal
import time
from typing import NamedTuple

from ...core import clock, errors, events, fs, proc
from ...core.ids import validate_name
from . import control, states
from .child import Runs
from .policy import DONE, FATAL, RestartPolicy, decide_restart
from .signals import Signals
from .states import (BACKOFF, CHILD_STATES, EXITED, FINAL_STATES, RESTARTING, RUNNING,
                     STARTING, STOPPED, STOPPING, State)

HOME_GONE = "home_gone"
POLL = 0.2  # how often the control folder is read while a child runs or backs off
HEARTBEAT = 15.0  # at most; and three beats per the registry's stale threshold


class CannotStart(errors.MeshError):
    """The command could not be executed at all (127 not found, 126 not executable)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Outcome(NamedTuple):
    status: str  # "stopped" (signal or control), DONE (exit 0 under on-failure), FATAL,
    # HOME_GONE (MESH_HOME was deleted or replaced)
    code: int  # the exit status to leave with (FATAL: the last child's)
    failures: int = 0


class Supervisor:
    """Run argv under `policy` until stopped or FATAL. Call run() from the main thread: it
    owns SIGTERM/SIGINT/SIGHUP/SIGCHLD while it runs. `report(record)` sees every spawn event
    (the command prints them); `session` gets its phase and heartbeat kept up to date."""

    def __init__(self, home, argv: list[str], policy: RestartPolicy = RestartPolicy(), *,
                 session: str | None = None, grace: float = 10.0,
                 report=None, starting_fd: int | None = None):
        if not argv:
            raise errors.UsageError("no command to supervise")
        self.home, self.argv, self.policy, self.grace = home, list(argv), policy.check(), grace
        self.session = session
        self.key = validate_name(session or f"pid-{os.getpid()}", "spawn key")
        self.report = report or (lambda record: None)
        self.state: State = STARTING
        self._why: dict = {}  # the fields of the change into self.state
        self._deadline: float | None = None  # BACKOFF: restart; RESTARTING, STOPPING: SIGKILL
        self._n = 0  # consecutive rapid failures so far (the policy's count)
        self.spawn_id: str | None = None
        self._runs = Runs()
        self._started = self._started_wall = 0.0
        self._signals = Signals()
        self._beat_at = 0.0
        self._beat_every = HEARTBEAT
        self._state_path = control.state_path(home, self.key)
        self._control_dir = control.control_dir(home, self.key)
        self._lock_fd = None
        self._was_subreaper: bool | None = None
        self._home_id: tuple[int, int] | None = None  # MESH_HOME's (st_dev, st_ino) at start
        self._home_gone = False
        self._stopping_for_home = False  # the stop a gone MESH_HOME calls for was asked for
        self._disk_full: set[str] = set()  # what could not be written (said once)
        # core.lifecycle's hold on meshctl down, let go once the first state is written
        self._starting_fd = starting_fd

    # public ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._claim()
        self._home_id = _dir_identity(self.home.path)
        self._was_subreaper = proc.set_subreaper(True)
        self._signals.install()
        try:
            return self._loop()
        finally:
            try:
                self._runs.end(group=self.state in CHILD_STATES)  # no orphans
            finally:
                self._started_up()
                self._signals.uninstall()
                if self._was_subreaper is False:
                    proc.set_subreaper(False)
                self._release()

    def change_state(self, new: State, **why) -> None:
        """The one way to move: refuse a change the table does not list (a bug), then record
        the new state and announce it. `why` are the fields of its event."""
        old = self.state
        self.state, self._why = states.check(old, new), why
        wait = (self.grace if new in (RESTARTING, STOPPING)
                else why["delay"] if new is BACKOFF else None)
        self._deadline = None if wait is None else time.monotonic() + wait
        if new in states.RECORDED:
            self._write_state(states.RECORDED[new])
        phase = states.phase(new, why)
        if phase is not None:  # "running" never hides what the new child already said;
            # after its child's exit the session runs no task (the queue gives it back)
            self._beat(phase, unless_newer_than=self._started_wall if new is RUNNING else None,
                       no_task=new in (BACKOFF, states.FATAL))
        name = states.event(old, new)
        if name is not None:
            self._event(name, **why)

    # the loop: one step per state --------------------------------------------------------

    def _loop(self) -> Outcome:
        while self.state not in FINAL_STATES:
            if self.state is STARTING:
                self._start()
            elif self.state is BACKOFF:
                self._backoff()
            else:
                self._watch()
        why = self._why
        if self.state is states.FATAL:
            return Outcome(FATAL, why["code"], why["failures"])
        return Outcome(DONE if why["reason"] == "exited" else why["reason"], why["code"])

    def _start(self) -> None:
        """STARTING: start the child in its own session and group (RUNNING), or, if it
        cannot be, take that as its exit (126, 127)."""
        first = self.spawn_id is None
        self.spawn_id = os.urandom(6).hex()
        env = dict(os.environ, MESH_SPAWN_ID=self.spawn_id, MESH_SPAWN_KEY=self.key,
                   MESH_HOME=self.home.path)
        if self.session:
            env["MESH_SESSION"] = self.session
        self._started, self._started_wall = time.monotonic(), time.time()
        try:
            pid = self._runs.start(self.argv, env)
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126
            if first:  # the command itself is wrong: retrying cannot help
                why = "command not found" if code == 127 else e.strerror or str(e)
                raise CannotStart(f"{self.argv[0]}: {why}", code) from None
            return self._exited(code)
        self.change_state(RUNNING, session=self.session, spawn=self.spawn_id, pid=pid,
                          argv0=self.argv[0], n=self._n)
        self._started_up()  # recorded: meshctl down finds it from here on

    def _started_up(self) -> None:
        """Let meshctl down go ahead (core.lifecycle): this supervisor is in its records."""
        if self._starting_fd is not None:
            os.close(self._starting_fd)
            self._starting_fd = None

    def _watch(self) -> None:
        """RUNNING, RESTARTING, STOPPING: wait for the child to exit, obeying signals and
        controls, and SIGKILL its group once the grace is over."""
        while self.state in CHILD_STATES:
            code = self._runs.reap_if_exited()
            if code is not None:
                return self._exited(code)
            self._tick()
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._signal_tree(signal.SIGKILL)
                self._deadline = None  # once
            self._signals.pause(POLL)

    def _exited(self, code: int) -> None:
        """EXITED, then what follows from the state it ended in, else from the policy."""
        was, why = self.state, self._why
        uptime = time.monotonic() - self._started
        self.change_state(EXITED, spawn=self.spawn_id, code=code, uptime=round(uptime, 3))
        if was is STOPPING:
            return self._stopped(code, why["signal"])
        if was is RESTARTING:
            self._n = 0
            return self.change_state(STARTING, spawn=self.spawn_id, delay=0.0, n=0,
                                     reason="control")
        decision = decide_restart(self.policy, self._n, uptime, code)
        if decision.action == DONE:
            return self._stopped(code, reason="exited")
        self._n = decision.n
        if decision.action == FATAL:
            return self.change_state(states.FATAL, spawn=self.spawn_id, failures=decision.n,
                                     code=code)
        self.change_state(BACKOFF, spawn=self.spawn_id, delay=round(decision.delay, 6),
                          n=self._n, reason="exited",  # rerun: a finished run, no failure
                          rerun=code == 0 and self.policy.rerun_delay is not None)

    def _backoff(self) -> None:
        """BACKOFF: sleep out the delay, then STARTING; a stop or a restart request (in the
        tick) ends it sooner."""
        while self.state is BACKOFF:
            self._tick()
            if self.state is not BACKOFF:
                return
            left = self._deadline - time.monotonic()
            if left <= 0:
                self.change_state(STARTING)
            else:
                self._signals.pause(min(POLL, left))

    def _tick(self) -> None:
        """One round of housekeeping: pending signals, MESH_HOME still there, control
        requests, the heartbeat."""
        while self._signals.pending:
            self._ask_stop(self._signals.pending.pop(0))
        # whoever noticed first (a write looks too), the stop is asked for once, here
        if self._home_is_gone() and not self._stopping_for_home:
            self._stopping_for_home = True
            self._ask_stop(signal.SIGTERM)
        self._runs.reap_strays()
        self._poll_controls()
        if self.session and time.monotonic() >= self._beat_at:
            self._beat(None)

    def _ask_stop(self, signum: int) -> None:
        """A stop: passed on to a running child (STOPPING); with none, STOPPED at once."""
        if self.state in (RUNNING, RESTARTING):
            self._signal_tree(signum)
            self.change_state(STOPPING, signal=signum)
        elif self.state is STOPPING:
            self._signal_tree(signum)  # passed on too; the first one stays the reason
        elif self.state in (STARTING, BACKOFF):
            self._stopped(128 + signum, signum)

    def _ask_restart(self) -> None:
        """A control's restart: SIGTERM to a running child (RESTARTING); during a backoff,
        start at once, as a fresh start."""
        if self.state in (RUNNING, RESTARTING):
            self._signal_tree(signal.SIGTERM)
            self.change_state(RESTARTING)
        elif self.state is BACKOFF:
            self._n = 0
            self.change_state(STARTING)

    def _stopped(self, code: int, signum: int | None = None, reason: str = "stopped") -> None:
        self.change_state(STOPPED, spawn=self.spawn_id, code=code,
                          reason=HOME_GONE if self._home_gone else reason,
                          signal=signal.Signals(signum).name if signum else None)

    def _signal_tree(self, signum: int) -> None:
        """signum to the run's processes; to its group while it has one (a CHILD_STATE)."""
        self._runs.signal(signum, group=self.state in CHILD_STATES)

    # control requests (the read side) ----------------------------------------------------

    def _poll_controls(self) -> None:
        for message in control.take(self._control_dir):
            why = control.refusal(message, self.spawn_id,
                                  stopping=self.state in (STOPPING, STOPPED))
            if why is not None:
                self._event("control_ignored", control=message.get("control"),
                            spawn=message.get("spawn"), current=self.spawn_id, reason=why)
            elif message["control"] == control.STOP:
                self._ask_stop(signal.SIGTERM)
            else:
                self._ask_restart()

    # state: the key's lock, the state file, the registry, events -------------------------

    def _claim(self) -> None:
        """One supervisor per key: an flock held for life (the kernel drops it on death)."""
        path = os.path.join(control.spawn_dir(self.home), self.key + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, fs.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.Busy(f"another supervisor already runs {self.key}") from None
        self._lock_fd = fd
        fs.ensure_dir(self._control_dir)
        if self.session:
            from ...coord import registry

            self._beat_every = min(HEARTBEAT, registry.thresholds(self.home)[0] / 3)

    def _release(self) -> None:
        import shutil

        for path in () if self._home_gone else (self._state_path, self._control_dir):
            try:
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
            except FileNotFoundError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write_state(self, state: str) -> None:
        if self._home_is_gone():
            return
        ident, child = proc.identity(), self._runs.child
        record = {"ts": clock.iso(), "kind": "spawn", "key": self.key, "session": self.session,
                  "supervisor_pid": ident["pid"], "supervisor_start": ident["pid_start"],
                  "host": ident["host"], "child_pid": child.pid if child else None,
                  "pgid": child.pid if self.state in CHILD_STATES else None,
                  "spawn": self.spawn_id, "argv": self.argv,
                  "started": clock.iso(self._started_wall), "n": self._n, "state": state}
        self._despite_full_disk("its state", fs.atomic_write_json, self._state_path,
                                record)

    def _home_is_gone(self) -> bool:
        """Whether MESH_HOME was deleted or replaced: asked before every write there too, as
        a write would make the directory again (found at once, not at the next tick)."""
        if (not self._home_gone and self._home_id is not None
                and _dir_identity(self.home.path) != self._home_id):
            self._home_gone = True
        return self._home_gone

    def _beat(self, phase: str | None, unless_newer_than: float | None = None,
              no_task: bool = False) -> None:
        """Heartbeat the session (and set its phase); the registry is best-effort: a session
        removed under us must not take the agent down."""
        if not self.session or self._home_is_gone():
            return
        self._beat_at = time.monotonic() + self._beat_every
        from ...coord.registry import KEEP
        from ...coord.sessions import beat

        try:
            beat(self.home, self.session, phase, task=None if no_task else KEEP,
                 unless_newer_than=unless_newer_than)
        except (errors.MeshError, OSError):
            return

    def _event(self, name: str, **fields) -> None:
        if self._home_is_gone():
            record = events.make(f"spawn.{name}", key=self.key, **fields)
        else:  # and if it goes between that look and this write, it stays gone
            record = events.emit(self.home, f"spawn.{name}", make_home=False, key=self.key,
                                 **fields)
        self._despite_full_disk("its records", self.report,
                                dict(record, kind="spawn", event=name))

    def _despite_full_disk(self, what: str, write, *args) -> None:
        """One write of the supervisor's own (its state file, its records): a full disk
        must not take down the agent it keeps running. Say so once on stderr (if even that
        can be written) and carry on; the next write of `what` that succeeds ends it."""
        try:
            write(*args)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if what not in self._disk_full:
                self._disk_full.add(what)
                with contextlib.suppress(OSError):  # stderr may be on the same disk
                    _write_line(2, f"mesh-supervise: cannot write {what} ({e.strerror}); "
                                   "carrying on")
        else:
            self._disk_full.discard(what)


def _dir_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a directory, None once it is gone: a replaced one differs."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _write_line(fd: int, line: str) -> None:
    """One line in one write(2), unbuffered: on a full disk the line is lost and says so
    (OSError), and nothing is left in a buffer to fail again at exit."""
    os.write(fd, (line + "\n").encode())
