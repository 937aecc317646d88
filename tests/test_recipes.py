"""The README's recipes, run exactly as written there (bash -c on the line in its fence)."""

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
    """The one line in a fence of the README's Recipes section that mentions word."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    [line] = [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)
              if word in block]
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
    follow = subprocess.Popen(["bash", "-c", recipe("jq")], stdout=subprocess.PIPE,
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

