"""What running a task gives back, and what runs it. An executor takes a task and gives
back an Outcome; the worker does the rest (attempts, results, ACK). The executors
(meshtools.executors: the shell and the agent CLIs) plug in: an Outcome's details (cost,
turns, error kind, resets_at) go into the result record, and the worker reads
`details["error"]` to tell a limit (queue.limits: hand back and pause the mesh, or back
off) from a failure (the error kinds below)."""

from dataclasses import dataclass, field
from typing import Callable, Protocol

# error kinds, as the result record and the worker name them (the limits: queue.limits)
AUTH, MAX_TURNS, BUDGET, EXECUTION, UNKNOWN = (
    "auth", "max_turns", "budget", "execution", "unknown")


@dataclass
class Outcome:
    status: str  # ok | failed | timeout | usage_limited | rate_limited (queue.limits)
    exit_code: int | None
    output: str
    duration: float
    details: dict = field(default_factory=dict)  # merged into the result record (cost, ...)


class Executor(Protocol):
    def check(self) -> None: ...

    def run(self, task: dict, workdir: str, timeout: float | None,
            on_start: Callable[[int], None]) -> Outcome: ...

    def interrupt(self) -> None: ...
