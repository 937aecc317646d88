"""How a task runs. An executor takes a task and gives back an Outcome; the worker does the
rest (attempts, results, ACK). The agent adapters (meshtools.agents.adapter) plug in beside
`shell`: an Outcome's details (cost, turns, error kind, resets_at) go into the result
record, and the worker reads `details["error"]` to tell a usage limit (hand back, pause the
mesh) from a failure."""

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

OUTPUT_TAIL = 4000


@dataclass
class Outcome:
    status: str  # ok | failed | timeout
    exit_code: int | None
    output: str
    duration: float
    details: dict = field(default_factory=dict)  # merged into the result record (cost, ...)


class Executor(Protocol):
    def check(self) -> None: ...

    def run(self, task: dict, workdir: str, timeout: float | None,
            on_start: Callable[[int], None]) -> Outcome: ...

    def interrupt(self) -> None: ...


class CapturingExecutor:
    """What executors that run one process per task share: the process runs in workdir in
    its own session (so a timeout or an interrupt kills its whole group), stdout and stderr
    captured together, the last OUTPUT_TAIL characters kept."""

    def __init__(self):
        self._child: subprocess.Popen | None = None

    def check(self) -> None:
        """Raise Unavailable (69) when the executor cannot run at all; nothing to check for
        a shell. (Agent executors look for their CLI.)"""

    def capture(self, argv: list[str], workdir: str, timeout: float | None, on_start,
                env: dict | None = None, stdin_data: bytes | None = None,
                details: dict | None = None) -> Outcome:
        """Run argv to its end; OSError (cannot start) is the caller's to turn into words."""
        started = time.monotonic()
        child = subprocess.Popen(argv, cwd=workdir, env=env,
                                 stdin=subprocess.PIPE if stdin_data is not None
                                 else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self._child = child
        on_start(child.pid)
        try:
            out, _ = child.communicate(stdin_data, timeout=timeout)
            status = "ok" if child.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            kill_group(child)
            out, _ = child.communicate()
            status = "timeout"
        finally:
            self._child = None
            end_group(child)  # a task's processes end with it
        text = out.decode("utf-8", "replace")[-OUTPUT_TAIL:]
        return Outcome(status, child.returncode, text, time.monotonic() - started,
                       dict(details or {}))

    def interrupt(self) -> None:
        """Stop the running task now (the worker hands the task back)."""
        if self._child is not None:
            kill_group(self._child)


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
            return self.capture(["/bin/sh", script], workdir, timeout, on_start)
        except (OSError, UnicodeError) as e:
            return Outcome("failed", None, f"cannot start: {e}", 0.0)
        finally:
            if script is not None:
                try:
                    os.unlink(script)
                except OSError:  # the script may have removed itself
                    pass


def end_group(child: subprocess.Popen) -> None:
    """TERM then KILL the run's whole process group if it still runs; then KILL whatever it
    left behind in the group (background jobs). The group id cannot have been reused: Linux
    keeps a pid in use while any process has it as its group."""
    if child.poll() is None:
        kill_group(child)
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(child: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after grace seconds."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

