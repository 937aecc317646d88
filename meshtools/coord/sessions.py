"""A session's life, the one place that changes the registry and says so in events: it
joins as a session of a role (within its concurrency: one anchor per mesh), beats (heartbeat
and phase), and leaves. However it ends (coord-unregister, its supervisor exiting, the
anchor finding it dead), leaving is one session.unregistered event that names its role and
why; a dead one's locks are released with it. Pruning the dead is session.pruned."""

from ..core import events
from . import registry

# A queue worker's phases between its agent's own (executors.stream: thinking, tool X, ...).
WAITING, RUNNING = "waiting", "running"

# Why a session left (the event's reason).
UNREGISTERED, SUPERVISOR_EXITED, DEAD = "unregistered", "supervisor exited", "dead"
MESH_DOWN = "mesh down"  # meshctl down stopped its process, which could not leave itself
_GONE = {DEAD: "was dead", MESH_DOWN: "was stopped (mesh down)"}  # reasons: its process is gone


def join(home, role: str, session_id: str | None, pid: int, phase: str | None = None) -> dict:
    """Register as a role the mesh defines (BadInput, 65, otherwise); Busy (75) for a live
    duplicate id or a role at its limit. Returns the record. Taking over a dead session's
    id frees its locks: they were the dead process's, never the newcomer's."""
    from ..core import roles

    limit = roles.get(home, role).concurrency
    record, previous = registry.register(home, role, session_id, pid, phase, limit=limit)
    if previous:
        events.emit(home, "session.takeover", id=record["id"], role=record["role"],
                    previous_pid=previous.get("pid"), pid=record["pid"])
        release_locks(home, previous, "was dead and taken over")
    events.emit(home, "session.registered", id=record["id"], role=record["role"],
                pid=record["pid"])
    return record


def release_locks(home, record: dict, why: str) -> None:
    """Release every lock a dead session held (lock.released, with the reason), so that
    whoever gets its id next never inherits them."""
    from ..locks.service import LockService

    LockService(home).release(record["id"], None,
                              reason=f"session {record['id']} (pid {record.get('pid')}) {why}")


def beat(home, session_id: str, phase: str | None = None, task=registry.KEEP,
         unless_newer_than: float | None = None) -> dict:
    """Heartbeat (and phase, and the id of the task it runs now or None; a phase set after
    `unless_newer_than` is kept); a change of phase is the event session.phase. BadInput
    (65) for an unknown session. Returns the record."""
    record, previous = registry.heartbeat(home, session_id, phase, task, unless_newer_than)
    phase = record.get("phase") if phase is not None else None
    if phase is not None and phase != previous:
        events.emit(home, "session.phase", id=record["id"], phase=phase, previous=previous)
    return record


def task_reporter(home, session_id: str | None, phases: bool = True):
    """For a queue worker that is a session: `report(task_id)` when it takes a task (phase
    running) and `report(None)` when it waits for one (phase waiting, no task), so that
    coord-peers, meshctl status, meshctl trace and the dash see what each peer runs now.
    phases=False (a persistent agent's one run): the task only, the agent's own phases
    stay (its last, done or failed, included). None without a session."""
    if not session_id:
        return None
    if not phases:
        return lambda task: beat(home, session_id, task=task)
    return lambda task: beat(home, session_id, RUNNING if task else WAITING, task=task)


def leave(home, session_id: str, reason: str) -> dict | None:
    """End the session: its record goes (its inbox stays) and session.unregistered says so,
    with its role and the reason. BadInput (65) for an unknown session. With reason DEAD
    or MESH_DOWN it goes only if it is still dead (re-checked under the registry's lock: a
    respawn may have taken the id over meanwhile), else None; its locks are released."""
    record = registry.unregister(home, session_id, only_dead=reason in _GONE)
    if record is None:
        return None
    events.emit(home, "session.unregistered", id=record["id"], role=record.get("role"),
                reason=reason)
    if reason in _GONE:
        release_locks(home, record, _GONE[reason])
    return record


def prune(home) -> list[dict]:
    """Remove every dead session and release its locks (session.pruned each)."""
    removed = registry.prune(home)
    for record in removed:
        events.emit(home, "session.pruned", id=record["id"], role=record.get("role"))
        release_locks(home, record, "was dead and pruned")
    return removed
