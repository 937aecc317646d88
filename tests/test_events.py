"""The event log and its mirror in the Redis events stream: every event once, in order,
across rotations and with forwarders racing (real processes, the embedded redis-server)."""

import json
import os
import subprocess
import sys

from meshtools.core import events
from meshtools.core.home import MeshHome
from meshtools.queue import mirror
from meshtools.queue.names import Names

from .helpers import redis_of, wait_until


def home_of(mesh_home) -> MeshHome:
    return MeshHome(str(mesh_home))


def emit_numbered(home, start: int, count: int) -> None:
    for n in range(start, start + count):
        events.emit(home, "test.n", n=n)


def numbers(lines) -> list[int]:
    return [json.loads(line)["n"] for line in lines]


def mirrored(client) -> list[int]:
    return [json.loads(fields["e"])["n"] for _, fields in client.xrange("mesh:events")
            if fields.get("from") == "log"]


# --- reading the log by position ---------------------------------------------------------

def test_positions_resume_where_they_left_off(mesh_home):
    home = home_of(mesh_home)
    emit_numbered(home, 0, 5)
    first, position = events.lines_after(home, None, limit=3)
    assert numbers(first) == [0, 1, 2]
    emit_numbered(home, 5, 2)
    rest, end = events.lines_after(home, position)
    assert numbers(rest) == [3, 4, 5, 6]
    assert events.lines_after(home, end) == ([], end)
    assert numbers(events.lines_after(home, None, until=position)[0]) == [0, 1, 2]


def test_a_line_still_being_written_waits_for_its_end(mesh_home):
    home = home_of(mesh_home)
    emit_numbered(home, 0, 1)
    with open(home.events_file, "a") as f:
        f.write('{"event": "test.n", "n": 1')  # no newline yet
    lines, position = events.lines_after(home, None)
    assert numbers(lines) == [0]
    with open(home.events_file, "a") as f:
        f.write("}\n")
    assert numbers(events.lines_after(home, position)[0]) == [1]


def test_a_position_survives_a_rotation_and_restarts_after_two(mesh_home):
    home = home_of(mesh_home)
    emit_numbered(home, 0, 3)
    _, position = events.lines_after(home, None, limit=1)
    os.replace(home.events_file, home.events_file + ".1")  # what emit does past the cap
    emit_numbered(home, 3, 2)
    assert numbers(events.lines_after(home, position)[0]) == [1, 2, 3, 4]
    os.replace(home.events_file, home.events_file + ".1")  # rotated again: 0..2 are gone
    emit_numbered(home, 5, 1)
    assert numbers(events.lines_after(home, position)[0]) == [3, 4, 5]


# --- the mirror ----------------------------------------------------------------------------

def test_forward_copies_each_event_once(mesh_home):
    home = home_of(mesh_home)
    client = redis_of(mesh_home)
    emit_numbered(home, 0, 1200)
    copied, _ = mirror.forward(client, Names(), home, batch=500)
    assert copied == 1200
    assert mirror.forward(client, Names(), home) == (0, client.get("mesh:events:forwarded"))
    emit_numbered(home, 1200, 3)
    with open(home.events_file, "a") as f:
        f.write("not json\n")
    assert mirror.forward(client, Names(), home)[0] == 3
    assert mirrored(client) == list(range(1203))


RACER = """
import sys
from meshtools.core import events
events.MAX_BYTES = int(sys.argv[4])  # rotate often (the real cap is 8 MiB)
from meshtools.core.home import MeshHome
from meshtools.queue import mirror
from meshtools.queue.connection import connect
from meshtools.queue.names import Names

home = MeshHome(sys.argv[1])
client = connect(home)
writer = sys.argv[2] == "write"
for n in range(int(sys.argv[3]), int(sys.argv[3]) + 300):
    if writer:
        events.emit(home, "test.n", n=n)
    mirror.forward(client, Names(), home, batch=7)
"""


def test_racing_writers_and_forwarders_copy_every_event_exactly_once(mesh_home):
    """Two processes append events, three others only forward, all at once; the stream gets
    each event once, and each writer's events in the order it wrote them."""
    home = home_of(mesh_home)
    client = redis_of(mesh_home)
    race(mesh_home, cap=10 << 20)
    mirror.forward(client, Names(), home)
    got = mirrored(client)
    assert sorted(got) == list(range(300)) + list(range(1000, 1300))
    assert [n for n in got if n < 1000] == list(range(300))
    assert [n for n in got if n >= 1000] == list(range(1000, 1300))


def test_racing_forwarders_never_copy_twice_across_rotations(mesh_home):
    """The same race with the log rotated every few dozen events (the real cap is 8 MiB).
    When rotations outrun the copiers, a file rotated away twice before it was copied is
    missed; but nothing is ever copied twice, each writer's events keep their order, and
    the live file is all there."""
    home = home_of(mesh_home)
    client = redis_of(mesh_home)
    race(mesh_home, cap=4000)
    mirror.forward(client, Names(), home)
    got = mirrored(client)
    assert len(got) == len(set(got))
    assert [n for n in got if n < 1000] == sorted(n for n in got if n < 1000)
    assert [n for n in got if n >= 1000] == sorted(n for n in got if n >= 1000)
    live = numbers(events.lines_after(home, None)[0])
    assert set(live) <= set(got) and len(live) > 0


def race(mesh_home, cap: int) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(mesh_home), role, str(start),
                               str(cap)])
             for role, start in [("write", 0), ("write", 1000), ("forward", 0),
                                 ("forward", 0), ("forward", 0)]]
    for p in procs:
        assert p.wait(timeout=120) == 0


def test_mesh_events_shows_log_and_queue_events_once_each(run, mesh_home):
    run("coord-register", "--id", "alpha", "--role", "builder", check=0)
    run("queue-push", "--id", "t1", "true", check=0)
    first = [e["event"] for e in run("mesh-events", check=0).records]
    assert first.count("session.registered") == 1 and first.count("task.enqueued") == 1
    client = redis_of(mesh_home)
    assert [json.loads(f["e"])["event"] for _, f in client.xrange("mesh:events")
            if f.get("from") == "log"] == ["session.registered"]  # mesh-events copied it
    again = [e["event"] for e in run("mesh-events", check=0).records]
    assert again == first


def test_follow_sees_a_file_event_live(run, mesh_home):
    run("queue-push", "--id", "t1", "true", check=0)  # Redis is up
    follower = subprocess.Popen(["mesh-events", "--follow", "--event", "session."],
                                stdout=subprocess.PIPE, text=True)
    try:
        run("coord-register", "--id", "late", "--role", "research", check=0)
        line = follower.stdout.readline()
        assert json.loads(line)["event"] == "session.registered"
        assert json.loads(line)["id"] == "late"
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    wait_until(lambda: follower.returncode is not None)


def test_events_carry_no_secret_but_keep_token_counts(mesh_home, monkeypatch):
    home = home_of(mesh_home)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "opaque-auth-value-1234")
    events.emit(home, "agent.done", tokens={"input": 3, "output": 5}, input_tokens=8,
                note="ran with opaque-auth-value-1234 and Bearer abcdefghijklmnop0123",
                auth_token="t0ps3cret")
    client = redis_of(mesh_home)
    mirror.forward(client, Names(), home)
    [logged] = list(events.read(home))
    [(_, fields)] = client.xrange("mesh:events")
    for record in (logged, json.loads(fields["e"])):
        assert record["tokens"] == {"input": 3, "output": 5} and record["input_tokens"] == 8
        assert record["auth_token"] == "[redacted]"
        assert record["note"] == "ran with [redacted] and Bearer [redacted]"
    assert "opaque-auth" not in open(home.events_file).read()
