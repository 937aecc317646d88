"""The supervisor's states and the changes between them, as data (the shape of supervisord's
states.py). Supervisor.change_state is the one place that moves between them; it refuses a
change this table does not list, for that is a bug in the supervisor, never bad input.

Pure: no I/O, nothing imported beyond enum (which the interpreter has loaded already).
"""

import enum


class State(enum.Enum):
    STARTING = "starting"  # a child is about to be started
    RUNNING = "running"  # the child runs
    RESTARTING = "restarting"  # a control asked for a new child: SIGTERM sent, SIGKILL at grace
    STOPPING = "stopping"  # asked to stop: the signal passed on, SIGKILL at grace
    EXITED = "exited"  # the child exited and was reaped: what follows is decided
    BACKOFF = "backoff"  # waiting out the delay before the restart
    STOPPED = "stopped"  # supervision is over: stopped, or done (exit 0 under on-failure)
    FATAL = "fatal"  # gave up: too many rapid failures


STARTING, RUNNING, RESTARTING, STOPPING = (State.STARTING, State.RUNNING, State.RESTARTING,
                                           State.STOPPING)
EXITED, BACKOFF, STOPPED, FATAL = State.EXITED, State.BACKOFF, State.STOPPED, State.FATAL

TRANSITIONS: dict[State, frozenset[State]] = {
    # started; could not start (126, 127); a stop before the start
    STARTING: frozenset({RUNNING, EXITED, STOPPED}),
    # a control's restart; a stop; the child's own exit
    RUNNING: frozenset({RESTARTING, STOPPING, EXITED}),
    # another restart (SIGTERM again, the grace anew); a stop wins over a restart
    RESTARTING: frozenset({RESTARTING, STOPPING, EXITED}),
    STOPPING: frozenset({EXITED}),  # a stop is never undone
    # a restart at once (control); after a delay (policy); done or stopped; gave up
    EXITED: frozenset({STARTING, BACKOFF, STOPPED, FATAL}),
    # the delay is over, or a control's restart; a stop
    BACKOFF: frozenset({STARTING, STOPPED}),
    STOPPED: frozenset(),
    FATAL: frozenset(),
}
CHILD_STATES = frozenset({RUNNING, RESTARTING, STOPPING})  # a child runs: its group is live
FINAL_STATES = frozenset({STOPPED, FATAL})

# What a state is recorded as in spawns/<key>.json ("state"); another leaves it as it was.
RECORDED = {RUNNING: "running", STOPPING: "stopping", BACKOFF: "backoff", FATAL: "FATAL"}
# The session's phase in the registry, formatted with the change's fields.
PHASES = {RUNNING: "running", BACKOFF: "backoff {delay:g}s", FATAL: "FATAL"}
RERUN_PHASE = "next run in {delay:g}s"  # BACKOFF after a persistent agent's finished run
# The event (spawn.<name>) that announces entering a state; see event().
EVENTS = {RUNNING: "started", EXITED: "exited", BACKOFF: "restart", STOPPED: "stopped",
          FATAL: "fatal"}


class BadTransition(RuntimeError):
    """A change of state the table does not allow: a bug in the supervisor."""


def check(old: State, new: State) -> State:
    """new, if the table allows the change from old; else BadTransition."""
    if new not in TRANSITIONS[old]:
        raise BadTransition(f"supervisor: no change from {old.name} to {new.name}")
    return new


def event(old: State, new: State) -> str | None:
    """The event that announces the change: a restart is announced when it is decided (on
    leaving EXITED, for BACKOFF or straight to STARTING), not again when a backoff ends."""
    if new is STARTING:
        return "restart" if old is EXITED else None
    return EVENTS.get(new)


def phase(new: State, fields: dict) -> str | None:
    """The registry phase that entering `new` sets, None for one that keeps the phase."""
    template = RERUN_PHASE if new is BACKOFF and fields.get("rerun") else PHASES.get(new)
    return None if template is None else template.format(**fields)
