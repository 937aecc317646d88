"""Deadlocks and races with real processes: never two holders, every cycle caught once."""

import json
import multiprocessing
import os
import random
import subprocess

import pytest

from meshtools.core import events
from meshtools.core.errors import Busy
from meshtools.core.home import MeshHome
from meshtools.locks.service import Deadlock, LockService

from .helpers import lock_table as table, wait_until


def hold(run, who, anchor, *paths):
    run("file-lock", "acquire", "--as", who, "--pid", str(anchor.pid), *paths, check=0)


def wait_in_background(who, anchor, path):
    return subprocess.Popen(["file-lock", "acquire", "--as", who, "--pid", str(anchor.pid), path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_party_deadlock_refuses_the_closer(repo, run, mesh_home, anchor_process):
    a, b = anchor_process(), anchor_process()
    hold(run, "A", a, "crates/core")
    hold(run, "B", b, "crates/cli")
    a_waits = wait_in_background("A", a, "crates/cli")
    wait_until(lambda: table(mesh_home)["waits"])
    closer = run("file-lock", "acquire", "--as", "B", "--pid", str(b.pid), "crates/core")
    assert closer.returncode == 75
    assert "deadlock: B waits for crates/core, held by A; A waits for crates/cli, held by B" \
        in closer.stderr
    assert a_waits.poll() is None  # the other side keeps waiting...
    run("file-lock", "release", "--as", "B", "crates/cli", check=0)  # ...until the victim yields
    out, _ = a_waits.communicate(timeout=10)
    assert a_waits.returncode == 0 and json.loads(out)["scope"] == "crates/cli"
    [event] = [e for e in events.read(MeshHome(str(mesh_home))) if e["event"] == "lock.deadlock"]
    assert event["victim"] == "B" and len(event["cycle"]) == 2


def test_three_party_cycle(repo, run, mesh_home, anchor_process):
    a, b, c = anchor_process(), anchor_process(), anchor_process()
    hold(run, "A", a, "crates/core")
    hold(run, "B", b, "crates/cli")
    hold(run, "C", c, "web")
    waiters = [wait_in_background("A", a, "crates/cli"), wait_in_background("B", b, "web")]
    wait_until(lambda: len(table(mesh_home)["waits"]) == 2)
    closer = run("file-lock", "acquire", "--as", "C", "--pid", str(c.pid), "crates/core")
    assert closer.returncode == 75 and closer.stderr.count("waits for") == 3
    assert all(w.poll() is None for w in waiters)
    for w in waiters:
        w.kill()
        w.wait()


def test_detection_is_immediate_not_a_timeout(repo, mesh_home, anchor_process):
    """The closer is refused on its first attempt, long before any wait would end."""
    a, b = anchor_process(), anchor_process()
    service = LockService(MeshHome(str(mesh_home)))
    alice, bob = service.claimant("A", a.pid), service.claimant("B", b.pid)
    service.acquire(alice, ["docs"])
    service.acquire(bob, ["web"])
    other = subprocess.Popen(["file-lock", "acquire", "--as", "A", "--pid", str(a.pid), "web"])
    wait_until(lambda: table(mesh_home)["waits"])
    with pytest.raises(Deadlock) as caught:
        service.acquire(bob, ["docs"], timeout=30)
    assert [tuple(e) for e in caught.value.cycle] == [("B", "docs", "A"), ("A", "web", "B")]
    assert table(mesh_home)["waits"] != {}  # only A's wait is left
    other.kill()
    other.wait()


def _worker(home, seed, ops, scopes, sentinels, results):
    """Random acquires, some holding one scope while waiting for another (so real deadlocks
    happen); a sentinel file created O_EXCL inside each held scope catches a second holder."""
    rng = random.Random(seed)
    service = LockService(MeshHome(home))
    me = service.claimant(f"w{seed}", owner_pid=os.getpid())
    stats = {"grants": [], "overlaps": 0, "deadlocks": 0, "busy": 0, "ops": 0}

    def enter(scope):
        try:
            os.close(os.open(os.path.join(sentinels, scope), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            stats["overlaps"] += 1

    def leave(held):
        for scope in held:
            try:
                os.unlink(os.path.join(sentinels, scope))
            except FileNotFoundError:  # a second holder already left
                stats["overlaps"] += 1
        service.release(me.id, held)

    for _ in range(ops):
        stats["ops"] += 1
        first, second = rng.sample(scopes, 2)
        timeout = rng.choice([0, 0.02, 1, None])
        try:
            granted = service.acquire(me, [first], timeout=timeout)
        except Busy:
            stats["busy"] += 1
            continue
        stats["grants"] += [h["generation"] for h in granted]
        enter(first)
        held = [first]
        if rng.random() < 0.5:  # hold and wait: the classic deadlock recipe
            try:
                granted = service.acquire(me, [second], timeout=rng.choice([0.05, None]))
                stats["grants"] += [h["generation"] for h in granted]
                enter(second)
                held.append(second)
            except Deadlock:
                stats["deadlocks"] += 1
            except Busy:
                stats["busy"] += 1
        leave(held)
    results.put(stats)


@pytest.mark.slow
def test_random_contention_never_two_holders(repo, mesh_home, tmp_path):
    sentinels = tmp_path / "inside"
    sentinels.mkdir()
    scopes = ["a", "b", "c"]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(mesh_home), seed, 300, scopes,
                                                 str(sentinels), results)) for seed in range(5)]
    for w in workers:
        w.start()
    stats = [results.get(timeout=240) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    grants = [g for s in stats for g in s["grants"]]
    assert sum(s["ops"] for s in stats) == 1500
    assert sum(s["overlaps"] for s in stats) == 0
    assert len(grants) == len(set(grants)) > 500  # every grant had its own fencing generation
    assert sum(s["deadlocks"] for s in stats) > 0  # the recipe really produced cycles
    final = table(mesh_home)
    assert final["locks"] == {} and final["waits"] == {}
    assert list(sentinels.iterdir()) == []
