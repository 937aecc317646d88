"""coord under real concurrency: racing processes, then invariants."""

import multiprocessing
import os
import random
import time

import pytest

from meshtools.coord import inbox, registry
from meshtools.core.errors import BadInput, Busy
from meshtools.core.home import MeshHome

CTX = multiprocessing.get_context("fork")


def _register_same_id(home, barrier, results):
    barrier.wait()
    try:
        registry.register(MeshHome(home), "builder", "contested", os.getpid())
        results.put("won")
    except Busy:
        results.put("refused")
    barrier.wait()  # stay alive until every racer has tried: a dead winner may be taken over


def test_racing_registrations_of_one_id_have_one_winner(mesh_home):
    n = 8
    barrier, results = CTX.Barrier(n), CTX.Queue()
    procs = [CTX.Process(target=_register_same_id, args=(str(mesh_home), barrier, results))
             for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["refused"] * (n - 1) + ["won"]


def _send_numbered(home, sender, count, barrier):
    home = MeshHome(home)
    barrier.wait()
    for n in range(count):
        inbox.deliver(home, inbox.message(sender, "target", body=f"{sender}:{n}"))


def _receive_until(home, stop_at, results):
    home = MeshHome(home)
    got = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got += [m["body"] for m in inbox.receive(home, "target")]
        if os.path.exists(stop_at) and not os.listdir(os.path.join(home.inboxes, "target", "new")):
            got += [m["body"] for m in inbox.receive(home, "target")]
            break
        time.sleep(0.001)
    results.put(got)


def test_concurrent_senders_and_readers_lose_and_duplicate_nothing(mesh_home, tmp_path):
    senders, per_sender = 4, 300
    stop_at = str(tmp_path / "senders-done")
    barrier, results = CTX.Barrier(senders), CTX.Queue()
    readers = [CTX.Process(target=_receive_until, args=(str(mesh_home), stop_at, results))
               for _ in range(2)]
    writers = [CTX.Process(target=_send_numbered, args=(str(mesh_home), f"s{i}", per_sender, barrier))
               for i in range(senders)]
    for p in readers + writers:
        p.start()
    for p in writers:
        p.join(timeout=120)
        assert p.exitcode == 0
    open(stop_at, "w").close()
    received = [body for _ in readers for body in results.get(timeout=120)]
    for p in readers:
        p.join(timeout=30)
    expected = {f"s{i}:{n}" for i in range(senders) for n in range(per_sender)}
    assert len(received) == len(expected)  # nothing read twice
    assert set(received) == expected  # nothing lost
    box = mesh_home / "inbox" / "target"
    assert not list((box / "new").iterdir()) and not list((box / "tmp").iterdir())
    assert len(list((box / "cur").iterdir())) == len(expected)


def _random_ops(home, seed, ops, results):
    rng = random.Random(seed)
    home = MeshHome(home)
    sent = []
    ids = [f"peer-{i}" for i in range(4)]
    for n in range(ops):
        op = rng.choice(["register", "heartbeat", "unregister", "send", "send", "peers"])
        sid = rng.choice(ids)
        try:
            if op == "register":
                registry.register(home, "builder", sid, os.getpid())
            elif op == "heartbeat":
                registry.heartbeat(home, sid, phase=f"p{n}")
            elif op == "unregister":
                registry.unregister(home, sid)
            elif op == "send":
                record = inbox.message(f"w{seed}", sid, body=f"w{seed}:{n}")
                inbox.deliver(home, record)
                sent.append(record["body"])
            else:
                registry.all_sessions(home, warn=lambda m: results.put(("corrupt", m)))
        except (Busy, BadInput):
            pass  # id held by a live racer, or unregistered by one: documented answers
    results.put(("sent", sent))


@pytest.mark.slow
def test_thousands_of_random_ops_keep_the_registry_and_inboxes_whole(mesh_home):
    workers, ops = 4, 600
    results = CTX.Queue()
    procs = [CTX.Process(target=_random_ops, args=(str(mesh_home), seed, ops, results))
             for seed in range(workers)]
    for p in procs:
        p.start()
    reports = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert [r for r in reports if r[0] == "corrupt"] == []
    sent = [body for kind, bodies in reports if kind == "sent" for body in bodies]
    home = MeshHome(str(mesh_home))
    for record in registry.all_sessions(home, warn=pytest.fail):
        assert record["kind"] == "session" and record["id"].startswith("peer-")
    delivered = []
    for box in (mesh_home / "inbox").iterdir():
        delivered += [m["body"] for m in inbox.receive(home, box.name, peek=True)]
    assert sorted(delivered) == sorted(sent) and len(sent) > 500
