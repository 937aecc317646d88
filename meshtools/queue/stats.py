"""What each queue holds and who works on it (queue-stat, and the dashboard): the XINFO and
XPENDING reads in one place, as records."""

import time

from ..core import clock
from .broker import DeadLetters
from .names import GROUP


def queue_records(broker, now: float | None = None) -> list[dict]:
    """Per queue (and per queue that has only dead letters left): length, pending, lag,
    consumers with their idle times and heartbeats, dead letters, the age of the oldest
    task on it (waiting or running: a finished one is deleted) and of the oldest pending."""
    r = broker.redis
    now_ms = int((time.time() if now is None else now) * 1000)
    dead_by_queue: dict[str, int] = {}
    for record in DeadLetters(broker).list():
        dead_by_queue[record["queue"]] = dead_by_queue.get(record["queue"], 0) + 1
    workers = broker.workers()
    records = []
    for queue in sorted(set(broker.queues()) | set(dead_by_queue)):
        stream = broker.names.queue(queue)
        group = next((g for g in _groups(r, stream) if g["name"] == GROUP), {})
        consumers = [{"name": c["name"], "pending": c["pending"], "idle_ms": c["idle"],
                      **liveness(workers.get(c["name"]), now_ms / 1000)}
                     for c in _consumers(r, stream)]
        oldest = r.xpending_range(stream, GROUP, "-", "+", 1) if group else []
        first = r.xrange(stream, count=1)
        records.append({
            "ts": clock.iso(), "kind": "queue", "queue": queue, "stream": stream,
            "length": r.xlen(stream), "pending": group.get("pending", 0),
            "lag": group.get("lag"), "consumers": consumers,
            "dead": dead_by_queue.get(queue, 0),
            "oldest_age": _age(first[0][0], now_ms) if first else None,
            "oldest_pending_age": _age(oldest[0]["message_id"], now_ms) if oldest else None})
    return records


def live_consumers(broker, queue: str, now: float | None = None) -> list[str]:
    """The consumers of queue whose worker is alive by its heartbeat (liveness)."""
    workers, now = broker.workers(), time.time() if now is None else now
    return [c["name"] for c in _consumers(broker.redis, broker.names.queue(queue))
            if liveness(workers.get(c["name"]), now)["alive"]]


def _age(entry_id: str, now_ms: int) -> float:
    """Seconds since a stream entry was added (its id starts with the milliseconds)."""
    return round((now_ms - int(entry_id.split("-")[0])) / 1000, 3)


def liveness(beat: dict | None, now: float) -> dict:
    """A consumer as a user judges it: Redis's idle time resets only when a worker takes a
    task, so a live worker waiting for one looks dead by it; its heartbeat in tasks:workers
    (its age, and alive by the rule workers reclaim by) tells. No heartbeat: not alive."""
    from .worker import worker_dead

    if beat is None:
        return {"beat_age": None, "alive": False}
    return {"beat_age": round(now - beat.get("beat", 0), 1), "alive": not worker_dead(beat, now)}


def _groups(r, stream):
    try:
        return r.xinfo_groups(stream)
    except Exception:  # noqa: BLE001 - no such stream yet
        return []


def _consumers(r, stream):
    try:
        return r.xinfo_consumers(stream, GROUP)
    except Exception:  # noqa: BLE001 - no group yet
        return []
