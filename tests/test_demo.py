"""meshctl demo: the whole demo from a clean HOME (real mesh, real processes), --keep, ^C,
and its pieces (the routes of its phrasings, the scripted agent's decisions)."""

import json
import os
import re
import shutil
import subprocess

import pytest

from meshtools.core import roles
from meshtools.mesh import routing
from meshtools.dash import text
from meshtools.demo import agent, scenario
from meshtools.demo.runner import Demo, StepFailed

from .helpers import BIN, interrupted_on_terminal, on_terminal

STEP_NAMES = [step.name for step in scenario.STEPS]


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """A newcomer's shell: an empty HOME (no git identity), no MESH_HOME, cwd outside any
    repository; the demo's scratch directories go under tmp_path."""
    home, elsewhere, tmp = tmp_path / "home", tmp_path / "elsewhere", tmp_path / "tmp"
    for path in (home, elsewhere, tmp):
        path.mkdir()
    monkeypatch.chdir(elsewhere)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "GIT_"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), PATH=BIN + os.pathsep + os.environ["PATH"],
               XDG_CONFIG_HOME=str(home / ".config"))
    return env


def processes_in(path: str) -> list[tuple[int, str]]:
    """Every process of ours whose working directory or command line is inside path."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours
            continue
        if cwd == path or cwd.startswith(path + os.sep) or path in argv:
            found.append((int(pid), argv))
    return found


def test_demo_from_a_clean_home_piped(clean, tmp_path):
    result = subprocess.run([os.path.join(BIN, "meshctl"), "demo"], env=clean, text=True,
                            capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["ts"].endswith("Z") for r in records)
    steps = [r for r in records if r["kind"] == "step"]
    assert [s["step"] for s in steps] == STEP_NAMES
    assert all(s["status"] == "done" and s["text"] for s in steps)
    done = records[-1]
    assert done["kind"] == "demo" and done["status"] == "ok" and not done["kept"]
    by_step = {s["step"]: s for s in steps}
    assert by_step["execute"]["routes"] == {t.id: t.role for t in scenario.TASKS}
    assert all(r["status"] == "ok" for r in by_step["results"]["results"].values())
    assert "(cherry picked from commit" in "\n".join(by_step["landed"]["lines"])
    assert by_step["deadlock"]["exit_code"] == 75 and "deadlock" in by_step["deadlock"]["message"]
    killed = by_step["killed"]
    assert killed["finished_by"].startswith("builder-") and killed["finished_by"] != killed["killed"]
    scratch = os.path.dirname(by_step["scratch"]["repository"])
    assert not os.path.exists(scratch) and not os.listdir(tmp_path / "tmp")
    assert processes_in(scratch) == []


def test_demo_keep_on_a_terminal_leaves_the_mesh_up(clean):
    code, shown, err = on_terminal([os.path.join(BIN, "meshctl"), "demo", "--keep"], clean,
                                   columns=60)
    assert code == 0, err
    lines = shown.replace("\r\n", "\n").splitlines()
    for n, step in enumerate((s for s in scenario.STEPS if s.name not in ("down", "cleanup")), 1):
        assert any(f"✔ [{n}/9] {step.text}" in line for line in lines), step
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON on a terminal
    [hint] = [line for line in lines if "&& meshctl dash" in line]
    repo = hint.split("cd ", 1)[1].split(" && ")[0]
    scratch = os.path.dirname(repo)
    try:
        assert os.path.isdir(repo)
        running = re.findall(r"· \[\d+/9\][^\r\n]*", shown)  # a step's line while it runs
        assert len(running) == 9 and all(text.width(line) < 60 for line in running), running
        assert any(line.endswith("…") and "[2/9] Boot its mesh" in line for line in running)
        env = dict(clean, MESH_HOME=os.path.join(repo, ".git", "meshtools"))
        peers = subprocess.run(["coord-peers", "--json"], env=env, cwd=repo, text=True,
                               capture_output=True, check=True).stdout.splitlines()
        assert {json.loads(p)["state"] for p in peers} == {"alive"} and len(peers) == 8
    finally:
        subprocess.run(["meshctl", "down", "--all"], env=clean, cwd=repo, check=True,
                       capture_output=True, timeout=60)
        shutil.rmtree(scratch)
    assert processes_in(scratch) == []


def test_interrupted_demo_cleans_up(clean, monkeypatch, tmp_path):
    for key, value in clean.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("MESH_")]:
        monkeypatch.delenv(key)
    code, shown = interrupted_on_terminal([os.path.join(BIN, "meshctl"), "demo"], "[5/11]",
                                          timeout=120)
    assert code == 130
    [scratch] = {line.split()[0].rsplit("/demo-app", 1)[0]
                 for line in shown.splitlines() if "/demo-app (" in line}
    assert not os.path.exists(scratch) and not os.listdir(tmp_path / "tmp")
    assert processes_in(scratch) == []


def test_a_failing_step_is_named_and_cleaned_up(clean, monkeypatch):
    """A step that fails after the mesh is up (here: no second builder) stops the mesh and
    removes the scratch directory before the error, which names the step."""
    for key in [k for k in os.environ if k.startswith("MESH_")]:
        monkeypatch.delenv(key)
    for key, value in clean.items():
        monkeypatch.setenv(key, value)

    class NoSecondBuilder(Demo):
        def spawn(self):
            raise StepFailed("mesh-spawn builder exited 69: no second builder today")

    shown = []
    with pytest.raises(StepFailed, match="^step spawn .* no second builder today") as failed:
        NoSecondBuilder(False, lambda record, text: shown.append(record)).run()
    assert failed.value.exit_code == 69
    assert [r.get("step") for r in shown] == ["scratch", "init", "spawn"]
    cleanup = shown[-1]
    assert cleanup["kind"] == "cleanup" and cleanup["why"] == "failed" and not cleanup["error"]
    scratch = os.path.dirname(shown[0]["repository"])
    assert not os.path.exists(scratch)
    assert processes_in(scratch) == []


@pytest.mark.parametrize("task", [*scenario.TASKS, scenario.SLOW_TASK], ids=lambda t: t.id)
def test_each_demo_phrasing_routes_to_its_role(task):
    route = routing.route(task.prompt, routing.rules_of(roles.load()))
    assert route.role == task.role, route.reason


def test_meshctl_execute_dry_run_sends_each_demo_task_where_the_demo_says(run):
    tasks = [*scenario.TASKS, scenario.SLOW_TASK]
    batch = "".join(json.dumps({"id": t.id, "prompt": t.prompt}) + "\n" for t in tasks)
    routes = run("meshctl", "execute", "--dry-run", "-", input=batch, check=0).records
    assert {r["id"]: r["role"] for r in routes} == {t.id: t.role for t in tasks}


def test_the_scripted_agent_acts_by_role():
    prompt = ("Messages from your peers:\n- from anchor-1: hi\n\nTask:\n"
              "fix the greeting in src/app.py\n\nLock scopes for this task: src")
    assert agent.task_line(prompt) == "fix the greeting in src/app.py"
    assert agent.target("builder", "fix it") == agent.DEFAULT_TARGET
    assert agent.target("builder", "fix the wait in src/slow.py") == "src/slow.py"
    assert agent.target("triage", "add a CHANGELOG entry") == "CHANGELOG.md"
    assert agent.target("research", "compare tools") is None
    assert agent.entry("ROADMAP.md", "x") == "- x\n" and agent.entry("a.py", "x") == "# x\n"


def test_the_demo_config_sets_the_scripted_agent_and_keeps_the_default():
    import tomllib

    from meshtools.mesh.boot import DEFAULT_CONFIG

    config = tomllib.loads(scenario.config_toml(DEFAULT_CONFIG, "/usr/bin/python3"))
    assert config["agents"]["demo"] == {"command": ["/usr/bin/python3", "-m",
                                                    "meshtools.demo.agent"], "output": "text"}
    assert config["supervisor"]["min_uptime"] > 60 and config["coord"]["stale_after"] == 60
