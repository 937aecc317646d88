"""The queue operations. Every state change is one Lua script, so it is atomic: a result is
recorded together with its XACK (a crash leaves a duplicate run, never a lost task), and a
task id gets exactly one final result however often it runs.

Task ids live in a hash (tasks:index) with their state: `queued`, `done:<result entry>` or
`dead:<result entry>`. Pushing a known id is a no-op.

Whatever goes to Redis (a task, a result, a reason) is redacted here first (core.redact):
the scripts write it verbatim, and Redis keeps it in its append-only file.

Pausing the mesh and the daily budget are not queue operations: queue/pause.py owns them.
"""

import json
import time

from ..core import clock, errors
from ..core.redact import redact
from .names import GROUP, Names

EVENTS_MAXLEN = 10_000
RESULTS_MAXLEN = 1_000_000

_EVENT = """
local function event(fields)
  fields['ts'] = ARGV[1]
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', %d, '*', 'e', cjson.encode(fields))
end
""" % EVENTS_MAXLEN

# KEYS: events, index, queue   ARGV: ts, id, task json, queue name
PUSH = _EVENT + """
local state = redis.call('HGET', KEYS[2], ARGV[2])
if state then return {0, state} end
redis.call('HSET', KEYS[2], ARGV[2], 'queued')
local entry = redis.call('XADD', KEYS[3], '*', 'task', ARGV[3])
event({event='task.enqueued', id=ARGV[2], queue=ARGV[4], entry=entry})
return {1, entry}
"""

# KEYS: events, index, queue, results   ARGV: ts, id, entry, group, result json, status, final state
FINISH = _EVENT + """
redis.call('XACK', KEYS[3], ARGV[4], ARGV[3])
redis.call('XDEL', KEYS[3], ARGV[3])
local state = redis.call('HGET', KEYS[2], ARGV[2])
if state and (string.sub(state, 1, 5) == 'done:' or string.sub(state, 1, 5) == 'dead:') then
  event({event='task.duplicate', id=ARGV[2], kept=state})
  return false
end
local rid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', %d, '*', 'result', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[7] .. ':' .. rid)
event({event='task.' .. ARGV[6], id=ARGV[2], result=rid})
return rid
""" % RESULTS_MAXLEN

# KEYS: events, index, queue, dead   ARGV: ts, id, entry, group, task json, reason
# (the final result is written by FINISH in the same pipeline transaction)
DEAD_LETTER = _EVENT + """
redis.call('XADD', KEYS[4], '*', 'task', ARGV[5], 'reason', ARGV[6], 'ts', ARGV[1])
event({event='task.dead_lettered', id=ARGV[2], reason=ARGV[6]})
return 1
"""

# KEYS: events, index, queue, attempts   ARGV: ts, id, entry, group, task json, why, undo
REQUEUE = _EVENT + """
redis.call('XACK', KEYS[3], ARGV[4], ARGV[3])
redis.call('XDEL', KEYS[3], ARGV[3])
local state = redis.call('HGET', KEYS[2], ARGV[2])
if state ~= 'queued' then return false end
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[4], ARGV[2], -1) end
local entry = redis.call('XADD', KEYS[3], '*', 'task', ARGV[5])
event({event='task.' .. ARGV[6], id=ARGV[2], entry=entry})
return entry
"""

# KEYS: queue   ARGV: group, entry, consumer. Reset the entry's idle time only while it is
# still the consumer's: a worker never takes back an entry another has claimed.
TOUCH = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""

# KEYS: queue   ARGV: group, consumer. Checked and deleted in one step, so an entry delivered
# in between can never be dropped with the consumer (it would become unclaimable).
LEAVE = """
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if pending['err'] then return 1 end
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

class Broker:
    def __init__(self, client, names: Names):
        self.redis = client
        self.names = names
        self._push = client.register_script(PUSH)
        self._finish = client.register_script(FINISH)
        self._dead = client.register_script(DEAD_LETTER)
        self._requeue = client.register_script(REQUEUE)
        self._leave = client.register_script(LEAVE)
        self._touch = client.register_script(TOUCH)

    # --- producing ------------------------------------------------------------------------

    @staticmethod
    def queue_for(task: dict, explicit: str | None = None, roles: dict | None = None) -> str:
        """The queue of the task's role (explicit, else the task's `role`) as the mesh's
        roles configure it (roles.toml `queue`), else default; an unknown role is refused
        (65). Static: a push is checked before it connects."""
        name = explicit or task.get("role")
        if name is None:
            return "default"
        from ..core.roles import queue_of

        return queue_of(roles or {}, name)

    def push(self, tasks: list[tuple[dict, str]]) -> list[dict]:
        """Enqueue (task, queue name) pairs in one transaction; returns a record per task,
        `duplicate` when its id was already known."""
        now = clock.iso()
        tasks = [(redact(task), queue) for task, queue in tasks]
        pipe = self.redis.pipeline(transaction=True)
        for task, queue in tasks:
            self._push(keys=[self.names.events, self.names.index, self.names.queue(queue)],
                       args=[now, task["id"], json.dumps(task), queue], client=pipe)
        replies = pipe.execute()
        records = []
        for (task, queue), (fresh, detail) in zip(tasks, replies):
            record = {"ts": now, "kind": "task", "id": task["id"], "queue": queue,
                      "prompt": task["prompt"]}
            if fresh:
                record["entry"] = detail
            else:
                record.update(duplicate=True, state=detail.split(":")[0])
            records.append(record)
        return records

    # --- consuming ------------------------------------------------------------------------

    def ensure_group(self, queue: str) -> None:
        import redis

        try:
            self.redis.xgroup_create(self.names.queue(queue), GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read(self, client, consumer: str, queues: list[str], own: bool, block_ms: int):
        """One entry: from this consumer's own pending list (own=True) or new ones.
        Returns (queue name, entry id, fields) or None."""
        streams = {self.names.queue(q): ("0" if own else ">") for q in queues}
        reply = client.xreadgroup(GROUP, consumer, streams, count=1,
                                  block=None if own else block_ms)
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                return stream.removeprefix(self.names.queue_prefix), entry_id, fields
        return None

    def start_attempt(self, task_id: str) -> int:
        return int(self.redis.hincrby(self.names.attempts, task_id, 1))

    def finish(self, queue: str, entry: str, task: dict, result: dict,
               final_state: str = "done", pipe=None) -> str | None:
        """Record the final result and ACK, atomically; None when the task already had one."""
        return self._finish(
            keys=[self.names.events, self.names.index, self.names.queue(queue), self.names.results],
            args=[clock.iso(), task["id"], entry, GROUP, json.dumps(redact(result)),
                  result["status"], final_state], client=pipe)

    def dead_letter(self, queue: str, entry: str, task: dict, result: dict, reason: str):
        pipe = self.redis.pipeline(transaction=True)
        self._dead(keys=[self.names.events, self.names.index, self.names.queue(queue),
                         self.names.dead],
                   args=[clock.iso(), task["id"], entry, GROUP,
                         json.dumps(redact(dict(task, _queue=queue))), redact(reason)],
                   client=pipe)
        self.finish(queue, entry, task, dict(result, dead_letter=True, reason=reason),
                    final_state="dead", pipe=pipe)
        return pipe.execute()[-1]

    def requeue(self, queue: str, entry: str, task: dict, why: str, undo_attempt: bool) -> str | None:
        """Put the task back at the end of its queue (a retry, or a hand-back)."""
        return self._requeue(
            keys=[self.names.events, self.names.index, self.names.queue(queue),
                  self.names.attempts],
            args=[clock.iso(), task["id"], entry, GROUP, json.dumps(redact(task)), why,
                  "1" if undo_attempt else "0"])

    def ack_empty(self, queue: str, entry: str) -> None:
        """An entry trimmed while pending comes back empty: ACK it, nothing to run."""
        self.redis.xack(self.names.queue(queue), GROUP, entry)

    # --- reclaiming -----------------------------------------------------------------------

    def claim_from(self, queue: str, dead_consumer: str, me: str, min_idle_ms: int = 1000) -> int:
        """Move a dead consumer's pending entries to me; returns how many moved. min_idle
        keeps two reclaimers from taking an entry from each other: a claim resets it."""
        stream = self.names.queue(queue)
        pending = self.redis.xpending_range(stream, GROUP, min="-", max="+", count=1000,
                                            consumername=dead_consumer)
        if not pending:
            return 0
        ids = [p["message_id"] for p in pending]
        return len(self.redis.xclaim(stream, GROUP, me, min_idle_ms, ids, justid=True))

    def claim_idle(self, queue: str, me: str, min_idle_ms: int, spare=lambda name: False) -> int:
        """The lease fallback: claim entries idle past min_idle_ms from any consumer but
        those spare(name) keeps (a worker that may still run them), a page at a time."""
        stream, start, moved = self.names.queue(queue), "-", 0
        while True:
            page = self.redis.xpending_range(stream, GROUP, min=start, max="+", count=100,
                                             idle=min_idle_ms)
            ids = [p["message_id"] for p in page if not spare(p["consumer"])]
            if ids:
                moved += len(self.redis.xclaim(stream, GROUP, me, min_idle_ms, ids, justid=True))
            if len(page) < 100:
                return moved
            start = "(" + page[-1]["message_id"]

    def touch(self, queue: str, me: str, entry: str) -> bool:
        """Reset my entry's idle time, so the lease fallback never steals it; False when
        it is no longer mine."""
        return bool(self._touch(keys=[self.names.queue(queue)], args=[GROUP, entry, me]))

    # --- workers' heartbeats --------------------------------------------------------------

    def beat(self, consumer: str, record: dict) -> None:
        self.redis.hset(self.names.workers, consumer, json.dumps(dict(record, beat=time.time())))

    def workers(self) -> dict[str, dict]:
        return {name: json.loads(value)
                for name, value in self.redis.hgetall(self.names.workers).items()}

    def leave(self, queues: list[str], consumer: str) -> bool:
        """Delete the consumer from the group of each queue where nothing is pending under
        its name (XGROUP DELCONSUMER would make such entries unclaimable), so departed
        workers do not stay listed. True when it left them all (or was never there)."""
        return all([self._leave(keys=[self.names.queue(queue)], args=[GROUP, consumer])
                    for queue in queues])

    def forget_worker(self, consumer: str, queues: list[str]) -> bool:
        """Drop a dead worker once nothing is pending under its name on any of its queues.
        True when forgotten."""
        if not self.leave(queues, consumer):
            return False
        self.redis.hdel(self.names.workers, consumer)
        return True

    def queues(self) -> list[str]:
        prefix = self.names.queue_prefix
        return sorted(k.removeprefix(prefix) for k in self.redis.scan_iter(prefix + "*")
                      if self.redis.type(k) == "stream")


# KEYS: events, index, attempts, dead, queue   ARGV: ts, dead entry id, task id, task json, queue
# Only a letter whose id is still `dead:` goes back (or one whose id was forgotten, as a push
# would): a letter that duplicates a task done since, or one whose id another letter already
# re-queued, is dropped, so the id never runs twice nor gets a second final result.
RETRY_DEAD = _EVENT + """
if redis.call('XDEL', KEYS[4], ARGV[2]) == 0 then return false end
local state = redis.call('HGET', KEYS[2], ARGV[3])
if state and string.sub(state, 1, 5) ~= 'dead:' then
  event({event='task.retry_skipped', id=ARGV[3], kept=state})
  return {0, state}
end
redis.call('HSET', KEYS[2], ARGV[3], 'queued')
redis.call('HDEL', KEYS[3], ARGV[3])
local entry = redis.call('XADD', KEYS[5], '*', 'task', ARGV[4])
event({event='task.retried', id=ARGV[3], queue=ARGV[5], entry=entry})
return {1, entry}
"""

# KEYS: events, index, attempts, dead   ARGV: ts, dead entry id, task id
# The id is forgotten only while its index still says `dead:`: a letter that duplicates a
# task already done, or one whose id was retried (`queued`) since, leaves that state alone.
PURGE_DEAD = _EVENT + """
if redis.call('XDEL', KEYS[4], ARGV[2]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[2], ARGV[3])
local forgotten = state ~= false and string.sub(state, 1, 5) == 'dead:'
if forgotten then
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
end
event({event='task.purged', id=ARGV[3], forgotten=forgotten})
return 1
"""


class DeadLetters:
    """tasks:dead: list, retry (back to its queue as new), purge (forgotten for good)."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self._retry = broker.redis.register_script(RETRY_DEAD)
        self._purge = broker.redis.register_script(PURGE_DEAD)

    def list(self) -> list[dict]:
        records = []
        for entry, fields in self.broker.redis.xrange(self.broker.names.dead):
            task = json.loads(fields["task"])
            queue = task.pop("_queue", "default")
            records.append({"ts": fields.get("ts"), "kind": "dead", "id": task["id"],
                            "queue": queue, "reason": fields.get("reason"),
                            "entry": entry, "task": task})
        return records

    def selected(self, ids, everything: bool = False) -> "list[dict]":
        """The letters named by id (BadInput for one that is not there), or all of them."""
        records = self.list()
        if everything:
            return records
        known = {r["id"] for r in records}
        missing = [i for i in ids if i not in known]
        if missing:
            raise errors.BadInput(f"not in the dead letters: {', '.join(missing)}")
        return [r for r in records if r["id"] in ids]

    @staticmethod
    def runnable(records: "list[dict]") -> "list[dict]":
        """records, each checked to be a task that can run again (BadInput naming the first
        that is not): all go back, or none."""
        from .tasks import RAW, normalise

        for record in records:
            if RAW in record["task"]:
                raise errors.BadInput(f"dead letter {record['id']} is no task "
                                      f"({record['reason']}): fix it and queue-push it")
            normalise(record["task"], f"dead letter {record['id']}")
        return records

    def retry(self, record: dict) -> tuple[bool, str] | None:
        """(True, new entry) when the letter went back on its queue; (False, the id's state)
        when it was a duplicate, dropped; None when the letter was gone already."""
        names = self.broker.names
        reply = self._retry(keys=[names.events, names.index, names.attempts, names.dead,
                                  names.queue(record["queue"])],
                            args=[clock.iso(), record["entry"], record["id"],
                                  json.dumps(record["task"]), record["queue"]])
        return (bool(reply[0]), reply[1]) if reply else None

    def purge(self, record: dict) -> bool:
        names = self.broker.names
        return bool(self._purge(keys=[names.events, names.index, names.attempts, names.dead],
                                args=[clock.iso(), record["entry"], record["id"]]))
