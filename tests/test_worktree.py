"""mesh-worktree: per-role worktrees beside the repository, with the lock gate installed."""

import json
import os

import pytest

from meshtools.landing import worktree
from meshtools.core import events
from meshtools.core.home import MeshHome

from .helpers import commit, git


def event_names(mesh_home):
    return [e["event"] for e in events.read(MeshHome(str(mesh_home)))]


def test_ensure_creates_the_worktree_beside_the_repo_and_is_idempotent(run, repo, mesh_home):
    first = run("mesh-worktree", "ensure", "builder", check=0).records[0]
    path = repo.parent / "project-wt-builder"
    assert first["kind"] == "worktree" and first["role"] == "builder"
    assert first["path"] == str(path) and first["branch"] == "mesh/builder"
    assert first["base"] == "main" and first["created"] is True
    assert git(path, "rev-parse", "--abbrev-ref", "HEAD") == "mesh/builder"
    assert git(path, "rev-parse", "HEAD") == git(repo, "rev-parse", "main")
    again = run("mesh-worktree", "ensure", "builder", check=0).records[0]
    assert again["created"] is False and again["path"] == first["path"]
    assert event_names(mesh_home).count("worktree.created") == 1


def test_ensure_from_inside_a_worktree_finds_the_same_one(run, repo):
    path = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    inner = run("mesh-worktree", "ensure", "builder", cwd=os.path.join(path, "crates"), check=0)
    assert inner.records[0] == dict(inner.records[0], path=path, created=False)


def test_root_option_and_config(run, repo, tmp_path, mesh_home):
    elsewhere = tmp_path / "trees"
    record = run("mesh-worktree", "ensure", "memory", "--root", str(elsewhere), check=0).records[0]
    assert record["path"] == str(elsewhere / "project-wt-memory")
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text(f'[worktrees]\nroot = "{tmp_path / "cfg"}"\n')
    record = run("mesh-worktree", "ensure", "research", check=0).records[0]
    assert record["path"] == str(tmp_path / "cfg" / "project-wt-research")


def test_gate_settings_are_installed_excluded_and_merged(run, repo):
    path = repo.parent / "project-wt-builder"
    settings = path / ".claude" / "settings.local.json"
    run("mesh-worktree", "ensure", "builder", check=0)
    data = json.loads(settings.read_text())
    (entry,) = data["hooks"]["PreToolUse"]
    assert entry["matcher"] == ".*"
    (hook,) = entry["hooks"]
    assert hook["type"] == "command" and hook["timeout"] == 30
    exe = hook["command"].removesuffix(" check --hook")
    assert os.path.isabs(exe) and os.path.basename(exe) == "file-lock" and os.access(exe, os.X_OK)
    assert git(path, "status", "--porcelain") == ""  # excluded: never committed by accident
    # Other keys and other hooks survive a re-install; our gate is there exactly once.
    data["permissions"] = {"allow": ["Bash(ls)"]}
    data["hooks"]["PreToolUse"].append({"matcher": "Bash", "hooks": [{"type": "command",
                                                                      "command": "echo"}]})
    settings.write_text(json.dumps(data))
    run("mesh-worktree", "ensure", "builder", check=0)
    merged = json.loads(settings.read_text())
    assert merged["permissions"] == {"allow": ["Bash(ls)"]}
    matchers = [e["matcher"] for e in merged["hooks"]["PreToolUse"]]
    assert sorted(matchers) == [".*", "Bash"]
    exclude = git(repo, "rev-parse", "--git-path", "info/exclude")
    assert (repo / exclude).read_text().count(".claude/settings.local.json") == 1


def test_install_gate_keeps_a_foreign_settings_file(repo):
    settings = repo / ".claude" / "settings.local.json"
    settings.parent.mkdir()
    settings.write_text('{"model": "x", "hooks": {"Stop": [{"hooks": []}]}}')
    worktree.install_gate(repo)
    data = json.loads(settings.read_text())
    assert data["model"] == "x" and data["hooks"]["Stop"] == [{"hooks": []}]
    assert len(data["hooks"]["PreToolUse"]) == 1
    assert git(repo, "status", "--porcelain") == ""


def test_list_shows_dirty_and_unpicked(run, repo):
    path = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    run("mesh-worktree", "ensure", "memory", check=0)
    commit(path, "crates/core/src/lib.rs", "pub fn g() {}\n", "g")
    commit(path, "docs/guide.md", "# more\n", "docs")
    with open(os.path.join(path, "README.md"), "a") as f:
        f.write("edit\n")
    records = {r["role"]: r for r in run("mesh-worktree", "list", check=0).records}
    assert set(records) == {"builder", "memory"}
    assert records["builder"]["dirty"] is True and records["builder"]["unpicked"] == 2
    assert records["builder"]["head"] == git(path, "rev-parse", "HEAD")
    assert records["memory"]["dirty"] is False and records["memory"]["unpicked"] == 0


def test_remove_refuses_uncommitted_work(run, repo, mesh_home):
    path = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    (repo.parent / "project-wt-builder" / "new.txt").write_text("draft\n")
    result = run("mesh-worktree", "remove", "builder")
    assert result.returncode == 75 and "1 uncommitted change" in result.stderr
    assert result.stderr.count("\n") == 1 and os.path.isdir(path)
    assert run("mesh-worktree", "remove", "builder", "--force", check=0).records[0]["removed"]
    assert not os.path.exists(path)
    assert "mesh/builder" not in git(repo, "branch", "--list")
    assert "worktree.removed" in event_names(mesh_home)


def test_remove_refuses_unpicked_commits_and_keeps_the_branch_until_picked(run, repo):
    path = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    commit(path, "web/src/app.js", "2\n", "app")
    result = run("mesh-worktree", "remove", "builder")
    assert result.returncode == 75 and "1 unpicked commit" in result.stderr
    assert os.path.isdir(path) and "mesh/builder" in git(repo, "branch", "--list")
    run("mesh-pick", "--role", "builder", check=0)
    removed = run("mesh-worktree", "remove", "builder", check=0).records[0]
    assert removed["branch_deleted"] is True and removed["dropped_commits"] == 0
    assert not os.path.exists(path) and "mesh/builder" not in git(repo, "branch", "--list")


def test_remove_force_drops_unpicked_commits(run, repo):
    path = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    commit(path, "web/src/app.js", "2\n", "app")
    record = run("mesh-worktree", "remove", "builder", "--force", check=0).records[0]
    assert record["dropped_commits"] == 1 and record["forced"] is True
    assert not os.path.exists(path) and "mesh/builder" not in git(repo, "branch", "--list")
    assert "project-wt-builder" not in git(repo, "worktree", "list")


def test_remove_unknown_role(run, repo):
    result = run("mesh-worktree", "remove", "nobody")
    assert result.returncode == 65 and "no worktree" in result.stderr


@pytest.mark.parametrize("role", ["../x", "-x", "a/b", ""])
def test_bad_role_is_refused_and_nothing_is_made(run, repo, role):
    before = sorted(os.listdir(repo.parent))
    result = run("mesh-worktree", "ensure", "--", role)
    assert result.returncode == 65 and "invalid role" in result.stderr
    assert sorted(os.listdir(repo.parent)) == before
    assert git(repo, "branch", "--list", "mesh/*") == ""


def test_path_taken_by_something_else_is_a_config_error(run, repo):
    taken = repo.parent / "project-wt-builder"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine\n")
    result = run("mesh-worktree", "ensure", "builder")
    assert result.returncode == 78
    assert "exists and is not the mesh/builder worktree" in result.stderr
    assert (taken / "notes.txt").read_text() == "mine\n"
    assert git(repo, "branch", "--list", "mesh/*") == ""


def test_path_that_is_another_roles_worktree_is_a_config_error(run, repo):
    git(repo, "worktree", "add", "-q", "-b", "other", str(repo.parent / "project-wt-builder"))
    result = run("mesh-worktree", "ensure", "builder")
    assert result.returncode == 78 and "not mesh/builder" in result.stderr


def test_a_deleted_worktree_directory_is_made_afresh_keeping_the_branch(run, repo):
    import shutil

    path = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    head = commit(path, "docs/guide.md", "# kept\n", "kept")
    shutil.rmtree(path)
    record = run("mesh-worktree", "ensure", "builder", check=0).records[0]
    assert record["created"] is True and record["head"] == head


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_root_is_refused_with_nothing_half_made(run, repo, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("mesh-worktree", "ensure", "builder", "--root", str(locked))
    finally:
        locked.chmod(0o700)
    assert result.returncode == 77 and result.stderr.count("\n") == 1
    assert "not writable" in result.stderr or "permission denied" in result.stderr
    assert os.listdir(locked) == []
    assert git(repo, "branch", "--list", "mesh/*") == ""
    assert "locked" not in git(repo, "worktree", "list")


def test_main_branch_falls_back_to_the_checked_out_branch(run, tmp_path, monkeypatch):
    root = tmp_path / "trunky"
    root.mkdir()
    git(root, "init", "-q", "-b", "trunk")
    commit(root, "a.txt", "a\n", "a")
    record = run("mesh-worktree", "ensure", "builder", cwd=str(root), check=0).records[0]
    assert record["base"] == "trunk" and record["path"] == str(tmp_path / "trunky-wt-builder")


def test_parse_worktree_list():
    text = ("worktree /r\nHEAD aaa\nbranch refs/heads/main\n\n"
            "worktree /r-wt-b\nHEAD bbb\nbranch refs/heads/mesh/b\nprunable gone\n\n"
            "worktree /d\nHEAD ccc\ndetached\n")
    found = worktree.parse_worktree_list(text)
    assert [(w["path"], w["branch"]) for w in found] == [("/r", "main"), ("/r-wt-b", "mesh/b"),
                                                         ("/d", None)]
    assert found[1]["prunable"] and found[2]["detached"]


def test_merge_gate_replaces_an_older_gate_only():
    old = {"hooks": {"PreToolUse": [
        {"matcher": "Edit|Write|MultiEdit|NotebookEdit",
         "hooks": [{"type": "command", "command": "/old/bin/file-lock check --hook"}]},
        {"matcher": "Bash", "hooks": [{"type": "command", "command": "audit"}]}]}}
    merged = worktree.merge_gate(old, "/new/file-lock check --hook")
    commands = [h["command"] for e in merged["hooks"]["PreToolUse"] for h in e["hooks"]]
    assert commands == ["audit", "/new/file-lock check --hook"]
    assert worktree.merge_gate(merged, "/new/file-lock check --hook") == merged


def test_with_exclude():
    assert worktree.with_exclude("") == ".claude/settings.local.json\n"
    assert worktree.with_exclude("# x") == "# x\n.claude/settings.local.json\n"
    assert worktree.with_exclude("/.claude/settings.local.json\n") is None


def test_a_failed_worktree_add_leaves_nothing_behind(run, repo):
    """A post-checkout hook that fails makes `git worktree add` fail after it made the
    directory, the registration and the branch: all three must go."""
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    result = run("mesh-worktree", "ensure", "builder")
    assert result.returncode == 70 and result.stderr.count("\n") == 1
    assert not (repo.parent / "project-wt-builder").exists()
    assert git(repo, "branch", "--list", "mesh/*") == ""
    assert "project-wt-builder" not in git(repo, "worktree", "list")
    hook.unlink()
    assert run("mesh-worktree", "ensure", "builder", check=0).records[0]["created"] is True


@pytest.mark.skipif(not os.path.isdir("/sys/fs"), reason="needs Linux sysfs")
def test_a_root_no_one_may_write_is_refused_even_for_root(run, repo):
    """sysfs refuses mkdir to every user, root included: the case CI (root) can test."""
    result = run("mesh-worktree", "ensure", "builder", "--root", "/sys/fs")
    assert result.returncode == 77 and result.stderr.count("\n") == 1, result.stderr
    assert git(repo, "branch", "--list", "mesh/*") == ""
    assert git(repo, "worktree", "list").count("\n") == 0  # only the main checkout
    spawned = run("mesh-spawn", "builder", "--queue", "--agent", "shell", "--root", "/sys/fs",
                  "--detach")
    assert spawned.returncode == 77 and not run("coord-peers", "--json", check=0).records
