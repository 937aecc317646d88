"""Joining the mesh as a session of a role: the registry claim, within the role's
concurrency (one anchor per mesh), and the events that say so."""

from ..coord import registry
from ..core import events
from .roles import session_limit


def join(home, role: str, session_id: str | None, pid: int, phase: str | None = None) -> dict:
    """Register; Busy (75) for a live duplicate id or a role at its limit. Returns the record."""
    record, previous = registry.register(home, role, session_id, pid, phase,
                                         limit=session_limit(home, role))
    if previous:
        events.emit(home, "session.takeover", id=record["id"], role=record["role"],
                    previous_pid=previous.get("pid"), pid=record["pid"])
    events.emit(home, "session.registered", id=record["id"], role=record["role"],
                pid=record["pid"])
    return record
