"""meshctl down: stop every process of this mesh, found from its own records, never by name.

The mesh's processes are those its records name, each by pid and start time (a recycled pid
names another process, which is never signalled):
- the supervisors (spawns/<key>.json), each with the agent or queue worker below it;
- a session whose pid mesh-spawn recorded (spawns/<id>.spawn.json) before its supervisor
  wrote its state;
- the standalone anchor loop (the holder of anchor.lock; one under a supervisor goes with it);
- with --all, the embedded Redis, last: a worker hands its task back through it.
A live session the mesh did not start (a shell's coord-register) is not the mesh's to stop:
it is reported and left registered. A process on another host is reported, not signalled.

The caller holds core.lifecycle's lock exclusively (meshctl down): starts under way are
recorded before the survey, and none begins until down returns. The records are read again
after each round (RESCANS), so a process that began without the lock is stopped too.

The supervisors and the anchor get SIGTERM all at once and are waited for together: a queue
worker finishes its task. After `timeout` seconds a supervisor still there gets SIGTERM again
(every RESEND seconds until it goes: two signals sent together merge into one), which hands
a running task back; KILL_AFTER seconds later what is left of its tree is killed. Queues,
results, dead letters and worktrees stay.

Decisions are pure functions of data (`plan`, `escalate`, `describe`); the rest is I/O.
"""

import os
import signal
import time
from dataclasses import dataclass

from ..coord import sessions
from ..core import clock, errors, events, proc

DEFAULT_TIMEOUT = 30.0  # how long a running task may take to finish
RESEND = 0.25  # after the timeout, SIGTERM again this often until the process goes
KILL_AFTER = 5.0  # after the timeout, SIGKILL what is left; as long again: give up
POLL = 0.02
RESCANS = 3  # the records are read again after each round, until they name no new process

SUPERVISOR, ANCHOR, REDIS = "supervisor", "anchor", "redis"
# What became of a process (a stop record's `how`); only NOT_STOPPED is a failure.
STOPPED, HANDED_BACK, KILLED, UNREGISTERED, LEFT, NOT_STOPPED = (
    "stopped", "handed back", "killed", "unregistered", "left running", "not stopped")


@dataclass
class Target:
    """One process of the mesh to stop, and what became of it."""

    name: str  # its session id, else its spawn key, else "anchor"
    kind: str  # SUPERVISOR or ANCHOR
    pid: int
    pid_start: int | None
    session: str | None = None
    role: str | None = None
    last_sent: float = 0.0
    handed_back: str | None = None  # the task it ran when asked to hand it back
    killed: bool = False
    seconds: float | None = None  # gone this long after the first SIGTERM


# --- pure decisions -----------------------------------------------------------------------

def plan(states: list[dict], registered: list[dict], spawned: dict[str, int],
         anchor: dict | None) -> dict:
    """What to do with each process the records name. Input: the supervisors' states, the
    registry's sessions and the anchor's lock record, each with `alive` (proc.is_alive:
    None on another host); spawned maps a session id to the pid mesh-spawn recorded; the
    anchor has `ancestors` (pids). Returns {"stop": [Target], "dead": [session ids],
    "left": [stop records of what is not signalled]}, supervisors first."""
    stop: dict[int, Target] = {}
    dead, left = [], []
    for state in states:
        name, pid = state.get("session") or state.get("key"), state.get("supervisor_pid")
        if state["alive"]:
            stop[pid] = Target(name, SUPERVISOR, pid, state.get("supervisor_start"),
                               session=state.get("session"))
        elif state["alive"] is None:
            left.append(_elsewhere(name, pid, state.get("host")))
    for record in registered:
        sid, pid = record.get("id"), record.get("pid")
        target = stop.get(pid)
        if target is not None and target.pid_start == record.get("pid_start"):
            target.name, target.session, target.role = sid, sid, record.get("role")
        elif record["alive"] is False:
            dead.append(sid)
        elif record["alive"] is None:
            left = [r for r in left if (r["pid"], r.get("host")) != (pid, record.get("host"))]
            left.append(_elsewhere(sid, pid, record.get("host"), record.get("role")))
        elif spawned.get(sid) == pid:  # its supervisor has not written its state yet
            stop[pid] = Target(sid, SUPERVISOR, pid, record.get("pid_start"), session=sid,
                               role=record.get("role"))
        else:
            left.append(_left(sid, pid, LEFT, "not started by the mesh", record.get("role")))
    if anchor is not None:
        if anchor["alive"] is None:
            left.append(_elsewhere(ANCHOR, anchor["pid"], anchor.get("host")))
        elif anchor["alive"] and not set(anchor.get("ancestors", ())) & set(stop):
            stop[anchor["pid"]] = Target(ANCHOR, ANCHOR, anchor["pid"], anchor["pid_start"])
    return {"stop": list(stop.values()), "dead": dead, "left": left}


def _elsewhere(name: str, pid, host: str | None, role: str | None = None) -> dict:
    return dict(_left(name, pid, NOT_STOPPED, f"on host {host}, not signalled", role),
                host=host)


def _left(name: str, pid, how: str, why: str, role: str | None = None) -> dict:
    """The stop record of a process that is not signalled."""
    return {"kind": "stop", "name": name, "role": role, "pid": pid, "how": how, "why": why}


def escalate(kind: str, elapsed: float, since_last: float, timeout: float) -> int | None:
    """The signal due now for a process still alive `elapsed` seconds after its first
    SIGTERM, `since_last` after its latest: SIGTERM again for a supervisor past the timeout
    (its worker hands the task back), SIGKILL KILL_AFTER seconds later; else None."""
    if elapsed >= timeout + KILL_AFTER:
        return signal.SIGKILL
    if kind == SUPERVISOR and elapsed >= timeout and since_last >= RESEND:
        return signal.SIGTERM
    return None


def outcome(target: Target, gone: bool) -> dict:
    """The stop record of a target, once it is gone (or given up on)."""
    how = (NOT_STOPPED if not gone else KILLED if target.killed
           else HANDED_BACK if target.handed_back else STOPPED)
    record = {"ts": clock.iso(), "kind": "stop", "name": target.name, "role": target.role,
              "session": target.session, "pid": target.pid, "how": how,
              "task": target.handed_back, "seconds": round(target.seconds or 0.0, 3)}
    if not gone:
        record["why"] = f"still alive {KILL_AFTER:g}s after SIGKILL"
    return record


def summarise(records: list[dict], seconds: float) -> dict:
    """The final record: how many processes went and how, and what was not stopped."""
    count = {how: sum(r["how"] == how for r in records)
             for how in (STOPPED, HANDED_BACK, KILLED, UNREGISTERED, LEFT, NOT_STOPPED)}
    return {"ts": clock.iso(), "kind": "down", "stopped": count[STOPPED] + count[HANDED_BACK]
            + count[KILLED], "handed_back": [r["task"] for r in records if r["how"] == HANDED_BACK],
            "killed": count[KILLED], "unregistered": count[UNREGISTERED],
            "left": [r["name"] for r in records if r["how"] == LEFT],
            "not_stopped": [r["name"] for r in records if r["how"] == NOT_STOPPED],
            "seconds": round(seconds, 3), "nothing": not records}


def describe(record: dict) -> str:
    """A stop or down record as one line for a person."""
    if record["kind"] == "down":
        if record["nothing"]:
            return "✔ nothing runs"
        parts = [f"{record['stopped']} stopped"]
        if record["handed_back"]:
            parts.append(f"{len(record['handed_back'])} task(s) handed back")
        if record["not_stopped"]:
            parts.append("not stopped: " + ", ".join(record["not_stopped"]))
        mark = "✘" if record["not_stopped"] else "✔"
        return f"{mark} mesh down in {record['seconds']:.1f}s: {', '.join(parts)}"
    how, who = record["how"], f"{record['name']} pid {record.get('pid')}"
    if how == STOPPED:
        return f"✔ {who} stopped ({record['seconds']:.1f}s)"
    if how == HANDED_BACK:
        return f"✔ {who} stopped, task {record['task']} handed back ({record['seconds']:.1f}s)"
    if how == KILLED:
        return f"✔ {who} killed after {record['seconds']:.0f}s"
    if how == UNREGISTERED:
        return f"✔ {record['name']} was dead: unregistered"
    if how == LEFT:
        return f"- {who} left running: {record['why']}"
    return f"✘ {who} not stopped: {record['why']}"


# --- the records --------------------------------------------------------------------------

def survey(home) -> dict:
    """The plan for this mesh now, from its records (see plan)."""
    from ..agents import spawns
    from ..agents.anchor import anchor_holder
    from ..agents.supervisor import control
    from ..coord import registry

    states, spawned = [], {}
    try:
        names = sorted(os.listdir(home.spawns))
    except FileNotFoundError:
        names = []
    for name in names:
        try:
            if name.endswith(".spawn.json"):
                info = spawns.read(home, name[:-len(".spawn.json")]) or {}
                spawned[info.get("session")] = info.get("pid")
            elif name.endswith(".json"):
                state = control.read_state(home, name[:-len(".json")])
                if isinstance(state, dict):
                    states.append(dict(state, alive=_alive(state.get("supervisor_pid"),
                                                           state.get("supervisor_start"),
                                                           state.get("host"))))
        except errors.BadInput:  # not a name the mesh writes: not its record
            continue
    registered = [dict(r, alive=_alive(r.get("pid"), r.get("pid_start"), r.get("host")))
                  for r in registry.all_sessions(home)]
    anchor = anchor_holder(home)
    if anchor is not None:
        anchor["alive"] = _alive(anchor["pid"], anchor["pid_start"], anchor["host"])
        anchor["ancestors"] = ([pid for pid, _ in proc.ancestors(anchor["pid"])[1:]]
                               if anchor["alive"] else [])
    return plan(states, registered, spawned, anchor)


def _alive(pid, started, host) -> bool | None:
    """proc.is_alive, but a record without a start time cannot prove that its pid is still
    the process it names: never signalled (False)."""
    alive = proc.is_alive(pid, started, host)
    return alive if alive is None or started is not None else False


# --- stopping -----------------------------------------------------------------------------

def down(home, todo: dict, timeout: float, redis: bool = False,
         external_redis: bool = False, report=lambda record: None) -> dict:
    """Carry out a plan (survey's): stop its processes (all at once, waited for together),
    unregister the sessions they leave behind and the dead ones, and with redis=True stop
    the embedded Redis last (not an external one: reported as left). report(record) sees
    each stop record as it happens; returns the summary (also reported)."""
    from ..queue.server import EmbeddedRedis

    began = time.monotonic()
    embedded = EmbeddedRedis(home)
    records = [dict(record, ts=clock.iso()) for record in todo["left"]]
    for record in records:
        report(record)
    targets, tried = todo["stop"], set()
    for _ in range(RESCANS):
        for record in _stop_all(home, targets, timeout, embedded.pid()):
            records.append(record)
            report(record)
        tried |= {(t.pid, t.pid_start) for t in targets}
        # what started meanwhile without holding off down (core.lifecycle) is stopped too
        targets = [t for t in survey(home)["stop"] if (t.pid, t.pid_start) not in tried]
        if not targets:
            break
    for sid in todo["dead"]:
        if _leave(home, sid, sessions.DEAD):
            records.append({"ts": clock.iso(), "kind": "stop", "name": sid, "session": sid,
                            "how": UNREGISTERED})
            report(records[-1])
    if redis:
        record = _stop_redis(embedded, external_redis)
        if record is not None:
            records.append(record)
            report(record)
    summary = summarise(records, time.monotonic() - began)
    if not summary["nothing"]:
        events.emit(home, "mesh.down", stopped=summary["stopped"],
                    handed_back=summary["handed_back"], not_stopped=summary["not_stopped"])
    report(summary)
    return summary


def _stop_all(home, targets: list[Target], timeout: float, redis_pid: int | None):
    """SIGTERM to every target, then wait for all of them together, escalating each on its
    own (escalate); yields each one's stop record as it goes."""
    began = time.monotonic()
    for target in targets:  # supervisors first (plan's order)
        _signal(target, signal.SIGTERM, began)
    spare = {redis_pid, *(t.pid for t in targets)}  # stopped on their own, not killed
    pending = list(targets)
    while pending:
        now = time.monotonic()
        for target in list(pending):
            elapsed = now - began
            if not proc.is_alive(target.pid, target.pid_start):
                target.seconds = elapsed
                pending.remove(target)
                if target.session:
                    _leave(home, target.session, sessions.MESH_DOWN)  # if it could not
                yield outcome(target, gone=True)
            elif target.killed and elapsed >= timeout + 2 * KILL_AFTER:
                pending.remove(target)
                yield outcome(target, gone=False)
            elif not target.killed:
                due = escalate(target.kind, elapsed, now - target.last_sent, timeout)
                if due == signal.SIGKILL:
                    tree = proc.descendants(spare=spare.__contains__, root=target.pid)
                    proc.signal_all([(target.pid, target.pid_start), *tree], signal.SIGKILL)
                    target.killed, target.handed_back = True, None
                elif due is not None:
                    if target.handed_back is None:
                        target.handed_back = _task_of(home, target)
                    _signal(target, due, now)
        if pending:
            time.sleep(POLL)


def _signal(target: Target, signum: int, now: float) -> None:
    proc.signal_all([(target.pid, target.pid_start)], signum)  # only the very process
    target.last_sent = now


def _task_of(home, target: Target) -> str | None:
    """The task a session runs now (its registry record): the one a second SIGTERM hands back."""
    from ..coord import registry

    record = registry.get(home, target.session) if target.session else None
    return (record or {}).get("task")


def _leave(home, session_id: str, reason: str) -> dict | None:
    """Unregister a session whose process is gone (and free its locks), unless it already
    left (a supervisor does on a clean stop) or a new process took its id over."""
    try:
        return sessions.leave(home, session_id, reason)
    except errors.BadInput:
        return None


def _stop_redis(embedded, external: bool) -> dict | None:
    """Stop the embedded Redis (its record), None if it is not running; an external one
    (--redis-url) is not the mesh's to stop."""
    if external:
        return dict(_left(REDIS, None, LEFT, "an external redis (--redis-url) is not the "
                                             "mesh's own"), ts=clock.iso())
    began, pid = time.monotonic(), embedded.pid()
    if pid is None or not embedded.stop():
        return None
    return {"ts": clock.iso(), "kind": "stop", "name": REDIS, "pid": pid, "how": STOPPED,
            "seconds": round(time.monotonic() - began, 3)}
