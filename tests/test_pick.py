"""mesh-pick: land a worker's commits on main, gated in a scratch worktree, all or nothing."""

import os

import pytest

from meshtools.landing import advance, gitops, history, pick, state, work
from meshtools.core import config, events
from meshtools.core.home import MeshHome

from .helpers import commit, git


@pytest.fixture
def builder(run, repo):
    """The builder's worktree (on mesh/builder, from main)."""
    return run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]


def main_state(repo):
    return git(repo, "rev-parse", "main"), git(repo, "status", "--porcelain")


def no_pick_in_progress(repo):
    return (not (repo / ".git" / "CHERRY_PICK_HEAD").exists()
            and not (repo / ".git" / "sequencer").exists())


def event_names(mesh_home):
    return [e["event"] for e in events.read(MeshHome(str(mesh_home)))]


def test_a_builder_commit_lands_on_main_with_the_trailer(run, repo, builder, mesh_home):
    before = git(repo, "rev-parse", "main")
    sha = commit(builder, "crates/core/src/lib.rs", "pub fn g() {}\n", "add g")
    record = run("mesh-pick", "--role", "builder", check=0).records[0]
    assert record["kind"] == "pick" and record["status"] == "picked"
    assert record["role"] == "builder" and record["main_before"] == before
    assert record["picked"] == [git(repo, "rev-parse", "main")] == [record["main_after"]]
    assert record["picked_from"] == [sha] and record["skipped"] == [] and record["conflicts"] == []
    assert f"(cherry picked from commit {sha})" in git(repo, "log", "-1", "--format=%B")
    assert (repo / "crates/core/src/lib.rs").read_text() == "pub fn g() {}\n"
    assert git(repo, "status", "--porcelain") == ""
    assert "pick.landed" in event_names(mesh_home)


def test_picking_again_picks_nothing(run, repo, builder, mesh_home):
    sha = commit(builder, "docs/guide.md", "# g\n", "docs")
    run("mesh-pick", "--role", "builder", check=0)
    after = git(repo, "rev-parse", "main")
    again = run("mesh-pick", "--role", "builder", check=0).records[0]
    assert again["status"] == "skipped" and again["picked"] == [] and again["skipped"] == [sha]
    by_range = run("mesh-pick", "--commits", f"{sha}~1..{sha}", check=0).records[0]
    assert by_range["picked"] == [] and by_range["skipped"] == [sha]
    assert git(repo, "rev-parse", "main") == after
    assert "pick.skipped" in event_names(mesh_home)


def test_the_trailer_alone_prevents_a_second_pick(run, repo, builder):
    """A pick landed by hand after resolving a conflict has another patch id; its -x line
    still names the source, and that is enough."""
    sha = commit(builder, "README.md", "hello\nbuilder\n", "readme")
    commit(repo, "README.md", "hello\nbuilder, resolved by hand\n",
           f"readme\n\n(cherry picked from commit {sha})")
    record = run("mesh-pick", "--role", "builder", check=0).records[0]
    assert record["status"] == "skipped" and record["skip_reasons"] == {sha: "already_picked"}
    assert run("mesh-worktree", "list", check=0).records[0]["unpicked"] == 0


def test_role_picks_several_commits_oldest_first(run, repo, builder):
    shas = [commit(builder, f"docs/n{i}.md", f"{i}\n", f"note {i}") for i in range(3)]
    record = run("mesh-pick", "--role", "builder", "--task", "t1", check=0).records[0]
    assert record["picked_from"] == shas and record["task"] == "t1"
    subjects = git(repo, "log", "--format=%s", "-3", "--reverse").splitlines()
    assert subjects == ["note 0", "note 1", "note 2"]
    assert git(repo, "rev-list", "--reverse", "-3", "main").splitlines() == record["picked"]


def test_commit_range_picks_exactly_that_range(run, repo, builder):
    a = commit(builder, "docs/a.md", "a\n", "a")
    b = commit(builder, "docs/b.md", "b\n", "b")
    c = commit(builder, "docs/c.md", "c\n", "c")
    record = run("mesh-pick", "--commits", f"{a}..{c}", check=0).records[0]
    assert record["picked_from"] == [b, c]
    assert not (repo / "docs/a.md").exists() and (repo / "docs/c.md").exists()


def test_conflict_leaves_main_exactly_as_it_was(run, repo, builder, mesh_home):
    ok = commit(builder, "docs/ok.md", "fine\n", "fine")
    bad = commit(builder, "README.md", "builder's line\n", "builder readme")
    commit(repo, "README.md", "main's line\n", "main readme")
    before = main_state(repo)
    result = run("mesh-pick", "--role", "builder")
    assert result.returncode == 1
    record = result.records[0]
    assert record["status"] == "conflict" and record["conflicts"] == ["README.md"]
    assert record["commit"] == bad and record["picked"] == []
    assert record["main_before"] == record["main_after"] == before[0]
    assert main_state(repo) == before and no_pick_in_progress(repo)
    assert not (repo / "docs/ok.md").exists()  # the clean pick before it went too
    assert (repo / "README.md").read_text() == "main's line\n"
    assert ok in history.unpicked(str(repo), "main", "mesh/builder")
    assert "pick.conflict" in event_names(mesh_home)


def test_failing_gate_rolls_main_back(run, repo, builder, mesh_home):
    commit(builder, "docs/gate.md", "x\n", "gated")
    before = main_state(repo)
    result = run("mesh-pick", "--role", "builder", "--gate", "echo checking; false")
    assert result.returncode == 1
    record = result.records[0]
    assert record["status"] == "gate_failed" and record["gate_exit"] == 1
    assert "checking" in record["gate_output"] and record["picked"] == []
    assert main_state(repo) == before and not (repo / "docs/gate.md").exists()
    assert "pick.gate_failed" in event_names(mesh_home)


def test_passing_gate_from_config_sees_the_picks(run, repo, builder, mesh_home):
    commit(builder, "docs/gate.md", "x\n", "gated")
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text('[pick]\ngate = "test -f docs/gate.md"\n')
    record = run("mesh-pick", "--role", "builder", check=0).records[0]
    assert record["status"] == "picked" and record["gate_exit"] == 0
    assert (repo / "docs/gate.md").exists()


def test_dirty_main_checkout_is_refused(run, repo, builder):
    commit(builder, "docs/x.md", "x\n", "x")
    (repo / "README.md").write_text("uncommitted\n")
    before = git(repo, "rev-parse", "main")
    result = run("mesh-pick", "--role", "builder")
    assert result.returncode == 75 and "1 uncommitted change" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert git(repo, "rev-parse", "main") == before
    assert (repo / "README.md").read_text() == "uncommitted\n"


def test_main_moves_under_a_checkout_on_another_branch_which_is_left_alone(run, repo, builder):
    commit(builder, "docs/x.md", "x\n", "x")
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "README.md").write_text("the user's work on side\n")
    record = run("mesh-pick", "--role", "builder", check=0).records[0]
    assert record["status"] == "picked" and git(repo, "rev-parse", "main") == record["main_after"]
    assert git(repo, "show", "main:docs/x.md") == "x"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "side"
    assert not (repo / "docs/x.md").exists()
    assert (repo / "README.md").read_text() == "the user's work on side\n"


def test_a_checkout_made_dirty_while_the_gate_runs_keeps_main_where_it_was(run, repo, builder,
                                                                         mesh_home):
    """main must not move under a checkout with uncommitted changes, whenever they came."""
    commit(builder, "docs/x.md", "x\n", "x")
    before = git(repo, "rev-parse", "main")
    result = run("mesh-pick", "--role", "builder", "--gate", f"echo mine >> {repo}/README.md")
    assert result.returncode == 75 and "1 uncommitted change" in result.stderr
    assert git(repo, "rev-parse", "main") == before
    assert (repo / "README.md").read_text() == "hello\nmine\n"
    assert "1 uncommitted change" in state.blocked(MeshHome(str(mesh_home)))["reason"]
    git(repo, "checkout", "README.md")
    run("mesh-pick", "--role", "builder", "--gate", "true", check=0)
    assert (repo / "docs/x.md").read_text() == "x\n"
    assert state.blocked(MeshHome(str(mesh_home))) is None


def test_an_untracked_file_in_the_way_keeps_main_where_it_was(run, repo, builder):
    commit(builder, "docs/new.md", "theirs\n", "new doc")
    (repo / "docs/new.md").write_text("the user's own, untracked\n")
    before = git(repo, "rev-parse", "main")
    result = run("mesh-pick", "--role", "builder")
    assert result.returncode == 75 and "docs/new.md" in result.stderr
    assert git(repo, "rev-parse", "main") == before
    assert (repo / "docs/new.md").read_text() == "the user's own, untracked\n"


def test_the_gate_runs_in_a_scratch_worktree_that_is_gone_afterwards(run, repo, builder,
                                                                   mesh_home, tmp_path):
    commit(builder, "docs/x.md", "x\n", "x")
    seen = tmp_path / "gate-cwd"
    run("mesh-pick", "--role", "builder", "--gate", f"pwd > {seen}; test -f docs/x.md", check=0)
    where = seen.read_text().strip()
    assert os.path.realpath(where) != os.path.realpath(repo)
    assert not os.path.exists(where)
    assert where not in git(repo, "worktree", "list", "--porcelain")


def cut_off_landing(repo, builder, home, path: str, text: str) -> str:
    """A landing cut off after main moved to a commit of path, before its checkout
    followed: the journal it leaves, main there, the checkout still at the old commit."""
    old = git(repo, "rev-parse", "main")
    landed = commit(builder, path, text, f"landed {path}")
    git(repo, "update-ref", "refs/heads/main", landed, old)
    state.write_journal(home, {"old": old, "new": landed, "branch": "main",
                               "checkout": str(repo)})
    return landed


def test_an_interrupted_landing_is_finished_by_the_next_pass(run, repo, builder, mesh_home):
    """main moved but the checkout was left at the old commit (the landing was cut off
    between the two): the next pass brings the checkout up, then lands its own work."""
    home = MeshHome(str(mesh_home))
    landed = cut_off_landing(repo, builder, home, "docs/one.md", "1\n")
    assert git(repo, "status", "--porcelain") != ""  # the checkout lags behind main
    nxt = commit(builder, "docs/two.md", "2\n", "two")
    record = run("mesh-pick", "--commits", nxt, check=0).records[0]
    assert record["status"] == "picked" and record["main_before"] == landed
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "docs/one.md").exists() and (repo / "docs/two.md").exists()
    assert state.journal(home) is None


def test_an_interrupted_landing_that_cannot_be_finished_waits_and_says_why(run, repo, builder,
                                                                         mesh_home):
    home = MeshHome(str(mesh_home))
    landed = cut_off_landing(repo, builder, home, "README.md", "landed\n")
    (repo / "README.md").write_text("the user's edit\n")
    nxt = commit(builder, "docs/two.md", "2\n", "two")
    result = run("mesh-pick", "--commits", nxt)
    assert result.returncode == 75 and "interrupted landing" in result.stderr
    assert git(repo, "rev-parse", "main") == landed
    assert (repo / "README.md").read_text() == "the user's edit\n"
    assert "interrupted landing" in state.blocked(home)["reason"]


def test_picks_land_in_the_main_checkout_even_when_run_from_a_worktree(run, repo, builder):
    commit(builder, "docs/w.md", "w\n", "w")
    record = run("mesh-pick", "--role", "builder", cwd=builder, check=0).records[0]
    assert record["main_after"] == git(repo, "rev-parse", "main")
    assert (repo / "docs/w.md").exists()
    assert git(builder, "rev-parse", "--abbrev-ref", "HEAD") == "mesh/builder"


def test_task_id_reads_the_recorded_range(run, repo, builder, mesh_home):
    base = git(builder, "rev-parse", "HEAD")
    head = commit(builder, "docs/t.md", "t\n", "task work")
    work.record_task_work(MeshHome(str(mesh_home)), "task-7", "builder",
                          work.work_range("mesh/builder", base, head))
    record = run("mesh-pick", "task-7", check=0).records[0]
    assert record["task"] == "task-7" and record["role"] == "builder"
    assert record["picked_from"] == [head]
    missing = run("mesh-pick", "task-8")
    assert missing.returncode == 65 and "no work recorded" in missing.stderr


def test_library_call_without_a_git_identity(repo, builder, mesh_home, monkeypatch, tmp_path):
    """A fresh box with no user.email anywhere still lands picks (fallback identity)."""
    sha = commit(builder, "docs/id.md", "id\n", "identity")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    home = MeshHome(str(mesh_home))
    record = pick.pick(home, gitops.main_of(str(repo), config.of(home)), [sha], role="builder",
                       task=None, gate=None)
    assert record["status"] == "picked"
    assert git(repo, "log", "-1", "--format=%cn <%ce>") == "meshtools <meshtools@localhost>"
    assert git(repo, "log", "-1", "--format=%an") == "t"  # the author is kept


def test_usage_errors(run, repo):
    assert run("mesh-pick").returncode == 64
    assert run("mesh-pick", "--role", "a", "--commits", "x..y").returncode == 64
    bad = run("mesh-pick", "--commits", "nope..HEAD")
    assert bad.returncode == 65 and "no such commit" in bad.stderr
    assert run("mesh-pick", "--commits", "--upload-pack=x").returncode in (64, 65)
    assert run("mesh-pick", "--role", "../x").returncode == 65


def test_decide_and_parsers():
    cherry = history.parse_cherry("+ aaa\n- bbb\n+ ccc\n")
    assert cherry == {"aaa": "+", "bbb": "-", "ccc": "+"}
    to_pick, skipped = pick.decide_picks(["aaa", "bbb", "ccc", "ddd", "aaa"], cherry, {"ccc"})
    assert to_pick == ["aaa"]
    assert [(s["commit"], s["reason"]) for s in skipped] == [
        ("bbb", "patch_on_main"), ("ccc", "already_picked"), ("ddd", "on_main")]
    assert history.picked_from("x\n\n(cherry picked from commit abc1234)\n") == {"abc1234"}
    assert history.unpicked_from_cherry("+ abc12345\n+ fff\n- eee\n", {"abc1234"}) == ["fff"]
    assert history.parse_range("a..b") == ("a", "b") and history.parse_range("c") == (None, "c")
    assert pick.tail("\n".join(map(str, range(100))), lines=2) == "98\n99"


def test_what_an_interrupted_landing_needs():
    journal = {"old": "o", "new": "n"}
    assert advance.decide_recovery(journal, "o", None) == "done"  # main never moved
    assert advance.decide_recovery(journal, "x", "old") == "done"  # main moved on since
    assert advance.decide_recovery(journal, "n", None) == "done"  # no checkout has main
    assert advance.decide_recovery(journal, "n", "new") == "done"
    assert advance.decide_recovery(journal, "n", "old") == "finish"
    assert advance.decide_recovery(journal, "n", "other") == "stuck"


def test_pick_lands_the_shas_it_is_given_without_resolving_them_again(repo, builder, mesh_home,
                                                                      monkeypatch, tmp_path):
    """range_commits returns full shas; pick() ran `rev-parse X^{commit}` on each again."""
    first = commit(builder, "docs/a.md", "a\n", "a")
    second = commit(builder, "docs/b.md", "b\n", "b")
    home = MeshHome(str(mesh_home))
    main = gitops.main_of(str(repo), config.of(home))
    shas = history.range_commits(main.root, f"{first}~1", second)
    trace = tmp_path / "git.trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    record = pick.pick(home, main, shas, gate="")
    assert record["status"] == "picked" and record["picked_from"] == [first, second]
    assert "^{commit}" not in trace.read_text()
