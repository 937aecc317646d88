"""meshctl init: the whole mesh booted (real supervisors, workers and Redis; --agent shell
but once), idempotent (its state directory private, the repository recorded; none outside a
repository), and its pieces: mesh-anchor --drain, the pure plan."""

import contextlib
import json
import os
import shutil
import signal
import subprocess

import psutil
import pytest

from meshtools.core.roles import load
from meshtools.core.errors import BadInput, UsageError
from meshtools.mesh.boot import describe, plan, select

from .helpers import git, on_terminal, run_tree, wait_until

SEVEN = ["anchor", "builder", "groomer", "memory", "research", "security", "triage"]


@pytest.fixture
def mesh(mesh_home, repo):
    """A booted mesh's cleanup: every supervisor in spawns/ SIGTERM'd, none left behind.
    The scheduled roles' standing prompts are `true` here: a shell agent runs them."""
    mesh_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (mesh_home / "roles.toml").write_text("".join(
        f'[roles.{role}]\nprompt = "true"\n' for role in ("memory", "security", "groomer")))
    yield mesh_home
    pids = []
    for state in (mesh_home / "spawns").glob("*.json"):
        if state.name.endswith(".spawn.json"):
            continue
        pid = json.loads(state.read_text()).get("supervisor_pid")
        try:
            tree = run_tree(pid)
        except psutil.NoSuchProcess:
            continue
        pids += tree
        os.kill(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(pids, timeout=60)
    for p in alive:
        p.kill()
    assert not alive, alive


def init(run, *args, check=0):
    return run("meshctl", "init", "--json", *args, check=check, timeout=120)


def peers(run):
    return {r["id"]: r for r in run("coord-peers", "--json", check=0).records}


def steps(result):
    return {r["session"]: r for r in result.records if r["kind"] == "step" and r.get("session")}


def test_meshctl_init_is_idempotent_and_records_the_repository(run, repo, mesh_home):
    first = run("meshctl", "init", "--no-agents", check=0).records[-1]
    assert first["kind"] == "mesh" and first["new"] is True and first["root"] == str(repo)
    assert oct(os.stat(mesh_home).st_mode & 0o777) == "0o700"
    assert oct(os.stat(mesh_home / "config.toml").st_mode & 0o777) == "0o600"
    again = run("meshctl", "init", "--no-agents", check=0).records[-1]
    assert again["new"] is False and again["created"] == first["created"]
    assert run("meshctl", "home", check=0).stdout.strip() == str(mesh_home)


def test_init_makes_an_existing_home_private_and_says_so(run, repo, mesh_home):
    """A MESH_HOME the user made (0755) is tightened to 0700, once, with a note on stderr."""
    mesh_home.mkdir(mode=0o755)
    os.chmod(mesh_home, 0o755)
    first = run("meshctl", "init", "--no-redis", check=0)
    assert oct(os.stat(mesh_home).st_mode & 0o777) == "0o700"
    assert "0755" in first.stderr and "0700" in first.stderr
    assert run("meshctl", "init", "--no-redis", check=0).stderr == ""


def test_meshctl_outside_a_repository_without_a_mesh_is_a_config_error(run, tmp_path):
    result = run("meshctl", "init", cwd=str(tmp_path))
    assert result.returncode == 78 and "not inside a git repository" in result.stderr



def test_init_boots_seven_ready_sessions_and_a_second_init_starts_nothing(run, mesh):
    first = init(run, "--agent", "shell")
    kinds = [r["kind"] for r in first.records]
    assert set(kinds[:-1]) == {"step"} and kinds[-1] == "mesh"
    assert [r["step"] for r in first.records[:2]] == ["home", "redis"]
    started = steps(first)
    assert sorted(s["role"] for s in started.values()) == SEVEN
    assert all(s["status"] == "started" for s in started.values())
    now = peers(run)
    assert sorted(now) == sorted(f"{role}-1" for role in SEVEN)  # one anchor: anchor-1
    assert all(p["state"] == "alive" and p["pid"] == started[sid]["pid"]
               for sid, p in now.items())
    wait_until(lambda: all(p["phase"] == "waiting" for p in peers(run).values()), timeout=30)
    assert now["anchor-1"]["branch"] == "main" and now["builder-1"]["branch"] == "mesh/builder"
    # the anchor's session: its loop, and the anchor's queue worker under it
    anchor = [p.cmdline() for p in run_tree(now["anchor-1"]["pid"])[1:]]
    assert any("mesh-anchor" in " ".join(c) and "--drain" in c for c in anchor)
    assert any("queue-drain" in " ".join(c) and "anchor" in c for c in anchor)

    again = init(run, "--agent", "shell")
    assert {sid: (s["status"], s["pid"]) for sid, s in steps(again).items()} == \
        {sid: ("running", s["pid"]) for sid, s in started.items()}
    assert again.records[-1]["failed"] == []
    code, shown, _ = on_terminal(["meshctl", "init", "--agent", "shell"])
    assert code == 0 and "✔ redis" in shown and "{" not in shown
    assert f"· builder-1     running (pid {started['builder-1']['pid']}, waiting)" in shown
    assert "7 running" in shown


def test_a_shell_mesh_enqueues_no_standing_prompts(run, mesh):
    """Under --agent shell the roles' standing prompts (plain words) ran as commands and a
    fresh mesh showed six dead letters at once: the anchor enqueues none for a shell mesh."""
    from .helpers import redis_of

    (mesh / "roles.toml").unlink()  # the packaged prompts, as a user has them
    init(run, "--agent", "shell")
    r = redis_of(mesh)
    # the anchor's first step schedules, then copies the event log into the events stream
    wait_until(lambda: r.exists("mesh:events"), timeout=30)
    assert not [t for t in r.hkeys("tasks:index") if t.startswith("standing-")]
    assert run("queue-dead", "list", "--json", check=0).records == []


def test_a_killed_worker_is_the_one_init_starts_again(run, mesh):
    """--roles without the anchor (-anchor): it would respawn the dead worker itself."""
    first = steps(init(run, "--agent", "shell", "--roles", "builder,research,-anchor"))
    assert sorted(first) == ["builder-1", "research-1"]
    victim = psutil.Process(first["builder-1"]["pid"])
    tree = [victim, *victim.children(recursive=True)]
    for p in tree:
        p.kill()
    psutil.wait_procs(tree, timeout=30)
    assert peers(run)["builder-1"]["state"] == "dead"
    again = steps(init(run, "--agent", "shell", "--roles", "builder,research,-anchor"))
    assert again["research-1"]["status"] == "running"
    assert again["research-1"]["pid"] == first["research-1"]["pid"]
    assert again["builder-1"]["status"] == "started"
    assert again["builder-1"]["pid"] != first["builder-1"]["pid"]
    assert peers(run)["builder-1"]["pid"] == again["builder-1"]["pid"]
    assert sorted(peers(run)) == ["builder-1", "research-1"]


def test_a_task_pushed_to_builder_runs_and_the_anchor_lands_it(run, mesh, repo):
    init(run, "--agent", "shell", "--roles", "builder")
    run("queue-push", "--role", "builder", "--id", "b1",
        "echo built > built.txt && git add built.txt && "
        "git -c user.name=b -c user.email=b@b commit -qm 'build it'", check=0)
    result = run("queue-results", "--wait", "b1", "--timeout", "60", check=0).records[0]
    assert result["status"] == "ok" and result["worker"] == "builder-1"
    wait_until(lambda: "built.txt" in git(repo, "ls-tree", "--name-only", "main"), timeout=60)


def test_unknown_role_is_65_with_the_roles_and_nothing_starts(run, mesh):
    result = run("meshctl", "init", "--agent", "shell", "--roles", "builder,biulder")
    assert result.returncode == 65 and result.stderr.count("\n") == 1
    assert "unknown role 'biulder'" in result.stderr and "did you mean 'builder'" in result.stderr
    assert not (mesh / "spawns").exists() and not (mesh / "redis").exists()


def test_a_missing_agent_cli_is_69_and_nothing_is_spawned(run, mesh, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(shutil.which("queue-drain")) + ":/usr/bin:/bin")
    result = run("meshctl", "init")
    assert result.returncode == 69 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "claude: command not found" in result.stderr
    assert not (mesh / "spawns").exists() and not (mesh / "redis").exists()
    assert run("coord-peers", "--json", check=0).records == []


def test_a_session_that_fails_to_start_is_named_with_its_log_and_init_exits_69(run, mesh):
    (mesh / "config.toml").write_text("[supervisor]\nmin_uptime = -1\n")  # refused by it
    result = init(run, "--agent", "shell", "--roles", "research,-anchor", check=69)
    failed = steps(result)["research-1"]
    assert failed["status"] == "failed" and "--min-uptime" in failed["error"]
    assert result.records[-1]["failed"] == ["research-1"]
    assert result.stderr.count("\n") == 1 and "research-1 failed: its supervisor exited: " \
        "Error: Invalid value for '--min-uptime'" in result.stderr
    assert not (mesh / "spawns" / "research-1.spawn.json").exists()


def test_a_fatal_session_is_reported_and_restarted_only_when_asked(run, mesh, anchor_process):
    gone = anchor_process()
    run("coord-register", "--role", "research", "--id", "research-1", "--pid", str(gone.pid),
        "--phase", "FATAL", check=0)
    gone.kill()
    gone.wait()
    reported = init(run, "--agent", "shell", "--roles", "research,-anchor", check=69)
    assert steps(reported)["research-1"]["status"] == "fatal"
    assert reported.stderr.count("\n") == 1 and "research-1 is FATAL" in reported.stderr
    assert not (mesh / "spawns").exists()
    restarted = init(run, "--agent", "shell", "--roles", "research,-anchor", "--restart-fatal")
    assert steps(restarted)["research-1"]["status"] == "started"
    assert peers(run)["research-1"]["state"] == "alive"


def test_the_claude_agent_boots_with_the_stand_in(run, mesh, claude_cli):
    booted = steps(init(run, "--roles", "research,-anchor"))
    assert booted["research-1"]["status"] == "started"
    assert "--agent claude" in " ".join(json.loads(
        (mesh / "spawns" / "research-1.spawn.json").read_text())["respawn"])


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_lays_out_a_window_per_agent_and_the_dash(run, mesh, repo, tmp_path):
    sock_dir = tmp_path / "tmux"
    sock_dir.mkdir()
    env = {"TMUX_TMPDIR": str(sock_dir), "TMUX": ""}
    tmux_env = dict(os.environ, **env)
    try:
        result = run("meshctl", "init", "--agent", "shell", "--tmux", "--roles",
                     "builder,research", env=env, timeout=120, check=0)
        name = f"mesh-{repo.name}"
        assert result.records[-1]["tmux"] == name
        windows = subprocess.run(["tmux", "list-windows", "-t", name, "-F", "#{window_name}"],
                                 env=tmux_env, capture_output=True, text=True).stdout.split()
        assert sorted(windows) == ["anchor-1", "builder-1", "dash", "research-1"]
        # the anchor's respawn of a dead peer opens its window in this session too
        respawn = json.loads((mesh / "spawns" / "builder-1.spawn.json").read_text())["respawn"]
        assert respawn[respawn.index("--tmux-session") + 1] == name
        assert all(p["state"] == "alive" for p in peers(run).values())
        code, shown, _ = on_terminal(["meshctl", "init", "--agent", "shell", "--tmux",
                                      "--roles", "builder,research"], env=env)
        assert code == 0 and "3 running" in shown
    finally:
        subprocess.run(["tmux", "kill-server"], env=tmux_env, capture_output=True)
    wait_until(lambda: all(p["state"] == "dead" for p in peers(run).values()), timeout=30)


def test_mesh_anchor_drain_goes_with_its_worker_and_passes_a_stop_on(run, repo, mesh_home):
    started = []  # every process, for the cleanup whatever fails

    def start():
        anchor = subprocess.Popen(["mesh-anchor", "--drain", "--agent", "shell", "--json"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(psutil.Process(anchor.pid))

        def worker():
            with contextlib.suppress(psutil.Error):  # (redis-server starting, then gone)
                return next((p for p in psutil.Process(anchor.pid).children()
                             if "queue-drain" in " ".join(p.cmdline())), None)

        wait_until(worker, timeout=30)
        started.append(worker())
        return anchor, started[-1]

    try:
        anchor, worker = start()
        worker.kill()
        assert anchor.wait(timeout=30) == 69
        anchor, worker = start()
        anchor.send_signal(signal.SIGTERM)
        assert anchor.wait(timeout=30) == 143
        worker.wait(timeout=5)  # the stop passed on, and waited for: it is gone
        anchor, worker = start()
        anchor.kill()  # kill -9, no supervisor around it: its worker must not run on alone
        anchor.wait(timeout=30)
        worker.wait(timeout=30)
    finally:
        for p in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


# --- pure ---------------------------------------------------------------------------------

def test_select_boots_the_anchor_unless_left_out():
    roles = load()
    assert select(roles, None) == ["anchor", "builder", "memory", "triage", "research",
                                   "security", "groomer"]
    assert select(roles, "research,builder") == ["anchor", "builder", "research"]
    assert select(roles, "builder,-anchor") == ["builder"]
    assert "memory" not in select(roles, "-memory") and len(select(roles, "-memory")) == 6
    with pytest.raises(BadInput, match="did you mean 'builder'"):
        select(roles, "biulder")
    assert select(roles, "-anchor") == select(roles, None)[1:]
    with pytest.raises(UsageError):
        select(roles, "builder,-builder,-anchor")


def test_plan_starts_the_missing_takes_over_the_dead_and_leaves_the_fatal():
    sessions = [{"id": "builder-2", "role": "builder", "state": "dead", "phase": "waiting"},
                {"id": "research-1", "role": "research", "state": "stale", "pid": 7},
                {"id": "triage-1", "role": "triage", "state": "dead", "phase": "FATAL"}]
    actions = {a["role"]: (a["action"], a["session"]) for a in
               plan(["anchor", "builder", "research", "triage"], sessions)}
    assert actions == {"anchor": ("start", "anchor-1"), "builder": ("start", "builder-2"),
                       "research": ("running", "research-1"), "triage": ("fatal", "triage-1")}
    assert plan(["triage"], sessions, restart_fatal=True)[0]["action"] == "restart"


def test_describe_is_one_line_with_a_mark_and_a_time():
    line = describe({"step": "builder", "status": "started", "session": "builder-1",
                     "pid": 12, "seconds": 0.8})
    assert line.startswith("✔ builder-1") and "started (pid 12)" in line
    assert line.endswith("0.80s")
