"""file-lock as a user runs it: real processes, a real repository, real signals."""

import json
import signal
import subprocess
import time

import psutil
import pytest

from meshtools.core import events
from meshtools.core.home import MeshHome
from meshtools.locks import policy

from .helpers import lock_table as table, wait_until


def state_files(mesh_home):
    return sorted(str(p.relative_to(mesh_home)) for p in mesh_home.rglob("*")) \
        if mesh_home.exists() else []


def test_acquire_maps_path_to_scope_and_prints_the_grant(repo, run):
    result = run("file-lock", "acquire", "--as", "builder-1", "crates/core/src/lib.rs", check=0)
    [record] = result.records
    assert record["kind"] == "lock" and record["event"] == "granted"
    assert record["scope"] == "crates/core" and record["holder"] == "builder-1"
    assert record["ts"].endswith("Z") and record["generation"] == 1


def test_all_scopes_or_none(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "crates/cli", check=0)
    busy = run("file-lock", "acquire", "--as", "B", "-n", "crates/core", "crates/cli/src/main.rs")
    assert busy.returncode == 75
    assert "crates/cli (held by A" in busy.stderr and busy.stderr.count("\n") == 1
    assert set(table(mesh_home)["locks"]) == {"crates/cli"}


def test_reentrant_and_generation_fencing(repo, run):
    first = run("file-lock", "acquire", "--as", "A", "web/src/app.js", check=0).records[0]
    again = run("file-lock", "acquire", "--as", "A", "web", check=0).records[0]
    assert again["generation"] == first["generation"]
    run("file-lock", "check", "--as", "A", "web/src/app.js", check=0)
    run("file-lock", "check", "--as", "A", "--generation", str(first["generation"]), "web", check=0)
    stale = run("file-lock", "check", "--as", "A", "--generation", "99", "web")
    assert stale.returncode == 1 and "not the one given" in stale.stderr


def test_check_says_no_with_the_way_out(repo, run):
    run("file-lock", "acquire", "--as", "A", "crates/core", check=0)
    other = run("file-lock", "check", "--as", "B", "crates/core/src/lib.rs")
    assert other.returncode == 1
    assert "held by A" in other.stderr and "file-lock acquire crates/core" in other.stderr
    assert run("file-lock", "check", "-q", "--as", "B", "docs").stderr == ""


def test_release_rules(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "crates/core", "docs", check=0)
    refused = run("file-lock", "release", "--as", "B", "crates/core")
    assert refused.returncode == 77 and "held by A" in refused.stderr
    assert run("file-lock", "release", "--as", "B", "web", check=0).stdout == ""  # unheld: no-op
    forced = run("file-lock", "release", "--as", "B", "--force", "crates/core", check=0)
    assert forced.records[0]["scope"] == "crates/core"
    run("file-lock", "release", "--as", "A", "--all", check=0)
    assert table(mesh_home)["locks"] == {}
    kinds = [e["event"] for e in events.read(MeshHome(str(mesh_home)))]
    assert kinds.count("lock.granted") == 2 and kinds.count("lock.released") == 2


def test_wait_times_out_with_75(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "docs", check=0)
    result = run("file-lock", "acquire", "--as", "B", "-w", "0.3", "docs/guide.md")
    assert result.returncode == 75 and "still busy after 0.3s" in result.stderr
    kinds = [e["event"] for e in events.read(MeshHome(str(mesh_home)))]
    assert "lock.waiting" in kinds  # it queued as a waiter before giving up
    assert table(mesh_home)["waits"] == {}  # and left no wait behind


def test_waiter_gets_the_lock_when_released(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "docs", check=0)
    waiter = subprocess.Popen(["file-lock", "acquire", "--as", "B", "docs"],
                              stdout=subprocess.PIPE, text=True)
    wait_until(lambda: table(mesh_home)["waits"])
    graph = run("file-lock", "graph", check=0).records[0]
    assert graph["edges"] == [{"waiter": "B", "scope": "docs", "holder": "A"}]
    assert graph["cycles"] == []
    run("file-lock", "release", "--as", "A", "docs", check=0)
    out, _ = waiter.communicate(timeout=10)
    assert waiter.returncode == 0 and json.loads(out)["holder"] == "B"
    assert table(mesh_home)["waits"] == {}


@pytest.mark.parametrize("argv,message", [
    (["acquire", "--as", "A", "../outside.txt"], "outside the repository"),
    (["acquire", "--as", "A", "/etc/passwd"], "outside the repository"),
    (["acquire", "--as", "A", ".git/config"], "inside the git directory"),
    (["acquire", "--as", "../x", "docs"], "invalid session id"),
    (["acquire", "--as", "a/b", "docs"], "invalid session id"),
    (["acquire", "--as", "x" * 65, "docs"], "invalid session id"),
    (["check", "--as", "A", "/tmp"], "outside the repository"),
])
def test_bad_input_exits_65_and_writes_nothing(repo, run, mesh_home, argv, message):
    before = state_files(mesh_home)
    result = run("file-lock", *argv)
    assert result.returncode == 65, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert state_files(mesh_home) == before


@pytest.mark.parametrize("argv", [
    ["acquire", "--as", "A"],  # no path
    ["acquire", "--as", "A", "-n", "-w", "1", "docs"],
    ["acquire", "--as", "A", "-n", "-w", "0", "docs"],  # -w 0 is given too
    ["release", "--as", "A"],
    ["release", "--as", "A", "--all", "docs"],
    ["acquire", "--as", "A", "--bogus", "docs"],
    ["docs"],  # run mode without a command
    ["acquire", "--as", "A", "-w", "nan", "docs"],
    ["acquire", "--as", "A", "-w", "inf", "docs"],
    ["acquire", "--as", "A", "-w", "-1", "docs"],
    ["acquire", "--as", "A", "--lease", "nan", "docs"],
    ["acquire", "--as", "A", "--lease", "-inf", "docs"],
    ["acquire", "--as", "A", "--lease", "0", "docs"],
    ["--as", "A", "-w", "NaN", "docs", "--", "true"],
])
def test_usage_errors_exit_64(repo, run, mesh_home, argv):
    result = run("file-lock", *argv, timeout=20)
    assert result.returncode == 64, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert table(mesh_home)["locks"] == {}


def test_odd_path(repo, run, mesh_home):
    assert run("file-lock", "acquire", "--as", "A", "do\x01cs/../../..").returncode == 65


def test_without_a_session_the_calling_shell_owns_the_lock(repo, run, mesh_home):
    held = ("file-lock acquire docs >/dev/null && file-lock check docs && echo held && "
            "file-lock release docs >/dev/null && file-lock check -q docs || echo released")
    assert run("sh", "-c", held, check=0).stdout == "held\nreleased\n"
    shell = run("sh", "-c", "file-lock acquire docs; echo $$", check=0).stdout.splitlines()
    assert json.loads(shell[0])["holder"] == f"pid-{shell[1]}"  # the shell, now gone
    assert run("file-lock", "check", "-q", "docs").returncode == 1  # not this caller's
    [status] = run("file-lock", "status", check=0).records
    assert status["state"] == "dead"
    assert run("file-lock", "acquire", "-n", "--as", "B", "docs", check=0).records[0]["holder"] == "B"


def test_a_misspelt_subcommand_is_named(repo, run):
    typo = run("file-lock", "acqure", "crates")
    assert typo.returncode == 64
    assert typo.stderr == "file-lock: unknown subcommand 'acqure'; did you mean 'acquire'?\n"
    (repo / "acqure").mkdir()  # an existing path is a path: flock(1) style run mode
    run("file-lock", "--as", "A", "acqure", "--", "true", check=0)


def test_a_wait_on_a_terminal_says_who_holds_it(repo, run, mesh_home):
    import os
    import pty
    import select

    run("file-lock", "acquire", "--as", "A", "docs", check=0)
    leader, follower = pty.openpty()
    waiter = subprocess.Popen(["file-lock", "acquire", "--as", "B", "-w", "30", "docs"],
                              stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    try:
        said = b""
        while b"\n" not in said and select.select([leader], [], [], 10)[0]:
            said += os.read(leader, 1024)
        assert said.startswith(b"file-lock: waiting for docs (held by A since ")
        run("file-lock", "release", "--as", "A", "docs", check=0)
        assert waiter.wait(timeout=15) == 0
    finally:
        waiter.kill()
        waiter.wait()
        os.close(leader)


def test_relative_paths_from_outside_the_repository_use_the_recorded_one(repo, run, tmp_path):
    run("meshctl", "init", "--no-agents", check=0)
    result = run("file-lock", "acquire", "--as", "A", "crates/core/src", cwd=str(tmp_path), check=0)
    assert result.records[0]["scope"] == "crates/core"


def test_linked_worktree_paths_share_scopes(repo, run):
    subprocess.run(["git", "worktree", "add", "-q", "-b", "mesh/builder",
                    str(repo.parent / "wt-builder")], cwd=repo, check=True)
    run("file-lock", "acquire", "--as", "A", "crates/core", check=0)
    in_worktree = str(repo.parent / "wt-builder" / "crates" / "core" / "src" / "lib.rs")
    other = run("file-lock", "check", "--as", "B", in_worktree, cwd=str(repo.parent / "wt-builder"))
    assert other.returncode == 1 and "crates/core" in other.stderr
    run("file-lock", "check", "--as", "A", in_worktree, check=0)


def test_run_mode_holds_the_lock_for_the_command_only(repo, run, mesh_home):
    inner = "file-lock check --as A crates/core/src/lib.rs && exit 7"
    result = run("file-lock", "--as", "A", "crates/core", "--", "sh", "-c", inner)
    assert result.returncode == 7  # the command ran while holding, its status comes back
    assert table(mesh_home)["locks"] == {}
    run("file-lock", "acquire", "--as", "B", "crates/core", check=0)
    busy = run("file-lock", "-n", "--as", "A", "crates/core", "--", "touch", "ran")
    assert busy.returncode == 75 and not (repo / "ran").exists()
    assert run("file-lock", "--as", "A", "docs", "--", "no-such-cmd-x").returncode == 127


def test_a_killed_holder_takes_its_command_with_it(repo, run, mesh_home, tmp_path):
    """kill -9 of `file-lock PATH -- CMD` let the lock be reclaimed while CMD (and what it
    started) ran on: the next holder ran beside it (5 overlaps in 573 grants, 60 kills)."""
    import psutil

    pids = tmp_path / "pids"
    holder = subprocess.Popen(["file-lock", "--as", "A", "docs", "--", "sh", "-c",
                               f"sleep 300 & echo $$ $! > {pids}; wait"])
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2)
    holder.kill()
    holder.wait()

    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(gone(int(pid)) for pid in pids.read_text().split()))
    run("file-lock", "acquire", "-n", "--as", "B", "docs", check=0)  # reclaimed, and alone


def test_run_mode_passes_a_ctrl_c_to_the_command(repo, tmp_path):
    """The command runs under a guard now: a ^C (SIGINT to the terminal's process group)
    still reaches the command, and the guard neither dies of it nor prints a traceback."""
    import os

    ready = tmp_path / "ready"
    holder = subprocess.Popen(["file-lock", "--as", "A", "docs", "--", "sh", "-c",
                               f"trap 'exit 42' INT; touch {ready}; while :; do sleep 0.05; done"],
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_until(ready.exists)
    os.killpg(holder.pid, signal.SIGINT)
    _, err = holder.communicate(timeout=30)
    assert holder.returncode == 42 and "Traceback" not in err, err


def test_run_mode_keeps_a_lock_held_before(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "docs", check=0)
    run("file-lock", "--as", "A", "docs", "--", "true", check=0)
    assert table(mesh_home)["locks"]["docs"]["holder"] == "A"


def test_run_mode_forwards_sigterm_and_releases(repo, mesh_home):
    proc = subprocess.Popen(["file-lock", "--as", "A", "docs", "--", "sleep", "30"])
    wait_until(lambda: table(mesh_home)["locks"])
    # The command runs (under the guard): file-lock forwards signals to it from here on.
    wait_until(lambda: [c for c in psutil.Process(proc.pid).children(recursive=True)
                        if c.name() == "sleep"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert table(mesh_home)["locks"] == {}


def test_a_sigterm_as_the_command_starts_is_passed_on(repo, mesh_home, tmp_path):
    """SIGTERM the moment the lock is granted, before or while the command starts: it is
    passed on to the command (never lost), so nothing runs on after the lock is released."""
    started = tmp_path / "started"
    for _ in range(5):
        proc = subprocess.Popen(["file-lock", "--as", "A", "docs", "--", "sh", "-c",
                                 f"echo $$ >> {started}; exec sleep 30"])
        wait_until(lambda: table(mesh_home)["locks"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert table(mesh_home)["locks"] == {}
    for pid in map(int, started.read_text().split() if started.exists() else []):
        wait_until(lambda: not psutil.pid_exists(pid)
                   or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


def test_kill_9_of_a_holder_lets_a_waiter_through(repo, run, mesh_home):
    holder = subprocess.Popen(["file-lock", "--as", "A", "docs", "--", "sleep", "60"])
    wait_until(lambda: table(mesh_home)["locks"])
    waiter = subprocess.Popen(["file-lock", "acquire", "--as", "B", "-w", "20", "docs"],
                              stdout=subprocess.PIPE, text=True)
    wait_until(lambda: table(mesh_home)["waits"])
    assert waiter.poll() is None
    holder.kill()  # SIGKILL: no cleanup runs; `sleep` is orphaned and does not anchor the lock
    holder.wait()
    out, _ = waiter.communicate(timeout=15)
    assert waiter.returncode == 0 and json.loads(out)["holder"] == "B"
    reclaimed = [e for e in events.read(MeshHome(str(mesh_home))) if e["event"] == "lock.reclaimed"]
    assert reclaimed and reclaimed[0]["holder"] == "A" and reclaimed[0]["reason"] == "holder dead"


def test_kill_9_of_a_waiter_leaves_no_edge(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "docs", check=0)
    waiter = subprocess.Popen(["file-lock", "acquire", "--as", "B", "docs"])
    wait_until(lambda: table(mesh_home)["waits"])
    waiter.kill()
    waiter.wait()
    run("file-lock", "acquire", "--as", "C", "-n", "web", check=0)  # any update reaps it
    assert table(mesh_home)["waits"] == {}


def test_lease_expires(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "--lease", "0.2", "docs", check=0)
    wait_until(lambda: policy.lease_expired(table(mesh_home)["locks"]["docs"], time.time()))
    assert run("file-lock", "acquire", "--as", "B", "-n", "docs", check=0).records[0]["holder"] == "B"


def test_status_lists_holders_and_waiters(repo, run, mesh_home):
    run("file-lock", "acquire", "--as", "A", "docs", check=0)
    waiter = subprocess.Popen(["file-lock", "acquire", "--as", "B", "docs", "web"])
    try:
        wait_until(lambda: table(mesh_home)["waits"])
        records = run("file-lock", "status", check=0).records
        lock = next(r for r in records if r["kind"] == "lock")
        wait = next(r for r in records if r["kind"] == "wait")
        assert lock["scope"] == "docs" and lock["state"] == "held" and lock["holder"] == "A"
        assert wait["waiter"] == "B" and wait["scopes"] == ["docs", "web"]
        assert wait["blocked_by"] == ["A"]
    finally:
        waiter.kill()
        waiter.wait()


def hook_call(path, cwd):
    return json.dumps({"session_id": "s", "cwd": str(cwd), "hook_event_name": "PreToolUse",
                       "tool_name": "Edit", "tool_input": {"file_path": str(path),
                                                           "old_string": "a", "new_string": "b"},
                       "tool_use_id": "toolu_1"})


def test_hook_denies_without_the_lock_and_allows_with_it(repo, run):
    call = hook_call(repo / "crates/core/src/lib.rs", repo)
    env = {"MESH_SESSION": "builder-1"}
    denied = run("file-lock", "check", "--hook", input=call, env=env)
    assert denied.returncode == 2 and "file-lock acquire crates/core" in denied.stderr
    run("file-lock", "acquire", "crates/core", env=env, check=0)
    run("file-lock", "check", "--hook", input=call, env=env, check=0)
    outside = run("file-lock", "check", "--hook", input=hook_call("/tmp/scratch.txt", repo),
                  env=env)
    assert outside.returncode == 2 and "outside the repository" in outside.stderr


@pytest.mark.parametrize("stdin,env", [
    ("not json", {"MESH_SESSION": "b"}),
    ("[1, 2]", {"MESH_SESSION": "b"}),
    (None, {}),  # no session: deny
    (None, {"MESH_SESSION": "../evil"}),
])
def test_hook_never_fails_open(repo, run, stdin, env):
    stdin = stdin if stdin is not None else hook_call(repo / "docs/guide.md", repo)
    result = run("file-lock", "check", "--hook", input=stdin, env=env)
    assert result.returncode == 2 and result.stderr.startswith("file-lock: ")
