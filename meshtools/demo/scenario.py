"""The demo as data: its scratch repository, the config of its mesh, its tasks and the
sentence each step says. Pure: nothing here touches the disk or a process."""

import json
import sys
from typing import NamedTuple

AGENT = "demo"
SLOW_WORD = "slowly"  # a builder task that says it sleeps first (agent.SLOW_SECONDS)

FILES = {  # the scratch repository: a tiny project with something for every role
    "README.md": "# demo-app\n\nA scratch project for `meshctl demo`.\n",
    "src/app.py": 'def greet(name):\n    return "hello " + name\n',
    "src/slow.py": "def wait():\n    pass\n",
    "docs/guide.md": "# guide\n",
    "notes/CLAUDE.md": "# notes for agents\n",
    "CHANGELOG.md": "# changelog\n",
    "ROADMAP.md": "# roadmap\n",
}


def config_toml(default: str, python: str = sys.executable) -> str:
    """The scratch mesh's config.toml: the default one with the scripted agent as a text
    agent, and a supervisor that leaves a killed worker down for a minute (so its task
    visibly moves to the other builder, not back to the same session restarted)."""
    keys = ("# meshctl demo: every exit is a rapid failure, restarted a minute later\n"
            "min_uptime = 3600\nbase = 60\ncap = 60\n")
    header = "\n[supervisor]\n"
    text = (default.replace(header, header + keys, 1) if header in default
            else default + header + keys)
    return text + f"""
[agents.{AGENT}]  # meshctl demo's scripted stand-in for an agent CLI
command = [{json.dumps(python)}, "-m", "meshtools.demo.agent"]
output = "text"
"""


class Task(NamedTuple):
    id: str
    role: str  # where routing sends it (tests check this with meshctl execute --dry-run)
    prompt: str


# One task per role, in words the router sends to that role (not --role).
TASKS = (
    Task("demo-builder", "builder", "fix the greeting in src/app.py"),
    Task("demo-triage", "triage", "add a CHANGELOG entry for 0.2"),
    Task("demo-memory", "memory", "consolidate the notes in notes/CLAUDE.md"),
    Task("demo-groomer", "groomer", "groom the backlog and the roadmap"),
    Task("demo-research", "research", "research how other tools compare to this one"),
    Task("demo-security", "security", "audit the repository for leaked secrets"),
    Task("demo-anchor", "anchor", "say hello to everyone"),
)
SLOW_TASK = Task("demo-slow", "builder", f"{SLOW_WORD} fix the wait in src/slow.py")
DEADLOCK = (("demo-a", "src/app.py"), ("demo-b", "docs/guide.md"))  # (holder, path it holds)


class Step(NamedTuple):
    name: str
    text: str  # what happens, one sentence


STEPS = (
    Step("scratch", "Make a scratch git repository with a few files and a first commit"),
    Step("init", f"Boot its mesh: meshctl init --agent {AGENT} (a scripted stand-in for "
                 "an agent CLI)"),
    Step("spawn", "Add a second builder: mesh-spawn builder --queue --detach"),
    Step("execute", "Hand one task in plain words to each role: meshctl execute routes it"),
    Step("results", "Wait for each task's result (queue-results --wait)"),
    Step("landed", "The anchor lands the builder's commit on main (mesh-pick, cherry-pick -x)"),
    Step("deadlock", "Two sessions each hold a scope and wait for the other's: file-lock "
                     "refuses the second wait (exit 75) instead of hanging"),
    Step("killed", "kill -9 the worker running a slow task: the other builder finishes it"),
    Step("snapshot", "A snapshot of the whole mesh"),
    Step("down", "Stop every process of the mesh and its Redis: meshctl down --all"),
    Step("cleanup", "Remove the scratch directory"),
)


def commit_subject(role: str, task: str) -> str:
    """The subject of the commit the scripted agent makes for a task of a role that writes."""
    return f"{role}: {task}"
