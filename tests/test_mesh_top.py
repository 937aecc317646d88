"""mesh-top (meshctl top): the dash's snapshot as JSON lines or tables, once or -n N."""

from meshtools.dash import top

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
        code, shown, err = on_terminal(["mesh-top", "--panel", "peers", "--panel", "redis"])
        assert code == 0 and err == ""
        lines = shown.splitlines()
        assert lines[0].strip() == "peers" and "PEER" not in lines[1]  # the columns' names
        assert "ID" in lines[1] and "FORECAST" in lines[1] and "builder-1" in shown
        assert "\x1b" not in shown  # NO_COLOR (conftest) and plain tables anyway
        bad = run("mesh-top", "--panel", "nope", check=64)
        assert "nope" in bad.stderr
    finally:
        run("meshctl", "down", timeout=120)
