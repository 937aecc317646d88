"""mesh-anchor with real git, a real Redis and real queue-drain workers (shell agent)."""

import json
import subprocess

from .helpers import commit, git, redis_of

COMMIT = "git -c user.name=w -c user.email=w@w commit -qam"


def events_named(mesh_home, prefix):
    path = mesh_home / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()
            if json.loads(line)["event"].startswith(prefix)] if path.exists() else []


def worktree(run, role):
    return run("mesh-worktree", "ensure", role, "--json", check=0).records[0]["path"]


def drain(run, role, path):
    run("queue-drain", "--queue", role, "--role", role, "--agent", "shell", "--workdir", path,
        "--burst", check=0, timeout=120)


def queued(role):
    from meshtools.core.home import MeshHome

    return [json.loads(fields["task"])
            for _, fields in redis_of(MeshHome.find().path).xrange(f"tasks:queue:{role}")]


def test_finished_builder_work_is_landed_on_main(run, repo, mesh_home):
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1",
        f"echo 'pub fn g() {{}}' >> crates/core/src/lib.rs && {COMMIT} 'add g'", check=0)
    drain(run, "builder", wt)
    result = run("queue-results", "--task", "t1", check=0).records[0]
    assert result["status"] == "ok" and result["work"]["head"] != result["work"]["base"]
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    assert "pub fn g()" in (repo / "crates/core/src/lib.rs").read_text()
    message = git(repo, "log", "-1", "--format=%B")
    assert "add g" in message and f"cherry picked from commit {result['work']['head']}" in message
    landed = events_named(mesh_home, "anchor.landed")
    assert [(e["task"], e["role"]) for e in landed] == [("t1", "builder")]
    run("mesh-anchor", "--once", "--no-respawn", check=0)  # the cursor moved: nothing twice
    assert git(repo, "log", "--format=%s").splitlines().count("add g") == 1


def test_a_conflicting_pick_leaves_main_unchanged_and_hands_the_task_back(run, repo,
                                                                          mesh_home):
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1",
        f"echo 'theirs' > README.md && {COMMIT} 'readme from builder'", check=0)
    drain(run, "builder", wt)
    commit(repo, "README.md", "ours\n", "readme on main")
    before = git(repo, "rev-parse", "HEAD")
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    assert git(repo, "rev-parse", "HEAD") == before
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "README.md").read_text() == "ours\n"
    [task] = queued("builder")
    assert task["id"] == "t1~1" and task["parent"] == "t1" and "README.md" in task["prompt"]
    assert events_named(mesh_home, "pick.conflict")[0]["conflicts"] == ["README.md"]
    assert events_named(mesh_home, "anchor.handed_back")[0]["new_task"] == "t1~1"


def test_a_handed_back_conflict_runs_again_on_the_rebased_branch_and_lands(run, repo,
                                                                            mesh_home):
    """The hand-back's id (`t1~1`) is a valid task id for the worker that records its work:
    it used to exit 65 on it, again on each restart."""
    wt = worktree(run, "builder")
    identity = "-c user.name=w -c user.email=w@w"
    run("queue-push", "--role", "builder", "--id", "t1",  # the hand-back appends context:
        f"git {identity} rebase -q -X theirs main 2>/dev/null; grep -q theirs README.md || "
        f"{{ echo theirs > README.md && {COMMIT} 'readme from builder'; }}; exit", check=0)
    drain(run, "builder", wt)
    commit(repo, "README.md", "ours\n", "readme on main")
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    assert [t["id"] for t in queued("builder")] == ["t1~1"]
    drain(run, "builder", wt)
    retried = run("queue-results", "--task", "t1~1", check=0).records
    assert [(r["status"], bool(r.get("work"))) for r in retried] == [("ok", True)]
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    assert (repo / "README.md").read_text() == "theirs\n"
    assert [e["task"] for e in events_named(mesh_home, "anchor.landed")] == ["t1~1"]
    assert git(repo, "status", "--porcelain") == ""


def test_a_task_that_cannot_be_handed_back_is_given_up_and_the_anchor_goes_on(run, repo,
                                                                               mesh_home):
    long_id = "f" * 127  # valid; its hand-back's id (129 characters) would not be
    run("queue-push", "--id", long_id, "--max-attempts", "1", "exit 1", check=0)
    run("queue-push", "--id", "after", "true", check=0)
    run("queue-drain", "--burst", check=0)
    *decisions, record = run("mesh-anchor", "--once", "--no-respawn", check=0).records
    assert record["handled"] == 2
    assert [d["event"] for d in decisions
            if d["event"] != "anchor.scheduled"] == ["anchor.give_up", "anchor.done"]
    [given_up] = events_named(mesh_home, "anchor.give_up")
    assert given_up["task"] == long_id and "cannot hand back" in given_up["reason"]


def test_once_handles_every_result_there_is(run, repo, mesh_home):
    r = redis_of(mesh_home)
    for n in range(250):
        r.xadd("tasks:results", {"result": json.dumps({"id": f"r{n}", "status": "ok"})})
    *decisions, record = run("mesh-anchor", "--once", "--no-respawn", check=0).records
    assert record["handled"] == 250
    assert sum(d["event"] == "anchor.done" for d in decisions) == 250
    assert len(events_named(mesh_home, "anchor.done")) == 250


def test_a_failing_gate_rolls_main_back(run, repo, mesh_home):
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1",
        f"echo x >> docs/guide.md && {COMMIT} 'docs'", check=0)
    drain(run, "builder", wt)
    before = git(repo, "rev-parse", "HEAD")
    run("mesh-anchor", "--once", "--no-respawn", "--gate", "echo tests broke; exit 3", check=0)
    assert git(repo, "rev-parse", "HEAD") == before
    [task] = queued("builder")
    assert "tests broke" in task["prompt"]


def test_failed_tasks_are_handed_back_once_then_given_up(run, repo, mesh_home):
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1", "--max-attempts", "1",
        "echo the parser is broken; exit 2", check=0)
    drain(run, "builder", wt)
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    [task] = queued("builder")
    assert task["id"] == "t1~1" and "the parser is broken" in task["prompt"]
    drain(run, "builder", wt)  # fails again (same command, with context appended)
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    assert [e["task"] for e in events_named(mesh_home, "anchor.give_up")] == ["t1~1"]


def test_scheduled_roles_get_their_standing_task_once_per_period(run, repo):
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    for role in ("memory", "security", "groomer"):
        tasks = queued(role)
        assert len(tasks) == 1 and tasks[0]["standing"] and tasks[0]["role"] == role
    assert queued("builder") == []


def test_a_peer_that_dies_is_reported(run, repo, mesh_home):
    sleeper = subprocess.Popen(["sleep", "600"])
    run("coord-register", "--role", "research", "--id", "r1", "--pid", str(sleeper.pid),
        check=0)
    sleeper.kill()
    sleeper.wait()
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    [dead] = events_named(mesh_home, "anchor.peer_dead")
    assert dead["session"] == "r1" and dead["role"] == "research"
    copied = [json.loads(fields["e"]) for _, fields in redis_of(mesh_home).xrange("mesh:events")
              if fields.get("from") == "log"]  # the loop mirrors the event log
    assert {"session.registered", "anchor.peer_dead"} <= {e["event"] for e in copied}


def test_a_dead_detached_worker_is_respawned_as_it_was_started(run, repo, mesh_home):
    import psutil

    first = run("mesh-spawn", "builder", "--queue", "--agent", "shell", "--detach", "--json",
                check=0).records[-1]
    run("mesh-anchor", "--once", check=0)  # sees it alive
    supervisor = psutil.Process(first["pid"])
    supervisor.kill()  # kill -9 of the supervisor (the kernel stops its worker)
    psutil.wait_procs([supervisor], timeout=10)
    run("mesh-anchor", "--once", check=0)
    [respawned] = events_named(mesh_home, "anchor.respawned")
    assert respawned["session"] == "builder-1"
    again = next(r for r in run("coord-peers", "--json", check=0).records
                 if r["id"] == "builder-1")
    assert again["state"] == "alive" and again["pid"] != first["pid"]
    run("queue-push", "--role", "builder", "--id", "after", "echo back", check=0)
    assert run("queue-results", "--wait", "after", "--timeout", "30",
               check=0).records[0]["status"] == "ok"
    top = psutil.Process(again["pid"])
    procs = [top, *top.children(recursive=True)]
    top.terminate()
    assert psutil.wait_procs(procs, timeout=30)[1] == []


def test_the_loop_follows_results_as_they_come_and_stops_on_sigterm(run, repo, mesh_home):
    from .helpers import wait_until

    loop = subprocess.Popen(["mesh-anchor", "--interval", "0.2", "--no-respawn"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: events_named(mesh_home, "anchor.started"), timeout=30)
        wt = worktree(run, "builder")
        run("queue-push", "--role", "builder", "--id", "t1",
            f"echo more >> docs/guide.md && {COMMIT} 'more docs'", check=0)
        drain(run, "builder", wt)
        wait_until(lambda: "more" in (repo / "docs/guide.md").read_text(), timeout=30)
        loop.terminate()
        assert loop.wait(timeout=30) == 143
    finally:
        loop.kill()
    printed = [json.loads(line) for line in loop.stdout.read().splitlines()]
    assert [r["task"] for r in printed if r.get("event") == "anchor.landed"] == ["t1"]
    assert events_named(mesh_home, "anchor.stopped")[0]["pid"] == loop.pid


def test_a_mesh_has_one_anchor(run, repo, mesh_home, anchor_process):
    """#6: the loop registered as role anchor-loop beside the anchor agent anchor-1."""
    from .helpers import wait_until

    loop = subprocess.Popen(["mesh-anchor", "--interval", "0.2", "--no-respawn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: events_named(mesh_home, "anchor.started"), timeout=30)
        for argv in (["mesh-anchor"], ["mesh-anchor", "--once"]):
            second = run(*argv, "--no-respawn")
            assert second.returncode == 75, second.stderr
            assert f"another mesh-anchor (pid {loop.pid}) runs this mesh" in second.stderr
        agent = anchor_process()
        run("coord-register", "--role", "anchor", "--pid", str(agent.pid), check=0)
        assert run("coord-register", "--role", "anchor", "--pid", str(agent.pid)).returncode == 75
        anchors = [r["id"] for r in run("coord-peers", "--json", check=0).records
                   if r["role"].startswith("anchor")]
        assert anchors == ["anchor-1"]
    finally:
        loop.terminate()
        loop.wait(timeout=30)
    run("mesh-anchor", "--once", "--no-respawn", check=0)  # the lock died with the loop


def test_decisions_are_printed_as_they_are_made(run, repo, mesh_home):
    """#15: in the foreground on a terminal mesh-anchor printed nothing."""
    from .helpers import on_terminal

    code, shown, _ = on_terminal(["mesh-anchor", "--once", "--no-respawn"])
    assert code == 0
    for role in ("memory", "security", "groomer"):
        assert f"scheduled standing-{role}-" in shown and f" on {role}\r\n" in shown
    piped = run("mesh-anchor", "--once", "--no-respawn", check=0).records  # nothing new
    assert [r.get("kind") for r in piped] == ["anchor"]


def test_each_task_starts_from_what_has_landed_on_main(run, repo, mesh_home):
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1",
        f"echo one > docs/one.md && git add docs/one.md && {COMMIT} 'one'", check=0)
    drain(run, "builder", wt)
    run("mesh-anchor", "--once", "--no-respawn", check=0)  # lands "one" on main
    commit(repo, "docs/two.md", "two from main\n", "two")
    run("queue-push", "--role", "builder", "--id", "t2", "cat docs/two.md && git log --format=%s",
        check=0)
    drain(run, "builder", wt)
    result = run("queue-results", "--task", "t2", check=0).records[0]
    assert result["status"] == "ok" and "two from main" in result["output"]
    assert result["output"].splitlines()[1:].count("one") == 1  # its own pick, not twice
    assert events_named(mesh_home, "worktree.synced")


def test_a_sync_that_conflicts_is_aborted_and_the_task_runs_as_it_was(run, repo, mesh_home):
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1",
        f"echo theirs > README.md && {COMMIT} 'readme'", check=0)
    drain(run, "builder", wt)
    commit(repo, "README.md", "ours\n", "readme on main")
    run("queue-push", "--role", "builder", "--id", "t2", "cat README.md", check=0)
    drain(run, "builder", wt)
    result = run("queue-results", "--task", "t2", check=0).records[0]
    assert result["status"] == "ok" and result["output"] == "theirs\n"
    assert events_named(mesh_home, "worktree.sync_conflict")
    assert git(wt, "status", "--porcelain") == ""


def test_a_fatal_peer_is_respawned_after_a_cooldown_then_given_up(run, repo, mesh_home,
                                                                   claude_cli):
    """#5: a FATAL peer was reported (anchor.peer_fatal) and never respawned."""
    from .helpers import wait_until

    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text(
        "[supervisor]\nmax_failures = 2\nbase = 0.05\nmin_uptime = 60\n"
        "[anchor]\nfatal_cooldown = 5\nfatal_respawns = 1\n")
    (mesh_home / "roles.toml").write_text('[roles.research]\nprompt = "@exit 3"\n')  # crashes

    def peer():
        return next(r for r in run("coord-peers", "--json", check=0).records
                    if r["id"] == "research-1")

    first = run("mesh-spawn", "research", "--detach", "--json", check=0).records[-1]
    wait_until(lambda: peer()["phase"] == "FATAL", timeout=60)
    early = run("mesh-anchor", "--once", check=0).records
    assert [r["event"] for r in early if r.get("event", "").startswith("anchor.peer")] == \
        ["anchor.peer_fatal"]
    assert not events_named(mesh_home, "anchor.respawned")  # still cooling down
    wait_until(lambda: peer()["phase_age"] >= 5, timeout=30)
    later = run("mesh-anchor", "--once", check=0).records
    [respawned] = [r for r in later if r.get("event") == "anchor.respawned"]
    assert respawned["session"] == "research-1"
    assert (respawned["attempt"], respawned["of"]) == (1, 1)
    wait_until(lambda: peer()["pid"] != first["pid"] and peer()["phase"] == "FATAL", timeout=60)
    run("mesh-anchor", "--once", check=0)
    [given_up] = events_named(mesh_home, "anchor.fatal_given_up")
    assert given_up["session"] == "research-1"
    run("mesh-anchor", "--once", check=0)  # given up on: no more respawns, no more events
    assert len(events_named(mesh_home, "anchor.respawned")) == 1
    assert len(events_named(mesh_home, "anchor.fatal_given_up")) == 1


def test_the_loop_on_a_terminal_says_it_is_following_before_any_decision(repo, mesh_home):
    """Started in the foreground with nothing to do, mesh-anchor showed nothing at all."""
    from .helpers import interrupted_on_terminal

    code, shown = interrupted_on_terminal(["mesh-anchor", "--no-respawn"],
                                          "following tasks:results")
    assert code == 130 and f"anchor of {repo}" in shown


def test_work_routed_by_queue_alone_finds_the_role_that_drains_that_queue(run, repo, mesh_home):
    """A role whose queue differs from its name: a task pushed to that queue names no role,
    and the anchor found none (it looked the queue up as a role name), so it never landed."""
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "roles.toml").write_text('[roles.builder]\nqueue = "build"\n')
    wt = worktree(run, "builder")
    run("queue-push", "--role", "builder", "--id", "t1",  # to its queue, build; no role kept
        f"echo 'pub fn q() {{}}' >> crates/core/src/lib.rs && {COMMIT} 'add q'", check=0)
    run("queue-drain", "--queue", "build", "--role", "builder", "--agent", "shell",
        "--workdir", wt, "--burst", check=0, timeout=120)
    run("mesh-anchor", "--once", "--no-respawn", check=0)
    assert "pub fn q()" in (repo / "crates/core/src/lib.rs").read_text()
    assert [(e["task"], e["role"]) for e in events_named(mesh_home, "anchor.landed")] == [
        ("t1", "builder")]
