"""How a task runs. An executor takes a task and gives back an Outcome; the worker does the
rest (attempts, results, ACK). The agent adapters (meshtools.agents.adapter) plug in beside `shell`: an Outcome's details
(cost, turns, error kind, resets_at) go into the result record, and the worker reads
`details["error"]` to tell a usage limit (hand back, pause the mesh) from a failure."""

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
    def run(self, task: dict, workdir: str, timeout: float | None,
            on_start: Callable[[int], None]) -> Outcome: ...

    def interrupt(self) -> None: ...


class ShellExecutor:
    """Runs the task's prompt with /bin/sh -c in workdir, in its own process group, with
    stdout and stderr captured together; a timeout kills the whole group."""

    name = "shell"

    def __init__(self):
        self._child: subprocess.Popen | None = None

    def run(self, task, workdir, timeout, on_start=lambda pid: None) -> Outcome:
        started = time.monotonic()
        try:
            child = subprocess.Popen(["/bin/sh", "-c", task["prompt"]], cwd=workdir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            return Outcome("failed", None, f"cannot start: {e}", time.monotonic() - started)
        self._child = child
        on_start(child.pid)
        try:
            out, _ = child.communicate(timeout=timeout)
            status = "ok" if child.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(child)
            out, _ = child.communicate()
            status = "timeout"
        finally:
            self._child = None
        text = out.decode("utf-8", "replace")[-OUTPUT_TAIL:]
        return Outcome(status, child.returncode, text, time.monotonic() - started)

    def interrupt(self) -> None:
        """Stop the running task now (the worker hands the task back)."""
        if self._child is not None:
            _kill_group(self._child)


def kill_group(child: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after grace seconds."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_kill_group = kill_group


EXECUTORS = {"shell": ShellExecutor}
