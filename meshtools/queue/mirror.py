"""The event log mirrored into the events stream, each event exactly once.

Registry, inbox, locks, spawns and the anchor write their events to MESH_HOME/events.jsonl,
because those commands need no Redis; the queue writes its own straight into the stream.
forward() copies what the stream lacks of the log, so that a reader of the stream (the
dashboard, `mesh-events --follow`) sees the whole mesh. Copied entries carry `from: log`.

How far the log has been copied ("<file>:<offset>", see core.events.lines_after) is kept
beside the stream and moved by the same Lua script that adds the lines: several forwarders
(the anchor's loop, each mesh-events) may run at once, and one whose position is stale adds
nothing and reads on from the newer one. Nothing is copied twice; only if the log rotates
twice (8 MiB each) between two copies is the older file's rest missed.
"""

from ..core import events, jsonl
from .broker import EVENTS_MAXLEN

BATCH = 500

# KEYS: events, position   ARGV: expected position ('' = none), new position, lines...
FORWARD = """
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then return {0, current} end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', %d, '*', 'e', ARGV[i], 'from', 'log')
end
redis.call('SET', KEYS[2], ARGV[2])
return {1, ARGV[2]}
""" % EVENTS_MAXLEN


def forward(client, names, home, batch: int = BATCH) -> tuple[int, str | None]:
    """Copy the log's events that the stream lacks; how many this call copied, and the
    position the copy has reached."""
    script = client.register_script(FORWARD)
    position = client.get(names.events_position) or None
    copied = 0
    while True:
        lines, after = events.lines_after(home, position, limit=batch)
        if after == position:
            return copied, position
        records = [line for line in lines if jsonl.try_parse(line) is not None]
        done, now = script(keys=[names.events, names.events_position],
                           args=[position or "", after, *records])
        copied += len(records) if done else 0
        position = now or None



def read_after(client, names, after: str | None, count: int | None = None,
               block: int | None = None) -> tuple[list[dict], str | None]:
    """The stream's events after entry id `after`, oldest first, and the id to read on
    from. after None: the newest `count` (all without a count), for a reader that starts
    now and wants some history (the dash's feed); block: milliseconds to wait for one."""
    if after is None:
        entries = list(reversed(client.xrevrange(names.events, count=count))) if count \
            else client.xrange(names.events)
        after = entries[-1][0] if entries else "0-0"
    else:
        reply = client.xread({names.events: after}, count=count, block=block) or []
        entries = [entry for _, new in reply for entry in new]
        after = entries[-1][0] if entries else after
    records = [jsonl.try_parse(fields.get("e", "")) for _, fields in entries]
    return [r for r in records if r], after
