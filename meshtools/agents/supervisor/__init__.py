"""Keep one agent process running: restart it with a capped quadratic backoff, give up on a
crash loop, stop it cleanly, and never leave its processes behind.

    policy.py    RestartPolicy and decide_restart(): what follows an exit, after how long (pure)
    states.py    the supervisor's states and the changes allowed between them (pure)
    control.py   stop/restart requests for one spawn: the write side and the read side
    signals.py   signals queued for the loop (the self-pipe trick)
    child.py     the processes of its runs, none left behind (a subreaper's)
    process.py   the Supervisor: a step per state, change_state, its records
    entry.py     the long-lived process: handoff() to a lean interpreter, main()

This package is the supervisor's public face: commands and tests import from here, and the
lean interpreter runs `from meshtools.agents.supervisor import main; main()`.
"""

from .control import (CONTROLS, RESTART_CHILD, STOP, control_dir, read_state, request,
                      request_current, spawn_dir, state_path)
from .entry import describe, handoff, main, run_spec, unregister
from .policy import (ALWAYS, DONE, FATAL, ON_FAILURE, RESTART, Decision, RestartPolicy,
                     backoff_delay, decide_restart, exit_status)
from .process import HOME_GONE, CannotStart, Outcome, Supervisor
from .signals import FORWARDED
from .states import BadTransition, State

__all__ = ["ALWAYS", "BadTransition", "CONTROLS", "CannotStart", "DONE", "Decision", "FATAL",
           "FORWARDED", "HOME_GONE", "ON_FAILURE", "Outcome", "RESTART", "RESTART_CHILD",
           "RestartPolicy", "STOP", "State", "Supervisor", "backoff_delay", "control_dir",
           "decide_restart", "describe", "exit_status", "handoff", "main", "read_state", "request",
           "request_current", "run_spec", "spawn_dir", "state_path", "unregister"]
