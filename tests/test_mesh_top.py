"""mesh-top (meshctl top): the dash's snapshot as JSON lines or tables, once or -n N."""

from meshtools.dash import text, top

from .helpers import dash_snapshot, on_terminal, wait_until


def test_records_have_a_kind_each_and_panels_pick_them():
    snapshot = dash_snapshot(peers=6, events=5, gpus=2)
    found = top.records(snapshot)
    kinds = {r["kind"] for r in found}
    assert {"redis", "session", "queue", "dead", "budget", "service", "offload", "gpu",
            "problem"} <= kinds and "event" not in kinds
    assert all(r["ts"] for r in found)
    peers = [r for r in found if r["kind"] == "session"]
    assert peers[0]["cpu"] is not None and peers[0]["forecast"] == "clean"  # joined rows
    assert {r["kind"] for r in top.records(snapshot, ["gpus"])} == {"gpu"}
    assert len(top.records(snapshot, ["events"])) == 5
    none = dict(snapshot, gpus=[], sources={"gpus": {"absent": "no GPU (no driver)"}})
    assert top.records(none, ["gpus"])[0]["absent"] == "no GPU (no driver)"


def test_terminal_lines_are_compact_and_fit_the_width():
    snapshot = dash_snapshot(peers=6, events=5, gpus=2)
    snapshot["services"] = [{"name": "searx", "ok": True, "latency_ms": 12.0, "detail": None}]
    for columns in (140, 60):
        shown = top.lines(snapshot, top.DEFAULT, columns)
        assert all(text.width(line) <= columns for line in shown), (columns, shown)
        assert shown[0].startswith("redis     up 7.2 at unix:///m/redis.sock, round trip")
        header = next(line for line in shown if "PEER" in line)
        assert ("BRANCH" in header) == (columns == 140) and "STATE" in header
        queues = shown.index("queues")
        assert shown[queues + 1].split() == ["QUEUE", "DEPTH", "PENDING", "OLDEST", "WORKERS",
                                             "DEAD"]
        assert [line.split()[0] for line in shown[queues + 2:queues + 4]] == ["default",
                                                                              "builder"]
        assert shown[queues + 4] == "dead      1 letter: 1700000000000-0"
        assert shown[queues + 5] == "budget    $1.25 spent today of $10.00 a day"
        assert any(line.startswith("services  searx ✔ 12ms") for line in shown)
        assert sum(line.startswith("GPU") for line in shown) == 2
        assert any(line.startswith("✘ ") for line in shown)
    assert not any(line.startswith("  t") and "…" in line
                   for line in top.lines(snapshot, ["problems"], 40))  # wrapped, not cut


def test_mesh_top_once_n_rounds_json_kinds_and_one_panel(run, repo):
    run("meshctl", "init", "--agent", "shell", "--roles", "builder,-anchor", check=0,
        timeout=120)
    try:
        wait_until(lambda: any(r["kind"] == "queue" for r in run("mesh-top").records),
                   timeout=30)  # the worker made its queue
        once = run("mesh-top", check=0)
        kinds = [r["kind"] for r in once.records]
        assert kinds[0] == "redis" and "session" in kinds and "queue" in kinds
        assert "gpu" in kinds and "budget" in kinds
        session, = [r for r in once.records if r["kind"] == "session"]
        assert session["id"] == "builder-1" and session["branch"] == "mesh/builder"
        assert session["forecast"] == "clean" and session["rss"] > 0
        twice = run("meshctl", "top", "-n", "2", "--interval", "0.2", check=0)
        assert [r["kind"] for r in twice.records].count("redis") == 2
        only = run("mesh-top", "--panel", "peers", "--panel", "problems", check=0)
        assert {r["kind"] for r in only.records} == {"session"}  # no problem: none
        run("queue-pause", "--for", "1m", check=0)
        problems = run("mesh-top", "--panel", "problems", check=0).records
        assert [p["problem"] for p in problems] == ["paused"]
        code, shown, err = on_terminal(["mesh-top", "--panel", "peers", "--panel", "redis"],
                                       columns=70)
        assert code == 0 and err == ""
        lines = shown.splitlines()
        assert lines[0].strip() == "peers" and lines[1].split()[:3] == ["PEER", "ROLE", "STATE"]
        assert "BRANCH" not in lines[1] and "builder-1" in lines[2]  # dropped to fit
        assert lines[3].startswith("redis     up ") and all(len(line) <= 70 for line in lines)
        assert "\x1b" not in shown  # NO_COLOR (conftest) and plain text anyway
        bad = run("mesh-top", "--panel", "nope", check=64)
        assert "nope" in bad.stderr
    finally:
        run("meshctl", "down", timeout=120)
