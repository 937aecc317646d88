"""End to end: spawned, supervised workers of three roles drain their queues through the
agent adapter (the claude stand-in), the anchor lands the builder's commit on main, a
conflicting pick leaves main alone, and a usage limit pauses the whole mesh."""

import json
import signal
import time

import psutil

from .helpers import commit, git, run_tree, wait_until

COMMIT = "git -c user.name=b -c user.email=b@b"


def spawn(run, role):
    return run("mesh-spawn", role, "--queue", "--detach", "--json", check=0,
               timeout=60).records[-1]


def result_of(run, task_id, timeout=60):
    return run("queue-results", "--wait", task_id, "--timeout", str(timeout), check=0,
               timeout=timeout + 10).records[0]


def stop_all(records):
    """SIGTERM each supervisor; return whatever of them or under them is still alive."""
    procs = []
    for record in records:
        try:
            tree = run_tree(record["pid"])
            procs += tree
            tree[0].send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    return psutil.wait_procs(procs, timeout=30)[1]


def test_three_roles_drained_landed_conflict_and_usage_limit(run, repo, mesh_home, claude_cli):
    workers = [spawn(run, role) for role in ("builder", "research", "security")]
    try:
        builder_wt = workers[0]["worktree"]
        run("queue-push", "--role", "builder", "--id", "b1", "\n".join([
            "@bash file-lock acquire crates/core",
            "@write crates/core/src/extra.rs pub fn h() {}",
            f"@bash git add -A && {COMMIT} commit -qm 'add extra.rs'",
            "@bash file-lock release --all"]), check=0)
        run("queue-push", "--role", "research", "--id", "r1",
            "What does crates/core export?\n@write README.md research must not write", check=0)
        run("queue-push", "--role", "security", "--id", "s1", "Audit the dependencies.", check=0)

        built, researched, audited = (result_of(run, t) for t in ("b1", "r1", "s1"))
        assert [r["status"] for r in (built, researched, audited)] == ["ok", "ok", "ok"]
        assert {built["worker"], researched["worker"], audited["worker"]} == \
            {"builder-1", "research-1", "security-1"}
        assert built["cost_usd"] >= 0 and built["session_id"]
        assert built["work"]["branch"] == "mesh/builder"
        calls = [json.loads(line) for line in claude_cli.read_text().splitlines()]
        by_session = {c["MESH_SESSION"]: c for c in calls}
        assert "--model=sonnet" in by_session["builder-1"]["argv"]
        assert by_session["builder-1"]["cwd"] == builder_wt
        assert (repo.parent / f"{repo.name}-wt-research" / "README.md").read_text() == "hello\n"

        run("mesh-anchor", "--once", "--no-respawn", check=0)
        assert (repo / "crates/core/src/extra.rs").read_text().strip() == "pub fn h() {}"
        assert "add extra.rs" in git(repo, "log", "-1", "--format=%s")

        # A builder change that collides with one made on main meanwhile.
        run("queue-push", "--role", "builder", "--id", "b2", "\n".join([
            "@bash file-lock acquire .",
            "@write README.md from the builder",
            f"@bash {COMMIT} commit -qam 'readme from builder'",
            "@bash file-lock release --all"]), check=0)
        assert result_of(run, "b2")["status"] == "ok"
        commit(repo, "README.md", "from main\n", "readme")
        main_before = git(repo, "rev-parse", "HEAD")
        run("mesh-anchor", "--once", "--no-respawn", check=0)
        assert git(repo, "rev-parse", "HEAD") == main_before
        assert git(repo, "status", "--porcelain") == ""
        handed = [json.loads(line) for line in (mesh_home / "events.jsonl").read_text()
                  .splitlines() if '"anchor.handed_back"' in line]
        assert handed[-1]["new_task"] == "b2~1" and "README.md" in handed[-1]["reason"]

        # A usage limit: the task goes back (no attempt burnt), the mesh pauses until the
        # reset, and then the work is done.
        resets = int(time.time()) + 3
        run("queue-push", "--role", "research", "--id", "r2",
            f"look around\n@fail rate_limit {resets}", check=0)
        wait_until(lambda: '"mesh.paused"' in run("mesh-events", "--json", check=0).stdout,
                   timeout=30)
        assert "r2" not in run("queue-dead", "list", "--json", check=0).stdout
        result = result_of(run, "r2")
        assert result["status"] == "ok" and result["attempt"] == 1
        assert time.time() >= resets
    finally:
        assert stop_all(workers) == []
