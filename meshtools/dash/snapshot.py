"""The one snapshot of the mesh that the dash draws and mesh-top prints.

Every source is a collector Source on its own cadence: health (meshctl status's reader:
the registry, Redis, queues, dead letters, pause, budget), the events feed (a ring of the
newest events from the events stream, the log without Redis), the selected peer's detail,
and the dash sources (procs, git, gpus, services, offload). `assemble` is the one adapter
from the collector's {name: {data, age, error}} to the shape render.py documents; it is
pure and cheap, so a frame never waits on I/O.
"""

import os
from collections import deque

from . import collector

EVENTS_KEPT = 200  # the feed's ring: the newest events
DETAIL_KEPT = 40  # lines kept of each detail section
LOG_TAIL_BYTES = 16 << 10
HEALTH_KEYS = ("peers", "redis", "queues", "dead", "pause", "budget")
CADENCE = {"health": (1.0, 5.0), "events": (0.5, 5.0), "detail": (1.0, 5.0)}
# event fields that name the peer an event is about (session.* events name it by id)
PEER_FIELDS = ("peer", "session", "id", "worker", "to", "sender", "holder", "waiter")


class Link:
    """The mesh's Redis for the sources that read it: connected on first need, never
    started for the asking (down is shown), dropped after a failure so the next read
    connects afresh. redis-py's client is thread-safe: the sources share it."""

    def __init__(self, home, url: str | None = None, namespace: str | None = None):
        self.home, self.url, self.namespace = home, url, namespace
        self._broker = None

    def broker(self):
        """The broker, or Unavailable."""
        if self._broker is None:
            from ..queue.broker import Broker
            from ..queue.connection import connect
            from ..queue.names import Names

            # loaded=False: a screen never stalls (nor prints) waiting for Redis to load
            self._broker = Broker(connect(self.home, self.url, start=False, loaded=False),
                                  Names.from_env(self.namespace))
        return self._broker

    def drop(self) -> None:
        self._broker = None

    def shown_url(self) -> str | None:
        from ..queue.connection import resolve_url

        return resolve_url(self.home, self.url, start=False)


def health_reader(home, link: Link):
    """meshctl status's collect, on the shared connection."""
    def read():
        from ..core.errors import Unavailable
        from ..mesh import health

        try:
            broker, error = link.broker(), None
        except Unavailable as e:
            broker, error = None, str(e)
        found = health.collect(home, broker, link.shown_url(), error)
        if broker is not None and not found["redis"]["up"]:
            link.drop()
        return found
    return read


class Feed:
    """The events source: the newest EVENTS_KEPT events, oldest first. From the events
    stream (the log copied in first, as mesh-events does), or from the log alone while
    Redis is down."""

    def __init__(self, home, link: Link, keep: int = EVENTS_KEPT):
        self.home, self.link = home, link
        self.ring: deque = deque(maxlen=keep)
        self.after = None  # the stream entry read up to
        self.position = None  # the log read up to (without Redis)
        self.mode = None  # "stream" or "log": a switch starts the ring afresh

    def __call__(self) -> list[dict]:
        from ..core.errors import Unavailable

        try:
            broker = self.link.broker()
        except Unavailable:
            self._from_log()
        else:
            self._from_stream(broker)
        return list(self.ring)

    def _switch(self, mode: str) -> None:
        if self.mode != mode:
            self.mode, self.after, self.position = mode, None, None
            self.ring.clear()

    def _from_stream(self, broker) -> None:
        import redis

        from ..queue import mirror

        self._switch("stream")
        try:
            mirror.forward(broker.redis, broker.names, self.home)
            records, self.after = mirror.read_after(broker.redis, broker.names, self.after,
                                                    self.ring.maxlen)
        except redis.RedisError:
            self.link.drop()
            raise
        self.ring.extend(records)

    def _from_log(self) -> None:
        from ..core import events, jsonl

        self._switch("log")
        if self.position is None:  # start at the newest: the whole log is not needed
            lines, self.position = events.lines_after(self.home, None)
        else:
            lines, self.position = events.lines_after(self.home, self.position)
        self.ring.extend(r for r in map(jsonl.try_parse, lines[-self.ring.maxlen:]) if r)


class Detail:
    """The detail source: the selected peer's recent events, inbox, locks, its task's
    trace and its log tail. `selected` is set by the dash's loop (a plain attribute: a
    read sees the old or the new id, either is fine)."""

    def __init__(self, home, feed: Feed):
        self.home, self.feed = home, feed
        self.selected: str | None = None

    def __call__(self) -> dict | None:
        peer = self.selected
        if peer is None:
            return None
        from ..coord import registry

        record = registry.get(self.home, peer) or {}
        recent = list(self.feed.ring)
        task, last = traced_task(record)
        return {"peer": peer, "events": about(recent, peer)[-DETAIL_KEPT:],
                "inbox": inbox_of(self.home, peer)[-DETAIL_KEPT:],
                "locks": locks_of(lock_table(self.home), peer),
                "trace": trace_lines(self.home, task)[-DETAIL_KEPT:],
                "trace_task": task, "trace_last": last,
                "log": log_tail(self.home, peer)}


def traced_task(record: dict) -> tuple[str | None, bool]:
    """The task whose trace a peer's detail shows, and whether it is its last one rather
    than the one it runs: a peer that waits shows what it did last, not nothing."""
    if record.get("task"):
        return record["task"], False
    return record.get("last_task"), bool(record.get("last_task"))


def about(events: list[dict], peer: str) -> list[dict]:
    """The events that name peer."""
    return [e for e in events if any(e.get(k) == peer for k in PEER_FIELDS)]


def trace_lines(home, task: str | None) -> list[str]:
    """The current run of a task as `meshctl trace` shows it (its stream.jsonl's steps)."""
    from ..core.errors import BadInput
    from ..executors import steps, trace

    if not task:
        return []
    try:
        records, _ = trace.read_from(trace.stream_file(home, task))
    except BadInput:  # not a task id: nothing to read
        return []
    return steps.render(steps.steps(trace.last_run(records)))


def locks_of(table: dict, peer: str) -> dict:
    """{held: [scope], waiting: [scope]} of peer in a lock table (locks.table's shape)."""
    held = sorted(s for s, h in (table.get("locks") or {}).items() if h.get("holder") == peer)
    waiting = sorted({s for w in (table.get("waits") or {}).values() if w.get("waiter") == peer
                      for s in w.get("scopes") or []})
    return {"held": held, "waiting": waiting}


def lock_table(home) -> dict:
    from ..locks.table import FileLockTable

    return FileLockTable(home.locks).snapshot()


def inbox_of(home, peer: str) -> list[dict]:
    """Read and unread messages, oldest first; peeked, never claimed."""
    from ..coord import inbox

    seen = list(inbox.read_messages(home, peer))
    return seen + list(inbox.receive(home, peer, peek=True))


def log_tail(home, peer: str, size: int = LOG_TAIL_BYTES) -> list[str]:
    """The last lines of the log mesh-spawn --detach gave the peer ([] without one)."""
    from ..agents import spawns

    log = (spawns.read(home, peer) or {}).get("log")
    if not log:
        return []
    try:
        with open(log, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - size, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-DETAIL_KEPT:]


def sources(home, link: Link, repo: str | None = None
            ) -> tuple[list[collector.Source], Detail]:
    """Every source of the snapshot, and the detail source (the dash sets its peer)."""
    feed = Feed(home, link)
    detail = Detail(home, feed)
    own = [collector.Source("health", health_reader(home, link), *CADENCE["health"]),
           collector.Source("events", feed, *CADENCE["events"]),
           collector.Source("detail", detail, *CADENCE["detail"])]
    return own + collector.mesh_sources(home, repo), detail


# -- pure: the collector's records as the snapshot ---------------------------------------

def assemble(collected: dict, ts: str, mesh: str | None = None, roles=()) -> dict:
    """The snapshot render.py draws, from Collector.snapshot(): health's keys at the top
    (None while loading), the dash sources' data under their names, each source's
    {age, error} (and `absent` for a machine without GPU) under `sources`, problems from
    health.problems (None while health is loading: nothing is known yet)."""
    from ..mesh import health

    def data(name, default=None):
        value = (collected.get(name) or {}).get("data")
        return default if value is None else value

    found = data("health", {})
    snapshot = {"ts": ts, "mesh": mesh, "roles": list(roles),
                "sources": {name: {"age": c.get("age"), "error": c.get("error")}
                            for name, c in collected.items()}}
    snapshot.update({key: found.get(key) for key in HEALTH_KEYS})
    for key in ("peers", "queues"):  # lists: their age and error are health's
        snapshot["sources"][key] = snapshot["sources"].get("health")
    if snapshot["redis"] is not None:
        snapshot["redis"] = dict(snapshot["redis"], age=snapshot["sources"]["health"]["age"])
    gpus = data("gpus", {})
    snapshot["sources"].setdefault("gpus", {})["absent"] = gpus.get("absent")
    snapshot.update(procs=data("procs", {}), git=data("git", {}), gpus=gpus.get("gpus") or [],
                    services=data("services", []), offload=data("offload", []),
                    events=data("events", []), detail=data("detail"))
    if snapshot["detail"] is not None:
        snapshot["detail"] = dict(snapshot["detail"], **snapshot["sources"]["detail"])
    snapshot["problems"] = health.problems(snapshot) if found else None
    return snapshot

