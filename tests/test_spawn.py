"""mesh-spawn: a role's worker in its worktree under the supervisor, detached or in tmux."""

import json
import os
import shutil
import signal
import subprocess

import psutil
import pytest

from .helpers import gone, run_tree, session_record, spawn, stop_tree, wait_until


def test_detach_and_tmux_are_refused_together(run, repo, mesh_home):
    result = run("mesh-spawn", "builder", "--detach", "--tmux")
    assert result.returncode == 64 and "--detach and --tmux exclude each other" in result.stderr
    assert not (repo.parent / f"{repo.name}-wt-builder").exists()


def test_a_tmux_session_without_tmux_is_a_usage_error(run, repo, mesh_home):
    result = run("mesh-spawn", "builder", "--detach", "--tmux-session", "mesh-x")
    assert result.returncode == 64 and "--tmux-session goes with --tmux" in result.stderr


def test_unknown_role_is_refused_and_nothing_is_made(run, repo, mesh_home):
    result = run("mesh-spawn", "nope", "--detach")
    assert result.returncode == 65 and "unknown role 'nope'" in result.stderr
    assert not (repo.parent / f"{repo.name}-wt-nope").exists()
    assert not (mesh_home / "sessions").exists() or not any((mesh_home / "sessions").iterdir())


def test_a_detached_queue_worker_drains_its_role_queue_in_its_worktree(run, repo):
    record = spawn(run, "builder", "--queue", "--agent", "shell", "--detach").records[-1]
    worktree = repo.parent / f"{repo.name}-wt-builder"
    assert record["session"] == "builder-1" and record["worktree"] == str(worktree)
    assert os.path.exists(record["log"])
    peer = session_record(run, "builder-1")
    assert peer["state"] == "alive" and peer["pid"] == record["pid"]
    assert peer["branch"] == "mesh/builder"
    run("queue-push", "--role", "builder", "--id", "t1", "pwd; echo $MESH_SESSION", check=0)
    result = run("queue-results", "--wait", "t1", "--timeout", "30", check=0).records[0]
    assert result["status"] == "ok" and result["worker"] == "builder-1"
    assert result["output"].split() == [str(worktree), "builder-1"]
    pids = stop_tree(record["pid"])
    assert gone(pids)


def test_a_second_spawn_of_a_one_session_role_is_refused(run, repo):
    first = spawn(run, "security", "--queue", "--agent", "shell", "--detach").records[-1]
    try:
        second = run("mesh-spawn", "security", "--queue", "--agent", "shell", "--detach")
        assert second.returncode in (69, 75) and "security" in second.stderr
        assert len([r for r in run("coord-peers", "--json", check=0).records
                    if r["role"] == "security"]) == 1
    finally:
        assert gone(stop_tree(first["pid"]))


def test_spawning_a_live_sessions_id_is_refused_before_anything_starts(run, repo, mesh_home,
                                                                      anchor_process):
    """It was 69 (\"the agent's supervisor exited before it registered\"), after starting a
    supervisor that could only refuse the id."""
    live = anchor_process()
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(live.pid), check=0)
    refused = run("mesh-spawn", "builder", "--id", "b1", "--queue", "--agent", "shell",
                  "--detach", env={"MESH_STALE_AFTER": "0"})
    assert refused.returncode == 75 and refused.stderr.startswith(
        "mesh-spawn: session id b1 is stale: pid") and refused.stderr.count("\n") == 1
    assert not (mesh_home / "spawns").exists()
    assert session_record(run, "b1")["pid"] == live.pid


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_spawn_runs_the_worker_in_a_tmux_window(run, repo, tmp_path):
    sock_dir = tmp_path / "tmux"
    sock_dir.mkdir()
    env = {"TMUX_TMPDIR": str(sock_dir), "TMUX": ""}
    try:
        record = run("mesh-spawn", "research", "--queue", "--agent", "shell", "--tmux",
                     "--json", env=env, check=0, timeout=60).records[-1]
        windows = subprocess.run(["tmux", "list-windows", "-a", "-F", "#{window_name}"],
                                 env=dict(os.environ, **env), capture_output=True, text=True)
        assert "research" in windows.stdout.split()
        assert session_record(run, record["session"])["state"] == "alive"
        run("queue-push", "--role", "research", "--id", "r1", "echo from tmux", check=0)
        result = run("queue-results", "--wait", "r1", "--timeout", "30", check=0).records[0]
        assert result["status"] == "ok" and "from tmux" in result["output"]
    finally:
        subprocess.run(["tmux", "kill-server"], env=dict(os.environ, **env), capture_output=True)
    wait_until(lambda: session_record(run, "research-1")["state"] == "dead", timeout=20)


def test_the_spawn_record_is_kept_for_the_anchor(run, repo, mesh_home):
    record = spawn(run, "builder", "--queue", "--agent", "shell", "--detach").records[-1]
    try:
        info = json.loads((mesh_home / "spawns" / "builder-1.spawn.json").read_text())
        assert info["queue"] is True and info["mode"] == "detach" and info["role"] == "builder"
    finally:
        assert gone(stop_tree(record["pid"]))


def test_a_persistent_agent_reruns_its_standing_prompt(run, repo, mesh_home, claude_cli):
    mesh_home.mkdir(parents=True, exist_ok=True)
    # Each run is short (a rapid exit): only as clean exits may they outnumber max_failures.
    (mesh_home / "config.toml").write_text("[supervisor]\nrerun_delay = 0.2\nmax_failures = 2\n"
                                           "base = 0.1\n")
    record = spawn(run, "research", "--detach").records[-1]
    try:
        def runs():
            if not claude_cli.exists():
                return []
            return [json.loads(line) for line in claude_cli.read_text().splitlines()]

        wait_until(lambda: len(runs()) >= 4, timeout=60)
        standing = run("mesh-roles", "show", "research", "--json", check=0).records[0]["prompt"]
        assert all(standing in r["prompt"] and r["MESH_SESSION"] == "research-1"
                   for r in runs())
        assert session_record(run, "research-1")["phase"] != "FATAL"
    finally:
        assert gone(stop_tree(record["pid"]))


def test_a_missing_agent_cli_is_69_before_anything_starts(run, repo, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(shutil.which("queue-drain")) + ":/usr/bin:/bin")
    result = run("mesh-spawn", "builder", "--queue", "--detach")
    assert result.returncode == 69 and "claude: command not found" in result.stderr
    assert run("coord-peers", "--json", check=0).records == []
    unknown = run("mesh-spawn", "builder", "--queue", "--agent", "nope", "--detach")
    assert unknown.returncode == 64 and "unknown agent 'nope'" in unknown.stderr


def test_in_the_foreground_mesh_spawn_becomes_the_supervisor(run, repo):
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    spawned = subprocess.Popen(["mesh-spawn", "builder", "--queue", "--agent", "shell"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(r["pid"] == spawned.pid
                               for r in run("coord-peers", "--json", check=0).records),
                   timeout=30)
        # the supervisor (this very pid) starts its queue-drain once it has handed off
        wait_until(lambda: psutil.Process(spawned.pid).children())
        # and that starts the mesh's Redis, a daemon that outlives it (run_tree leaves it out)
        wait_until(EmbeddedRedis(MeshHome.find()).running, timeout=30)
        tree = [p.pid for p in run_tree(spawned.pid)]
        assert len(tree) >= 2
        spawned.send_signal(signal.SIGTERM)
        assert spawned.wait(timeout=30) == 143
        assert gone(tree)
    finally:
        spawned.kill()


def test_what_the_mesh_runs_outlives_the_run_that_started_it(run, repo, mesh_home):
    """A run that starts the mesh's Redis (first need) and a detached peer, then ends: both
    are re-parented to its supervisor (a subreaper), and neither is taken for a stray."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    run("mesh-supervise", "--restart", "on-failure", "--", "sh", "-c",
        "mesh-redis start >/dev/null && "
        "mesh-spawn research --queue --agent shell --detach >/dev/null", check=0)
    redis = EmbeddedRedis(MeshHome(str(mesh_home)))
    assert redis.running()
    peer = session_record(run, "research-1")
    assert peer["state"] == "alive"
    assert gone(stop_tree(peer["pid"]))


def test_a_detached_agent_stops_when_its_mesh_home_is_deleted(run, repo, mesh_home, claude_cli):
    """issue 8: a leftover persistent agent, waiting to re-run, outlived its mesh."""
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[supervisor]\nrerun_delay = 300\n")
    record = spawn(run, "research", "--detach").records[-1]
    state = mesh_home / "spawns" / "research-1.json"
    wait_until(lambda: state.exists() and json.loads(state.read_text())["state"] == "backoff",
               timeout=30)  # its first run is over: waiting to run again
    tree = [p.pid for p in run_tree(record["pid"])]
    try:
        shutil.rmtree(mesh_home.rename(mesh_home.with_name("deleted")))  # no writer races it
        wait_until(lambda: gone(tree), timeout=30)
    finally:
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_queue_workers_session_shows_the_task_it_runs(run, repo, tmp_path):
    """waiting once it blocks on its queue, running with the task's id while it runs one,
    waiting (no task) after: what coord-peers, meshctl status and the dash show."""
    record = spawn(run, "builder", "--queue", "--agent", "shell", "--detach").records[-1]
    release = tmp_path / "release"
    try:
        wait_until(lambda: session_record(run, "builder-1")["phase"] == "waiting")
        assert session_record(run, "builder-1").get("task") is None
        run("queue-push", "--role", "builder", "--id", "slow-1",
            f"while [ ! -e {release} ]; do sleep 0.05; done", check=0)
        wait_until(lambda: session_record(run, "builder-1")["phase"] == "running")
        peer = session_record(run, "builder-1")
        assert peer["task"] == "slow-1" and peer["task_since"]
        release.touch()
        run("queue-results", "--wait", "slow-1", "--timeout", "30", check=0)
        wait_until(lambda: session_record(run, "builder-1")["phase"] == "waiting")
        assert session_record(run, "builder-1")["task"] is None
    finally:
        release.touch()
        assert gone(stop_tree(record["pid"]))


def test_a_crashed_workers_session_runs_no_task_while_it_backs_off(run, repo, tmp_path,
                                                                    mesh_home):
    """kill -9 of a worker mid-task left its session saying it ran that task all through
    the supervisor's backoff (the dash and meshctl status showed it so)."""
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[supervisor]\nbase = 60.0\ncap = 60.0\n")
    record = spawn(run, "builder", "--queue", "--agent", "shell", "--detach").records[-1]
    run("queue-push", "--role", "builder", "--id", "slow-1",
        f"while [ ! -e {tmp_path / 'never'} ]; do sleep 0.05; done", check=0)
    try:
        wait_until(lambda: session_record(run, "builder-1").get("task") == "slow-1",
                   timeout=30)
        worker = next(p for p in run_tree(record["pid"])[1:]
                      if "queue-drain" in " ".join(p.cmdline()))
        worker.kill()
        wait_until(lambda: session_record(run, "builder-1")["phase"].startswith("backoff"),
                   timeout=30)
        peer = session_record(run, "builder-1")
        assert peer["task"] is None and peer["last_task"] == "slow-1"
    finally:
        assert gone(stop_tree(record["pid"]))
