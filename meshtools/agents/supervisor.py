"""Keep one agent process running: restart it with a capped quadratic backoff, give up on a
crash loop, stop it cleanly, and never leave its processes behind.

Policy (see PRIOR-ART "Supervisors and the rapid-fail cap"): a *rapid failure* is an exit
within `min_uptime` of the start, whatever the exit code. n counts consecutive rapid
failures; before each restart the supervisor sleeps min(base*n*n, cap); at
`max_rapid_failures` it goes FATAL; a run that lasted `min_uptime` resets n to 0. There is
no time window: with a growing delay a window may never fill (systemd's trap).

The child runs in a session and process group of its own, and the supervisor is a
subreaper, so that an orphan of the run is re-parented here: every process of the run's
session is stopped when the run ends, and none outlives the supervisor. A process that
starts a session of its own is a daemon by its own choice (the mesh's Redis on first need, a
tmux server, a peer started with mesh-spawn --detach) and is left alone.

Each start gets a fresh spawn id (MESH_SPAWN_ID in the child). Control requests name the
spawn they mean, so a stale `stop` aimed at an agent that has since been restarted can
never kill its successor.

Layout in MESH_HOME: spawns/<key>.json (the supervisor's state, written atomically),
spawns/<key>.control/ (requests, one JSON file each, dropped by atomic rename),
spawns/<key>.lock (flock held by the live supervisor). key = the session id, else pid-<pid>.

A supervisor whose MESH_HOME is deleted or replaced (the mesh is gone: rm -rf of a scratch
mesh) stops its child and exits 78, writing nothing more there: a leftover must not run on
for a mesh that no longer exists, nor recreate its directory.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import select
import signal
import sys
import time
from typing import NamedTuple

from ..core import clock, errors, events, fs, proc
from ..core.ids import validate_name

ALWAYS, ON_FAILURE = "always", "on-failure"
RESTART, FATAL, DONE, HOME_GONE = "restart", "fatal", "done", "home_gone"
STOP, RESTART_CHILD = "stop", "restart"
CONTROLS = (STOP, RESTART_CHILD)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
POLL = 0.2  # how often the control folder is read while a child runs or backs off
HEARTBEAT = 15.0  # at most; and three beats per the registry's stale threshold
_SPAWN_ID = re.compile(r"[0-9a-f]{1,32}")


# --- pure policy -------------------------------------------------------------------------

def backoff_delay(n: int, base: float, cap: float) -> float:
    """Seconds to wait before the restart that follows the n-th consecutive rapid failure."""
    return min(base * n * n, cap)


class RestartPolicy(NamedTuple):
    base: float = 1.0
    cap: float = 60.0
    min_uptime: float = 10.0  # a run shorter than this is a rapid failure
    max_rapid_failures: int = 5  # the n-th consecutive rapid failure is FATAL
    restart: str = ALWAYS  # or ON_FAILURE: an exit 0 ends supervision
    # Under ALWAYS, set for a persistent agent (a single-shot prompt re-run on each exit):
    # an exit 0 is a finished run, not a failure: run again after this many seconds.
    rerun_delay: float | None = None

    def check(self) -> "RestartPolicy":
        """This policy, if it makes sense; else ValueError."""
        if self.restart not in (ALWAYS, ON_FAILURE):
            raise ValueError(f"restart must be {ALWAYS!r} or {ON_FAILURE!r}")
        if self.max_rapid_failures < 1 or min(self.base, self.cap, self.min_uptime,
                                              self.rerun_delay or 0) < 0:
            raise ValueError("negative times or max_rapid_failures < 1")
        return self


class Decision(NamedTuple):
    action: str  # RESTART, FATAL or DONE
    n: int  # consecutive rapid failures after this exit
    delay: float = 0.0  # seconds to sleep before the restart


def decide(policy: RestartPolicy, n: int, uptime: float, exit_code: int) -> Decision:
    """What to do after a child that ran `uptime` seconds exited with `exit_code`, when it
    was the latest of n consecutive rapid failures before it."""
    if exit_code == 0 and policy.restart == ON_FAILURE:
        return Decision(DONE, 0)
    if exit_code == 0 and policy.rerun_delay is not None:
        return Decision(RESTART, 0, policy.rerun_delay)
    n = n + 1 if uptime < policy.min_uptime else 0
    if n >= policy.max_rapid_failures:
        return Decision(FATAL, n)
    return Decision(RESTART, n, backoff_delay(n, policy.base, policy.cap))


def exit_status(returncode: int) -> int:
    """A Popen returncode as a shell reports it: 128+N for death by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


# --- control requests (the write side) -----------------------------------------------------

def spawn_dir(home) -> str:
    return home.ensure("spawns")


def state_path(home, key: str) -> str:
    return home.sub("spawns", validate_name(key, "spawn key") + ".json")


def control_dir(home, key: str) -> str:
    return home.sub("spawns", validate_name(key, "spawn key") + ".control")


def read_state(home, key: str) -> dict | None:
    try:
        return fs.read_json(state_path(home, key))
    except ValueError:
        return None


def request(home, key: str, control: str, spawn_id: str) -> dict:
    """Ask the supervisor of `key` to stop or restart the spawn `spawn_id`. It obeys only if
    that is still its current spawn; otherwise it drops the request (spawn.control_ignored).
    Returns the record of what was sent; `current` says whether it matched when sent."""
    if control not in CONTROLS:
        raise errors.UsageError(f"control must be one of {', '.join(CONTROLS)}")
    if not isinstance(spawn_id, str) or not _SPAWN_ID.fullmatch(spawn_id):
        raise errors.BadInput(f"invalid spawn id {spawn_id!r}: expected lowercase hex")
    state = read_state(home, key)
    if state is None:
        raise errors.BadInput(f"no supervisor for {key} (no {state_path(home, key)})")
    if proc.is_alive(state.get("supervisor_pid"), state.get("supervisor_start"),
                     state.get("host")) is False:
        raise errors.Unavailable(f"the supervisor of {key} (pid {state.get('supervisor_pid')}) "
                                 "is gone")
    message = {"control": control, "spawn": spawn_id, "ts": clock.iso(), "from": os.getpid()}
    folder = fs.ensure_dir(control_dir(home, key))
    fs.atomic_write_json(os.path.join(folder, f"{time.time_ns()}-{fs.unique_suffix()}.json"),
                         message)
    return {"ts": message["ts"], "kind": "control", "key": key, "control": control,
            "spawn": spawn_id, "current": state.get("spawn") == spawn_id,
            "supervisor_pid": state.get("supervisor_pid")}


# --- the supervisor (I/O) ------------------------------------------------------------------

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
                 report=None):
        if not argv:
            raise errors.UsageError("no command to supervise")
        self.home, self.argv, self.policy, self.grace = home, list(argv), policy.check(), grace
        self.session = session
        self.key = validate_name(session or f"pid-{os.getpid()}", "spawn key")
        self.report = report or (lambda record: None)
        self.spawn_id: str | None = None
        self._child = None
        self._pgid: int | None = None
        self._started = self._started_wall = 0.0
        self._signals: list[int] = []
        self._stop_signal: int | None = None  # set once a stop was asked for
        self._restart_asked = False
        self._kill_at: float | None = None  # SIGKILL the group after this (monotonic)
        self._beat_at = 0.0
        self._beat_every = HEARTBEAT
        self._n = 0  # consecutive rapid failures so far
        self._state_path = state_path(home, self.key)
        self._control_dir = control_dir(home, self.key)
        self._wake_r = self._wake_w = None
        self._lock_fd = None
        self._saved: dict = {}
        self._was_subreaper: bool | None = None
        self._session: int | None = None  # the latest run's session id (its child's pid)
        self._home_id: tuple[int, int] | None = None  # MESH_HOME's (st_dev, st_ino) at start
        self._home_gone = False
        self._disk_full: set[str] = set()  # what could not be written (said once)

    # public ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._claim()
        self._home_id = _dir_identity(self.home.path)
        self._install()
        try:
            return self._loop()
        finally:
            try:
                self._signal_tree(signal.SIGKILL)  # whatever happened, no orphans
                if self._child is not None and self._child.returncode is None:
                    self._child.wait()
                self._reap_strays()
            finally:
                self._uninstall()
                self._release()

    # the loop ----------------------------------------------------------------------------

    def _loop(self) -> Outcome:
        first = True
        while True:
            if self._stop_signal is not None:
                return self._stopped(128 + self._stop_signal)
            code = self._start(first)
            if code is None:
                code = self._watch()
            first = False
            uptime = time.monotonic() - self._started
            self._event("exited", spawn=self.spawn_id, code=code, uptime=round(uptime, 3))
            if self._stop_signal is not None:
                return self._stopped(code)
            if self._restart_asked:
                self._restart_asked, self._n = False, 0
                self._event("restart", spawn=self.spawn_id, delay=0.0, n=0, reason="control")
                continue
            decision = decide(self.policy, self._n, uptime, code)
            if decision.action == DONE:
                return self._stopped(code, reason="exited")
            if decision.action == FATAL:
                self._n = decision.n
                self._phase("FATAL", state="FATAL")
                self._event("fatal", spawn=self.spawn_id, failures=decision.n, code=code)
                return Outcome(FATAL, code, decision.n)
            self._n = decision.n
            self._event("restart", spawn=self.spawn_id, delay=round(decision.delay, 6),
                        n=self._n, reason="exited")
            rerun = code == 0 and self.policy.rerun_delay is not None  # a finished run
            self._phase(f"next run in {decision.delay:g}s" if rerun
                        else f"backoff {decision.delay:g}s", state="backoff")
            if self._backoff(decision.delay):
                self._n = 0  # an operator's restart is a fresh start

    def _start(self, first: bool) -> int | None:
        """Start the child in its own process group; an exit status if it could not start."""
        import subprocess

        self.spawn_id = os.urandom(6).hex()
        env = dict(os.environ, MESH_SPAWN_ID=self.spawn_id, MESH_SPAWN_KEY=self.key,
                   MESH_HOME=self.home.path)
        if self.session:
            env["MESH_SESSION"] = self.session
        self._started, self._started_wall = time.monotonic(), time.time()
        try:
            self._child = subprocess.Popen(self.argv, env=env, start_new_session=True,
                                           preexec_fn=proc.die_with_parent())
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126
            self._child = self._pgid = None
            if first:  # the command itself is wrong: retrying cannot help
                why = "command not found" if code == 127 else e.strerror or str(e)
                raise CannotStart(f"{self.argv[0]}: {why}", code) from None
            return code
        # start_new_session: the child leads its own session and group
        self._pgid = self._session = self._child.pid
        self._event("started", session=self.session, spawn=self.spawn_id, pid=self._child.pid,
                    argv0=self.argv[0], n=self._n)
        self._phase("running", state="running")
        return None

    def _watch(self) -> int:
        """Wait for the child to exit, obeying signals and controls; its exit status."""
        while True:
            code = self._reap_if_exited()
            if code is not None:
                return code
            self._tick(running=True)
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._signal_tree(signal.SIGKILL)
                self._kill_at = None
            self._pause(POLL)

    def _backoff(self, delay: float) -> bool:
        """Sleep before a restart; a stop (signal or control) or a restart request ends it.
        True when a restart request cut it short."""
        until = time.monotonic() + delay
        while True:
            self._tick(running=False)
            left = until - time.monotonic()
            if self._stop_signal is not None or self._restart_asked or left <= 0:
                asked, self._restart_asked = self._restart_asked, False
                return asked
            self._pause(min(POLL, left))

    def _tick(self, running: bool) -> None:
        """One round of housekeeping: pending signals, MESH_HOME still there, control
        requests, the heartbeat."""
        while self._signals:
            self._ask_stop(self._signals.pop(0), running)
        if not self._home_gone and _dir_identity(self.home.path) != self._home_id:
            self._home_gone = True
            self._ask_stop(signal.SIGTERM, running)
        self._reap_strays()
        self._poll_controls(running)
        if self.session and time.monotonic() >= self._beat_at:
            self._phase(None)

    def _ask_stop(self, signum: int, running: bool) -> None:
        first = self._stop_signal is None
        self._stop_signal = self._stop_signal or signum
        if running:
            self._signal_tree(signum)
            if first:
                self._kill_at = time.monotonic() + self.grace
                self._write_state("stopping")

    def _ask_restart(self) -> None:
        self._restart_asked = True
        if self._pgid is not None:
            self._signal_tree(signal.SIGTERM)
            self._kill_at = time.monotonic() + self.grace

    def _stopped(self, code: int, reason: str = "stopped") -> Outcome:
        sig = self._stop_signal
        reason = HOME_GONE if self._home_gone else reason
        self._event("stopped", spawn=self.spawn_id, code=code, reason=reason,
                    signal=signal.Signals(sig).name if sig else None)
        return Outcome(DONE if reason == "exited" else reason, code)

    # the child ---------------------------------------------------------------------------

    def _reap_if_exited(self) -> int | None:
        """If the child has exited, kill what is left of its group, then reap it. The zombie
        keeps its pid, so the group id cannot be reused by a stranger until the reap."""
        pid = self._child.pid
        if hasattr(os, "waitid"):
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    return None
            except ChildProcessError:
                pass
        elif self._child.poll() is None:
            return None
        self._signal_tree(signal.SIGKILL)
        code = exit_status(self._child.wait())
        self._pgid, self._kill_at = None, None
        return code

    def _signal_tree(self, signum: int) -> None:
        """signum to the child's process group and to every other process of its session
        below this one: one that left the group (a job-control shell, setpgid), even once
        its parent is gone (re-parented here: this process is a subreaper), is stopped with
        the rest. One that started a session of its own is a daemon, and is left alone."""
        if self._pgid is not None:
            try:
                os.killpg(self._pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        if self._session is not None:
            proc.signal_all(proc.session_members_below(self._session), signum)

    def _reap_strays(self) -> None:
        """Reap orphans that were re-parented here and have exited; the child itself is left
        to _reap_if_exited."""
        if not hasattr(os, "waitid"):
            return
        child = self._child.pid if self._child and self._child.returncode is None else None
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

    # signals -----------------------------------------------------------------------------

    def _install(self) -> None:
        """Signals only queue themselves and wake the loop through a pipe, so that nothing
        happens halfway through a spawn; SIGCHLD wakes it when the child exits."""
        self._was_subreaper = proc.set_subreaper(True)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        for signum in (*FORWARDED, signal.SIGCHLD):
            self._saved[signum] = signal.signal(signum, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # held over the handoff

    def _on_signal(self, signum, _frame) -> None:
        if signum != signal.SIGCHLD:
            self._signals.append(signum)
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    def _pause(self, seconds: float) -> None:
        if self._signals:
            return
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
        if ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass

    def _uninstall(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()
        if self._was_subreaper is False:
            proc.set_subreaper(False)
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None

    # control requests (the read side) ----------------------------------------------------

    def _poll_controls(self, running: bool) -> None:
        folder = self._control_dir
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(folder, name)
            try:
                message = fs.read_json(path) or {}
            except (ValueError, UnicodeDecodeError, IsADirectoryError):
                message = {}
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue  # another reader took it
            control = message.get("control") if isinstance(message, dict) else None
            spawn = message.get("spawn") if isinstance(message, dict) else None
            if control not in CONTROLS or spawn != self.spawn_id or self._stop_signal:
                self._event("control_ignored", control=control, spawn=spawn,
                            current=self.spawn_id,
                            reason="stopping" if self._stop_signal and spawn == self.spawn_id
                            else "stale" if control in CONTROLS else "malformed")
                continue
            if control == STOP:
                self._ask_stop(signal.SIGTERM, running)
            else:
                self._ask_restart()

    # state: the key's lock, the state file, the registry, events -------------------------

    def _claim(self) -> None:
        """One supervisor per key: an flock held for life (the kernel drops it on death)."""
        path = os.path.join(spawn_dir(self.home), self.key + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, fs.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.Busy(f"another supervisor already runs {self.key}") from None
        self._lock_fd = fd
        fs.ensure_dir(self._control_dir)
        if self.session:
            from ..coord import registry

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
        if self._home_gone:
            return
        ident = proc.identity()
        record = {"ts": clock.iso(), "kind": "spawn", "key": self.key, "session": self.session,
                  "supervisor_pid": ident["pid"], "supervisor_start": ident["pid_start"],
                  "host": ident["host"], "child_pid": self._child.pid if self._child else None,
                  "pgid": self._pgid, "spawn": self.spawn_id, "argv": self.argv,
                  "started": clock.iso(self._started_wall), "n": self._n, "state": state}
        self._despite_full_disk("its state", fs.atomic_write_json, self._state_path,
                                record)

    def _phase(self, phase: str | None, state: str | None = None) -> None:
        """Record a state change (and heartbeat the session); the registry is best-effort:
        a session removed under us must not take the agent down."""
        if state is not None:
            self._write_state(state)
        if not self.session or self._home_gone:
            return
        self._beat_at = time.monotonic() + self._beat_every
        from .sessions import beat

        try:
            beat(self.home, self.session, phase)
        except (errors.MeshError, OSError):
            return

    def _event(self, name: str, **fields) -> None:
        if self._home_gone:  # emit() would make the directory again
            record = events.make(f"spawn.{name}", key=self.key, **fields)
        else:
            record = events.emit(self.home, f"spawn.{name}", key=self.key, **fields)
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


# --- the long-lived process ----------------------------------------------------------------

_LEAN_ENTRY = "from meshtools.agents.supervisor import main; main()"


def handoff(prog: str, spec: dict):
    """Become a fresh interpreter that runs only the supervisor: the same pid (so a registry
    record naming it stays true), without the modules the command line needed (click
    alone holds 5 MB) for the hours the supervisor lives. Never returns.

    A stop signal sent meanwhile is held (the mask survives exec) until the supervisor's
    handlers are in place, so it stops the supervisor cleanly instead of killing it."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        # -P: the cwd (an agent's worktree: anyone's repository) never goes on sys.path
        os.execv(sys.executable,
                 [sys.executable, "-P", "-c", _LEAN_ENTRY, prog, json.dumps(spec)])
    finally:  # only reached if exec failed
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def main() -> None:
    """The entry handoff() execs: argv is the command's name and its spec."""
    prog, spec = sys.argv[1], json.loads(sys.argv[2])
    sys.exit(errors.guarded(prog, lambda: run_spec(spec)))


def run_spec(spec: dict) -> int:
    """Supervise as a mesh-supervise command line asked (see commands.supervise); the exit
    status to leave with."""
    from ..core import jsonl
    from ..core.home import MeshHome

    home = MeshHome(spec["home"])
    report = ((lambda record: _write_line(1, jsonl.dumps(record))) if spec["json"]
              else lambda record: _write_line(2, describe(record)))
    outcome = Supervisor(home, spec["argv"], RestartPolicy(**spec["policy"]),
                         session=spec["session"], grace=spec["grace"], report=report).run()
    if outcome.status == FATAL:
        raise errors.Busy(f"gave up: {outcome.failures} rapid failures "
                          f"(last exit {outcome.code})")
    if outcome.status == HOME_GONE:
        from ..queue.server import EmbeddedRedis, stop_orphans

        stop_orphans(EmbeddedRedis(home).dir)  # the gone mesh's Redis is a leftover too
        raise errors.ConfigError(f"MESH_HOME {home.path} was deleted or replaced: stopped "
                                 f"(last exit {outcome.code})")
    if spec["role"]:
        unregister(home, spec["session"])
    return outcome.code


def _write_line(fd: int, line: str) -> None:
    """One line in one write(2), unbuffered: on a full disk the line is lost and says so
    (OSError), and nothing is left in a buffer to fail again at exit."""
    os.write(fd, (line + "\n").encode())


def describe(record: dict) -> str:
    """A spawn record as one line for a person."""
    detail = " ".join(f"{k}={record[k]}" for k in ("spawn", "pid", "n", "code", "uptime",
                                                    "delay", "failures", "reason")
                      if record.get(k) is not None)
    return f"mesh-supervise: {record['event']} {detail}"


def unregister(home, session: str) -> None:
    """End the session this supervisor registered (someone may have removed it already)."""
    from ..coord import registry

    try:
        registry.unregister(home, session)
    except errors.BadInput:
        return
    events.emit(home, "session.unregistered", id=session)
