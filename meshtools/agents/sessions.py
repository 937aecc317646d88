"""A session's life in the registry with the events that say so: joining as a session of a
role (within its concurrency: one anchor per mesh), and its heartbeat and phase."""

from ..coord import registry
from ..core import events


def join(home, role: str, session_id: str | None, pid: int, phase: str | None = None) -> dict:
    """Register as a role the mesh defines (BadInput, 65, otherwise); Busy (75) for a live
    duplicate id or a role at its limit. Returns the record. Taking over a dead session's
    id frees its locks: they were the dead process's, never the newcomer's."""
    from . import roles

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


def beat(home, session_id: str, phase: str | None = None) -> dict:
    """Heartbeat (and phase); a change of phase is the event session.phase. BadInput (65)
    for an unknown session. Returns the record."""
    record, previous = registry.heartbeat(home, session_id, phase)
    if phase is not None and phase != previous:
        events.emit(home, "session.phase", id=record["id"], phase=phase, previous=previous)
    return record
