"""The process-running executors and their pieces: a task's process in its own session
under the task guard (start, terminate, end_group), its pipes read as they fill (PipeReader,
LineSplitter, Tail, Fan), and the executors built on them (CapturingExecutor, ShellExecutor).
What they give back, the Outcome, and the executor protocol are the queue's
(queue.outcome)."""

import os
import signal
import subprocess
import threading
import time

from ..core import proc
from ..queue.outcome import Outcome

OUTPUT_TAIL = 4000
GRACE = 2.0  # after SIGTERM, a task's processes get this long before SIGKILL
KILL_AFTER = 3.0  # and the guard this long more to end before its group is killed
DRAIN = 0.5  # output still read this long after a task's process exited
POLL = 0.1  # how often a reader looks whether the process exited


class CapturingExecutor:
    """What executors that run one process per task share: the process runs in workdir in
    its own session under the task guard (so a timeout, an interrupt or the worker's death
    ends all of it), stdout and stderr captured together, the last OUTPUT_TAIL characters
    kept, and every line kept in the task's trace (executors.trace) as it comes."""

    name = "agent"

    def __init__(self, home=None, session: str | None = None, role: str | None = None):
        self.home, self.session, self.role = home, session, role
        self._child: subprocess.Popen | None = None

    def check(self) -> None:
        """Raise Unavailable (69) when the executor cannot run at all; nothing to check for
        a shell. (Agent executors look for their CLI.)"""

    def capture(self, task: dict, argv: list[str], workdir: str, timeout: float | None,
                on_start, env: dict | None = None, stdin_data: bytes | None = None,
                details: dict | None = None) -> Outcome:
        """Run argv for task to its end; OSError (cannot start) is the caller's to turn
        into words. The timeout is the task's own process's: whatever it left holding its
        output does not hold the task."""
        from . import trace

        writer = trace.Writer.open(self.home, task, agent=self.name, session=self.session,
                                   role=self.role)
        return trace.traced(writer, lambda: self._capture(
            task, argv, workdir, timeout, on_start, env, stdin_data, details, writer))

    def _capture(self, task, argv, workdir, timeout, on_start, env, stdin_data, details,
                 writer) -> Outcome:
        started = time.monotonic()
        child = start(argv, workdir, task, env=env, stdin=stdin_data is not None)
        self._child = child
        tail = Tail()
        sink = tail if writer is None else Fan(tail, LineSplitter(writer.output))
        reader = PipeReader(child, child.stdout, sink)
        feed(child, stdin_data)
        try:
            on_start(child.pid)
            status = "ok" if wait(child, timeout) else "timeout"
        finally:
            self._child = None
            end_group(child)
        reader.join()
        if status == "ok" and child.returncode != 0:
            status = "failed"
        return Outcome(status, child.returncode, tail.text(), time.monotonic() - started,
                       dict(details or {}))

    def interrupt(self) -> None:
        """Stop the running task (the worker hands the task back). Safe in a signal handler:
        it only sends the signal; the wait in capture sees the end."""
        if self._child is not None:
            terminate(self._child)


class ShellExecutor(CapturingExecutor):
    """Runs the task's prompt as a /bin/sh script in workdir. The script is a private temp
    file, not `sh -c PROMPT`: Linux caps one argument at 128 KiB (MAX_ARG_STRLEN) and a
    prompt may be up to tasks.MAX_PROMPT; not stdin either, which stays /dev/null for the
    script's commands."""

    name = "shell"

    def run(self, task, workdir, timeout, on_start=lambda pid: None) -> Outcome:
        import tempfile

        script = None
        try:
            fd, script = tempfile.mkstemp(prefix="mesh-task-", suffix=".sh")  # mode 0600
            with os.fdopen(fd, "wb") as f:
                f.write(task["prompt"].encode("utf-8", "surrogateescape"))
            return self.capture(task, ["/bin/sh", script], workdir, timeout, on_start)
        except (OSError, UnicodeError) as e:
            return Outcome("failed", None, f"cannot start: {e}", 0.0)
        finally:
            if script is not None:
                try:
                    os.unlink(script)
                except OSError:  # the script may have removed itself
                    pass


def start(argv: list[str], workdir: str, task: dict, *, env: dict | None = None,
          stdin: bool = False, stderr=subprocess.STDOUT) -> subprocess.Popen:
    """The one way a task's process starts: in workdir, in a session of its own, under the
    task guard (core/guard.py) with stdout piped (stderr with it unless told otherwise),
    in env (default ours) plus the task's own variables (task_env)."""
    return subprocess.Popen(proc.guarded(argv, GRACE), cwd=workdir, env=task_env(task, env),
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)


def task_env(task: dict, base: dict | None = None) -> dict:
    """base (default our environment) with MESH_TASK, the task's id, and MESH_TASK_HOPS,
    how many enqueues deep it is (its `hops`, 0 for a task a person pushed): what a task
    that enqueues work of its own (meshctl execute) reads for its loop guard."""
    env = dict(os.environ if base is None else base)
    env["MESH_TASK"] = str(task.get("id", ""))
    env["MESH_TASK_HOPS"] = str(task.get("hops", 0))
    return env


def feed(child: subprocess.Popen, data: bytes | None) -> None:
    """Write data to the child's stdin on a thread, then close it (a prompt larger than
    the pipe must not stall the wait)."""
    if data is None:
        return

    def write():
        try:
            child.stdin.write(data)
            child.stdin.close()
        except OSError:  # BrokenPipeError: it did not read it all
            pass

    threading.Thread(target=write, daemon=True).start()


def wait(child: subprocess.Popen, timeout: float | None) -> bool:
    """Wait for the child's own exit, not for EOF on its pipes; True when it ended by
    itself, False when the timeout stopped it (then it has ended too). Signals are handled
    meanwhile, so a worker's SIGTERM is seen while it waits."""
    try:
        child.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        kill_group(child)
        return False


def terminate(child: subprocess.Popen) -> None:
    """SIGTERM the child's process group: the task's processes get it; the guard waits
    GRACE seconds for the task to end, then kills what is left. Does not wait."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(child: subprocess.Popen) -> None:
    """Terminate the child and wait for its end; SIGKILL the group should the guard
    itself not end in time (stopped, or stuck)."""
    terminate(child)
    try:
        child.wait(timeout=GRACE + KILL_AFTER)
    except subprocess.TimeoutExpired:
        _sigkill_group(child)
        child.wait()


def end_group(child: subprocess.Popen) -> None:
    """Stop the run if it still runs; then KILL whatever it left in its group (the guard
    has done so already where it could). The group id cannot have been reused: Linux keeps
    a pid in use while any process has it as its group."""
    if child.poll() is None:
        kill_group(child)
    _sigkill_group(child)


def _sigkill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Tail:
    """A sink for PipeReader that keeps the last bytes of a stream, enough for the last
    OUTPUT_TAIL characters."""

    def __init__(self, limit: int = 4 * OUTPUT_TAIL):
        self._kept = bytearray()
        self._limit = limit

    def __call__(self, chunk: bytes | None) -> None:
        if chunk:
            self._kept += chunk
            del self._kept[:-self._limit]

    def text(self) -> str:
        return self._kept.decode("utf-8", "replace")[-OUTPUT_TAIL:]


class LineSplitter:
    """A PipeReader sink that hands on whole lines to put(line), decoded (the last even
    without its newline); at the end, put(None) when ends is set."""

    def __init__(self, put, ends: bool = False):
        self._put, self._ends = put, ends
        self._partial = b""

    def __call__(self, chunk: bytes | None) -> None:
        if chunk is None:
            if self._partial:
                self._put(self._partial.decode("utf-8", "replace"))
                self._partial = b""
            if self._ends:
                self._put(None)
            return
        *whole, self._partial = (self._partial + chunk).split(b"\n")
        for raw in whole:
            self._put(raw.decode("utf-8", "replace") + "\n")


class Fan:
    """A PipeReader sink that hands every chunk to each of several sinks."""

    def __init__(self, *sinks):
        self._sinks = sinks

    def __call__(self, chunk: bytes | None) -> None:
        for sink in self._sinks:
            sink(chunk)


class PipeReader:
    """Reads one of a child's pipes on a thread, each chunk to sink(chunk), then
    sink(None): at EOF, or DRAIN seconds after the child itself exited, whichever comes
    first. A process that escaped the task (setsid, a double fork) may hold the pipe open
    for ever; it must hold neither the task nor a thread."""

    def __init__(self, child: subprocess.Popen, pipe, sink):
        self._thread = threading.Thread(target=self._read, args=(child.pid, pipe, sink),
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _read(pid: int, pipe, sink) -> None:
        import select

        poller = select.poll()
        poller.register(pipe.fileno(), select.POLLIN)
        exited_at = None
        try:
            while True:
                if exited_at is None and proc.exited(pid):
                    exited_at = time.monotonic()
                left = POLL if exited_at is None else exited_at + DRAIN - time.monotonic()
                if left <= 0:
                    break
                if poller.poll(left * 1000):
                    chunk = os.read(pipe.fileno(), 65536)
                    if not chunk:
                        break
                    sink(chunk)
        finally:
            pipe.close()
            sink(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
