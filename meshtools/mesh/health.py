"""The mesh's health as plain data: what `meshctl status` shows now and the dash next.

`collect` reads each source once (Redis, the registry, the queues, the dead letters, a pause
in force, today's spend) into a snapshot of dicts and lists; the pure `problems`, `records`
and `render` turn a snapshot into what needs a person now, JSON lines and the one screen.
A source that cannot be read is data (its `error`), never a crash: with Redis down the
registry still shows, and "Redis unreachable" is itself a problem.
"""

import time

from ..agents.anchor import anchor_holder
from ..coord import registry
from ..core import clock, config
from ..core.words import plural
from ..landing import state as landing_state
from ..queue import pause as pauses

# a peer in one of these states needs a person (stale is a slow heartbeat: it passes)
TROUBLED = ("dead", "FATAL", "stuck")
LIVE = ("alive", "stale", "stuck", "paused")  # a session whose process is there
ANCHOR_ROLE = "anchor"
REDIS_SOURCES = ("redis", "dead", "pause", "budget")  # the dict sources that carry an age


def collect(home, broker=None, redis_url: str | None = None,
            redis_error: str | None = None) -> dict:
    """The snapshot. broker None: Redis could not be reached, redis_error says why (the
    queues, dead letters and pause are then unknown: None)."""
    now = time.time()
    settings = config.of(home)
    snapshot = {"ts": clock.iso(now), "home": home.path,
                "peers": peers(home, now, settings.section("anchor").value("stuck_after"))}
    if broker is not None:
        import redis

        from ..queue.connection import describe

        try:
            snapshot.update(from_redis(broker, redis_url, now))
        except redis.RedisError as e:  # it went away meanwhile
            redis_error = describe(e)
    if broker is None or redis_error is not None:
        redis_error = redis_error or "not connected"
        snapshot.update(redis={"url": redis_url, "up": False, "version": None, "rtt_ms": None,
                               "used_memory": None, "persistence": None, "error": redis_error,
                               "_at": now},
                        queues=None, dead=None, pause=None,
                        budget={"spent_today_usd": None, "error": redis_error, "_at": now})
    snapshot["budget"]["daily_usd"] = pauses.daily_cap(settings)
    snapshot["landing"] = landing_state.waiting(home)
    snapshot["anchor"] = {"running": anchor_holder(home) is not None}
    snapshot["peers"] = held_by_pause(snapshot["peers"], snapshot.get("pause"))
    done = time.time()
    for name in REDIS_SOURCES:
        if snapshot.get(name) is not None:
            snapshot[name]["age"] = round(done - snapshot[name].pop("_at"), 3)
    snapshot["problems"] = problems(snapshot)
    return snapshot


def peers(home, now: float, stuck_after: float) -> list[dict]:
    """Every registered session as a person judges it (registry.peer_state)."""
    found = []
    for record in registry.all_sessions(home):
        record = registry.classify(home, record, now)
        found.append({"id": record["id"], "role": record.get("role"),
                      "state": registry.peer_state(record, stuck_after),
                      "pid": record.get("pid"), "host": record.get("host"),
                      "phase": record.get("phase"), "phase_age": record.get("phase_age"),
                      "heartbeat_age": record.get("heartbeat_age"), "task": record.get("task"),
                      "task_age": _since(record.get("task_since"), now),
                      "worktree": record.get("worktree"), "branch": record.get("branch")})
    return found


def held_by_pause(found: list[dict], pause: dict | None) -> list[dict]:
    """While dispatch is paused, an alive peer with no task is `paused`: it would take one
    and may not (a peer running a task finishes it, and stays alive)."""
    if not pause:
        return found
    return [dict(peer, state="paused") if peer["state"] == "alive" and not peer.get("task")
            else peer for peer in found]


def _since(iso: str | None, now: float) -> float | None:
    try:
        return round(max(0.0, now - clock.parse_iso(iso)), 3) if iso else None
    except ValueError:
        return None


def from_redis(broker, url: str | None, now: float) -> dict:
    """The sources Redis holds: itself, the queues, the dead letters, a pause, the spend."""
    from ..queue.broker import DeadLetters
    from ..queue.stats import queue_records

    found = {"redis": dict(server(broker.redis, url), _at=time.time()),
             "queues": queue_records(broker, now)}
    letters = DeadLetters(broker).list()
    by_queue: dict[str, int] = {}
    for letter in letters:
        by_queue[letter["queue"]] = by_queue.get(letter["queue"], 0) + 1
    found["dead"] = {"count": len(letters), "by_queue": by_queue,
                     "ids": [letter["id"] for letter in letters], "_at": time.time()}
    store = pauses.Pauses.of(broker)
    held = store.paused()
    found["pause"] = dict(held, _at=time.time()) if held else None
    today = pauses.day(clock.calendar_now())
    found["budget"] = {"spent_today_usd": store.spent(today),
                       "by_role": store.spent_by_role(today), "error": None, "_at": time.time()}
    return found


def server(client, url: str | None) -> dict:
    """Redis itself: version, a PING's round trip, memory, and whether it persists (AOF;
    RDB snapshots when `save` is set, None where CONFIG is not allowed)."""
    import redis

    started = time.perf_counter()
    client.ping()
    rtt_ms = (time.perf_counter() - started) * 1000
    info = client.info()
    try:
        rdb = bool(client.config_get("save").get("save"))
    except redis.ResponseError:  # a managed Redis may refuse CONFIG
        rdb = None
    return {"url": url, "up": True, "version": info.get("redis_version"),
            "rtt_ms": round(rtt_ms, 3), "used_memory": info.get("used_memory"),
            "persistence": {"aof": bool(info.get("aof_enabled")), "rdb": rdb}, "error": None}


# --- pure: the snapshot as problems, records and text ------------------------------------

def problems(snapshot: dict) -> list[dict]:
    """What needs a person now, [{kind, subject, text}]: Redis unreachable, a peer dead,
    FATAL or stuck, the mesh down (or a queue no live worker drains) while tasks wait, no
    anchor loop for a mesh that has an anchor, landing waiting or cut off, dispatch paused,
    the day's budget spent, dead letters waiting, and (where the snapshot has the dash's
    `git`) a role's work that would conflict on main."""
    found = []
    redis = snapshot.get("redis") or {}
    if not redis.get("up"):
        found.append(_problem("redis", redis.get("url"), redis.get("error")
                              or f"Redis unreachable at {redis.get('url') or '?'}"))
    for peer in snapshot.get("peers") or []:
        if peer["state"] in TROUBLED:
            found.append(_problem(peer["state"].lower(), peer["id"], _peer_trouble(peer)))
    found += unattended(snapshot) + landing_problems(snapshot)
    held = snapshot.get("pause")
    if held:
        by = f", by {held['by']}" if held.get("by") else ""
        found.append(_problem("paused", held.get("reason"), (
            f"dispatch paused until {held.get('until_ts') or '?'} ({held.get('reason')}{by}): "
            "queue-resume ends it")))
    budget = snapshot.get("budget") or {}
    spent, cap = budget.get("spent_today_usd"), budget.get("daily_usd")
    if pauses.for_budget(spent, cap, 0) is not None:  # the rule the workers pause by
        found.append(_problem("budget", "daily_usd", f"over budget: ${spent:.2f} spent today "
                              f"of ${cap:.2f} a day ([budget] daily_usd)"))
    for queue, count in sorted(((snapshot.get("dead") or {}).get("by_queue") or {}).items()):
        found.append(_problem("dead_letters", queue, (
            f"{count} dead letter{'s' if count != 1 else ''} on queue {queue}: "
            "queue-dead list shows why")))
    for role, work in sorted((snapshot.get("git") or {}).items()):  # the dash's gitstate
        if work.get("forecast") == "conflict":
            paths = ", ".join(work.get("paths") or []) or "?"
            found.append(_problem("conflict", role, (
                f"a conflict waiting: {work.get('branch')} would not pick cleanly onto main "
                f"({paths})")))
    return found


def unattended(snapshot: dict) -> list[dict]:
    """Work nobody will do: tasks queued while no session of the mesh runs at all (the
    mesh is down: one problem), else each queue with tasks and no live worker draining it;
    and a mesh with an anchor session whose loop (mesh-anchor) does not run."""
    peers = snapshot.get("peers") or []
    live = [p for p in peers if p["state"] in LIVE]
    anchor_runs = (snapshot.get("anchor") or {}).get("running")
    waiting = {q["queue"]: q["length"] for q in snapshot.get("queues") or [] if q.get("length")
               and not any(c.get("alive") for c in q.get("consumers") or [])}
    found = []
    if waiting and not live and not anchor_runs:
        tasks = sum(waiting.values())
        found.append(_problem("mesh_down", None, (
            f"the mesh is down: {plural(tasks, 'task')} queued ({', '.join(sorted(waiting))}) "
            "and no session runs to take them: meshctl init starts it")))
    else:
        for queue, length in sorted(waiting.items()):
            found.append(_problem("no_worker", queue, (
                f"{plural(length, 'task')} on queue {queue} and no live worker drains it: "
                f"mesh-spawn ROLE --queue (or meshctl init) starts one")))
    anchors = [p for p in peers if p.get("role") == ANCHOR_ROLE]
    if anchors and snapshot.get("anchor") is not None and not anchor_runs:
        found.append(_problem("anchor", anchors[0]["id"], (
            f"no mesh-anchor runs for {anchors[0]['id']} ({anchors[0]['state']}): finished "
            "work does not land and dead peers are not respawned")))
    return found


def landing_problems(snapshot: dict) -> list[dict]:
    """Landing that waits (and why), and a landing cut off after main moved."""
    landing = snapshot.get("landing") or {}
    found = []
    blocked = landing.get("blocked")
    if blocked:
        task = f" (task {blocked['task']})" if blocked.get("task") else ""
        found.append(_problem("landing", blocked.get("task"), (
            f"landing waits{task}: {blocked.get('reason')}")))
    cut = landing.get("interrupted")
    if cut and not (blocked and "interrupted landing" in (blocked.get("reason") or "")):
        found.append(_problem("landing_interrupted", cut.get("branch"), (
            f"an interrupted landing moved {cut.get('branch')} from {str(cut.get('old'))[:12]} "
            f"to {str(cut.get('new'))[:12]}; the main checkout may lag behind it until the "
            "next landing pass finishes it")))
    return found


def _problem(kind: str, subject, text: str) -> dict:
    return {"kind": kind, "subject": subject, "text": text}


def _peer_trouble(peer: dict) -> str:
    who = f"{peer['id']} ({peer.get('role')})"
    task = f", task {peer['task']} left unfinished" if peer.get("task") else ""
    if peer["state"] == "dead":
        return f"{who} is dead: pid {peer.get('pid')} on {peer.get('host')} is gone{task}"
    if peer["state"] == "FATAL":
        return f"{who} is FATAL: its supervisor gave up on a crash loop"
    return f"{who} is stuck: {peer.get('phase')} for {ago(peer.get('phase_age'))}{task}"


def records(snapshot: dict) -> list[dict]:
    """The snapshot as JSON lines, one per item, each with ts and kind: redis, session,
    queue, dead, pause (only when paused), budget, problem (its own kind as `problem`)."""
    ts = snapshot["ts"]
    lines = [{"ts": ts, "kind": "redis", **snapshot["redis"]}]
    lines += [{"ts": ts, "kind": "session", **peer} for peer in snapshot["peers"]]
    lines += [dict(queue, ts=ts) for queue in snapshot.get("queues") or []]
    for kind in ("dead", "pause", "budget"):
        if snapshot.get(kind) is not None:
            lines.append({"ts": ts, "kind": kind, **snapshot[kind]})
    lines += [{"ts": ts, "kind": "problem", "problem": p["kind"], "subject": p["subject"],
               "text": p["text"]} for p in snapshot["problems"]]
    return lines


def render(snapshot: dict) -> list[str]:
    """The one screen of health, as lines of text."""
    lines = [redis_line(snapshot["redis"]), ""]
    if snapshot["peers"]:
        lines.append("sessions")
        lines += _table(["ROLE", "ID", "STATE", "PHASE", "TASK", "PID"], [
            [p.get("role"), p["id"], p["state"], _aged(p.get("phase"), p.get("phase_age")),
             _aged(p.get("task"), p.get("task_age")), p.get("pid")]
            for p in sorted(snapshot["peers"], key=lambda p: (p.get("role") or "", p["id"]))])
    else:
        lines.append("sessions  none")
    return lines + queue_lines(snapshot) + [""] + problem_lines(snapshot["problems"])


def queue_lines(snapshot: dict) -> list[str]:
    """The queues as a table, then a line each for the dead letters, a pause and the
    budget (mesh-top's queue panel shows these too)."""
    lines = []
    queues = snapshot.get("queues")
    if queues is None:
        lines.append("queues    unknown (Redis is down)")
    elif queues:
        lines.append("queues")
        lines += _table(["QUEUE", "DEPTH", "PENDING", "OLDEST", "WORKERS", "DEAD"], [
            [q["queue"], q["length"], q["pending"], ago(q.get("oldest_age")),
             sum(1 for c in q.get("consumers") or [] if c.get("alive")), q.get("dead", 0)]
            for q in queues])
    else:
        lines.append("queues    none")
    dead = snapshot.get("dead")
    if dead and dead["count"]:
        ids = dead.get("ids") or []
        shown = ", ".join(ids[:5]) + (", ..." if dead["count"] > 5 else "")
        lines.append(f"dead      {dead['count']} letter{'s' if dead['count'] != 1 else ''}: "
                     f"{shown}")
    held = snapshot.get("pause")
    if held:
        lines.append(f"paused    until {held.get('until_ts') or '?'} ({held.get('reason')})")
    lines.append(_budget_line(snapshot.get("budget") or {}))
    return lines


def problem_lines(found: list[dict]) -> list[str]:
    """A line per problem, or the one that says there is none."""
    return [f"✘ {p['text']}" for p in found] or ["✔ nothing needs you"]


def redis_line(redis: dict) -> str:
    """Redis in one line: up (version, where, round trip, memory, persistence) or DOWN and
    why."""
    if not redis.get("up"):
        return f"redis     DOWN: {redis.get('error') or redis.get('url')}"
    kept = redis.get("persistence") or {}
    persists = [name for name in ("aof", "rdb") if kept.get(name)]
    return (f"redis     up {redis.get('version')} at {redis.get('url')}, round trip "
            f"{redis.get('rtt_ms') or 0:.1f} ms, {_mib(redis.get('used_memory'))}, "
            f"persistence {'+'.join(persists) if persists else 'OFF'}")


def _budget_line(budget: dict) -> str:
    spent, cap = budget.get("spent_today_usd"), budget.get("daily_usd")
    text = "unknown" if spent is None else f"${spent:.2f} spent today"
    return f"budget    {text}" + (f" of ${cap:.2f} a day" if cap is not None else ", no daily cap")


def _table(headers: list[str], rows: list[list]) -> list[str]:
    from tabulate import tabulate

    text = tabulate([["-" if v is None else v for v in row] for row in rows], headers=headers,
                    tablefmt="plain", disable_numparse=True)
    return ["  " + line for line in text.splitlines()]


def _aged(what, age: float | None) -> str | None:
    return None if what is None else f"{what} {ago(age)}" if age is not None else str(what)


def _mib(size) -> str:
    return "memory ?" if size is None else f"{size / 2**20:.1f} MiB"


def ago(seconds: float | None) -> str:
    """An age as a person reads it: 42s, 5m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
