"""The long-lived process: mesh-supervise hands itself over (an exec) to a lean interpreter
that imports only the supervisor, and runs it from here."""

import json
import os
import signal
import sys

from ...core import errors
from .policy import FATAL, RestartPolicy
from .process import HOME_GONE, Supervisor, _write_line
from .signals import FORWARDED

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
    from ...core import jsonl
    from ...core.home import MeshHome

    home = MeshHome(spec["home"])
    report = ((lambda record: _write_line(1, jsonl.dumps(record))) if spec["json"]
              else lambda record: _write_line(2, describe(record)))
    outcome = Supervisor(home, spec["argv"], RestartPolicy(**spec["policy"]),
                         session=spec["session"], grace=spec["grace"], report=report,
                         starting_fd=spec.get("starting_fd")).run()
    if outcome.status == FATAL:
        raise errors.Busy(f"gave up: {outcome.failures} rapid failures "
                          f"(last exit {outcome.code})")
    if outcome.status == HOME_GONE:
        from ...queue.server import EmbeddedRedis, stop_orphans

        stop_orphans(EmbeddedRedis(home).dir)  # the gone mesh's Redis is a leftover too
        raise errors.ConfigError(f"MESH_HOME {home.path} was deleted or replaced: stopped "
                                 f"(last exit {outcome.code})")
    if spec["role"]:
        unregister(home, spec["session"])
    return outcome.code


def describe(record: dict) -> str:
    """A spawn record as one line for a person."""
    detail = " ".join(f"{k}={record[k]}" for k in ("spawn", "pid", "n", "code", "uptime",
                                                    "delay", "failures", "reason")
                      if record.get(k) is not None)
    return f"mesh-supervise: {record['event']} {detail}"


def unregister(home, session: str) -> None:
    """End the session this supervisor registered (someone may have removed it already)."""
    from ...coord.sessions import SUPERVISOR_EXITED, leave

    try:
        leave(home, session, SUPERVISOR_EXITED)
    except errors.BadInput:
        return
