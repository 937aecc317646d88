"""docs/recipes.md's recipes, run exactly as written there (bash -c on the line in its plain
fence; its ```sh blocks are sketches, not run)."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .helpers import wait_for_output

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin dir, where the entry points live


def recipe(word: str) -> str:
    """The one line in a plain fence of docs/recipes.md that mentions word."""
    recipes = (ROOT / "docs" / "recipes.md").read_text()
    fences = re.findall(r"^```(\w*)\n(.*?)^```$", recipes, re.S | re.M)
    [line] = [block.strip() for language, block in fences if not language and word in block]
    return line


def records(done) -> list[dict]:
    """A line's stdout as JSON records (piped, the commands print JSON lines)."""
    return [json.loads(x) for x in done.stdout.splitlines() if x.strip()]


def bash(line: str, shell: str = "bash", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-c", line], capture_output=True, text=True, timeout=60,
                          **kw)


def test_the_groomer_on_a_cron_schedule(repo, tmp_path, run):
    """The crontab line as cron runs it: its command, `\\%` unescaped, by sh from a bare
    HOME whose ~/.local/bin holds the commands (install.sh's place), twice on one day."""
    line = recipe("queue-push")
    schedule, command = line.split(maxsplit=5)[:5], line.split(maxsplit=5)[5]
    assert all(re.fullmatch(r"[\d*/,-]+", field) for field in schedule)
    home = tmp_path / "cron-home"
    (home / "projects").mkdir(parents=True)
    (home / "projects" / "app").symlink_to(repo)
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "queue-push").symlink_to(BIN / "queue-push")
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh",
           "MESH_HOME": os.environ["MESH_HOME"]}
    first, again = (bash(command.replace("\\%", "%"), "sh", env=env, cwd=home)
                    for _ in range(2))
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    [pushed], [duplicate] = records(first), records(again)
    assert re.fullmatch(r"groom-\d{4}-\d\d-\d\d", pushed["id"]) and pushed["queue"] == "groomer"
    assert duplicate["id"] == pushed["id"] and duplicate["duplicate"] is True
    [stat] = [s for s in run("queue-stat", check=0).records if s["queue"] == "groomer"]
    assert stat["length"] == 1


def test_piping_coord_peers_into_coord_send(repo, run):
    me = str(os.getpid())
    for role, sid in (("builder", "builder-1"), ("builder", "builder-2"), ("memory", "mem-1")):
        run("coord-register", "--role", role, "--id", sid, "--pid", me, check=0)
    sent = bash(recipe("coord-send"))
    assert sent.returncode == 0, sent.stderr
    assert sorted(r["to"] for r in records(sent)) == ["builder-1", "builder-2"]
    [message] = run("coord-recv", "--as", "builder-2", check=0).records
    assert message["body"] == "rebase on main: the API changed"
    assert run("coord-recv", "--as", "mem-1", check=0).records == []


def test_queue_results_follow_into_jq(run):
    follow = subprocess.Popen(["bash", "-c", recipe("queue-results --follow")], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        run("queue-push", "--id", "fine", "true", check=0)
        run("queue-push", "--id", "broken", "--max-attempts", "1", "exit 3", check=0)
        run("queue-drain", "--burst", check=0)
        seen = wait_for_output(follow.stdout, "broken", timeout=30)
        assert seen.splitlines()[0] == "broken failed: exit 3" and "fine" not in seen
    finally:
        os.killpg(follow.pid, signal.SIGTERM)
        follow.wait(timeout=30)



def cron_home(tmp_path, repo, *commands) -> tuple[Path, dict]:
    """A bare HOME as cron gives it: ~/projects/app is the repository, ~/.local/bin holds
    the commands (install.sh's place), PATH is the system's."""
    home = tmp_path / "cron-home"
    (home / "projects").mkdir(parents=True)
    (home / "projects" / "app").symlink_to(repo)
    (home / ".local" / "bin").mkdir(parents=True)
    for command in commands:
        (home / ".local" / "bin" / command).symlink_to(BIN / command)
    return home, {"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh",
                  "MESH_HOME": os.environ["MESH_HOME"]}


def test_a_cron_health_check(repo, tmp_path, run):
    """Silent while all is well (cron mails nothing); exit 1 with the problem on stderr."""
    from .helpers import redis_of

    line = recipe("status --check")
    command = line.split(maxsplit=5)[5]
    home, env = cron_home(tmp_path, repo, "meshctl")
    redis_of(Path(os.environ["MESH_HOME"]))  # the mesh's Redis is up: nothing is wrong
    healthy = bash(command, "sh", env=env, cwd=home)
    assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")
    run("queue-pause", "--for", "5m", check=0)
    paused = bash(command, "sh", env=env, cwd=home)
    assert paused.returncode == 1 and paused.stdout == ""
    assert paused.stderr.startswith("meshctl status: paused: dispatch paused until")


def test_mesh_top_into_a_monitoring_line(repo, run):
    from .helpers import redis_of

    redis_of(Path(os.environ["MESH_HOME"]))
    me = str(os.getpid())
    for sid in ("builder-1", "research-1"):
        run("coord-register", "--role", sid.split("-")[0], "--id", sid, "--pid", me, check=0)
    shown = bash(recipe("mesh-top"))
    assert (shown.returncode, shown.stdout) == (0, "mesh: 2 alive, 0 problem(s)\n"), shown.stderr
    run("queue-pause", "--for", "5m", check=0)
    assert bash(recipe("mesh-top")).stdout == "mesh: 2 alive, 1 problem(s)\n"


def test_the_mesh_in_a_tmux_session_of_its_own(tmp_path, claude_cli, run):
    """The line up to its attach (a test has no terminal to attach): a window per agent and
    one for the dash, in the session the line attaches to."""
    from .helpers import git

    home = tmp_path / "home"
    app = home / "projects" / "app"
    app.mkdir(parents=True)
    (app / "README.md").write_text("app\n")
    git(app, "init", "-q", "-b", "main")
    git(app, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(app, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    booting, attach = recipe("--tmux").split(" && tmux attach -t ")
    sockets = tmp_path / "tmux"
    sockets.mkdir()
    env = dict(os.environ, HOME=str(home), TMUX_TMPDIR=str(sockets), TMUX="")
    try:
        booted = bash(booting, env=env, cwd=home)
        assert booted.returncode == 0, booted.stderr
        windows = subprocess.run(["tmux", "list-windows", "-t", attach, "-F",
                                  "#{window_name}"], env=env, capture_output=True, text=True)
        assert sorted(windows.stdout.split()) == sorted(
            ["dash", *(f"{role}-1" for role in ("anchor", "builder", "memory", "triage",
                                                "research", "security", "groomer"))])
    finally:
        subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
        run("meshctl", "down", "--all", "--timeout", "0", cwd=app, check=None, timeout=120)
