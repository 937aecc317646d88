"""A session's life in the registry with the events that say so: joining as a session of a
role (within its concurrency: one anchor per mesh), and its heartbeat and phase."""

from ..coord import registry
from ..core import events


def join(home, role: str, session_id: str | None, pid: int, phase: str | None = None) -> dict:
    """Register; Busy (75) for a live duplicate id or a role at its limit. Returns the record."""
    from .roles import session_limit

    record, previous = registry.register(home, role, session_id, pid, phase,
                                         limit=session_limit(home, role))
    if previous:
        events.emit(home, "session.takeover", id=record["id"], role=record["role"],
                    previous_pid=previous.get("pid"), pid=record["pid"])
    events.emit(home, "session.registered", id=record["id"], role=record["role"],
                pid=record["pid"])
    return record


def beat(home, session_id: str, phase: str | None = None) -> dict:
    """Heartbeat (and phase); a change of phase is the event session.phase. BadInput (65)
    for an unknown session. Returns the record."""
    record, previous = registry.heartbeat(home, session_id, phase)
    if phase is not None and phase != previous:
        events.emit(home, "session.phase", id=record["id"], phase=phase, previous=previous)
    return record
