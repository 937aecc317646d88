"""The scripted agent of `meshctl demo`: a text agent ([agents.demo] in the scratch mesh's
config.toml) that behaves like an agent CLI (the task on stdin, text out, exit 0) and acts
by its role ($MESH_ROLE), at once and deterministically:

    builder   edits the file the task names (else src/app.py) and commits on its branch,
              so the anchor lands it on main; a task that says "slowly" sleeps first
    triage    adds an entry to CHANGELOG.md and commits
    memory    adds a line to notes/CLAUDE.md and commits
    groomer   adds an item to ROADMAP.md and commits
    others    (research, security, the anchor) print a short finding, change nothing
"""

import os
import sys
import time

from .scenario import SLOW_WORD, commit_subject

SLOW_SECONDS = 5.0  # long enough to be seen running and killed on a busy machine
WRITES = {"triage": "CHANGELOG.md", "memory": "notes/CLAUDE.md", "groomer": "ROADMAP.md"}
DEFAULT_TARGET = "src/app.py"


def task_line(prompt: str) -> str:
    """The task's own first line: peers' messages ahead of it ("Task:") and the lock-scopes
    note behind it left out."""
    _, marker, rest = prompt.partition("\n\nTask:\n")
    for line in (rest if marker else prompt).splitlines():
        if line.strip():
            return line.strip()
    return ""


def target(role: str, task: str) -> str | None:
    """The file a role that writes edits for task: the builder the first path the task
    names; None for a role that only reports."""
    if role == "builder":
        from ..mesh.routing import paths_named

        return next(iter(paths_named(task)), DEFAULT_TARGET)
    return WRITES.get(role)


def entry(path: str, task: str) -> str:
    """The line added to path: a Markdown item, else a comment."""
    return f"- {task}\n" if path.endswith(".md") else f"# {task}\n"


def finding(role: str, task: str, cwd: str) -> str:
    """What a role that changes nothing reports."""
    if role == "security":
        from ..landing import gitops

        files = gitops.lines(cwd, "ls-files")
        return f"security: {len(files)} tracked files scanned, no secrets found"
    if role == "anchor":
        return f"anchor: noted {task!r}; nothing to re-dispatch"
    return f"{role}: three similar tools compared; this one is the smallest (a demo finding)"


def act(role: str, prompt: str, cwd: str) -> str:
    """Do the task in cwd (the role's worktree); the agent's text output."""
    from ..landing import gitops

    task = task_line(prompt)
    path = target(role, task)
    if path is None:
        return finding(role, task, cwd)
    if role == "builder" and SLOW_WORD in task.split():
        time.sleep(SLOW_SECONDS)
    full = os.path.join(cwd, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "a", encoding="utf-8") as f:
        f.write(entry(path, task))
    gitops.run(cwd, "add", "--", path)
    gitops.run(cwd, "commit", "-q", "-m", commit_subject(role, task),
               config=gitops.identity_args(cwd))
    return f"{role}: edited {path}, committed {gitops.out(cwd, 'rev-parse', '--short', 'HEAD')}"


def main() -> None:
    from ..core import errors

    sys.exit(errors.guarded("meshtools.demo.agent", lambda: print(
        act(os.environ.get("MESH_ROLE", "builder"), sys.stdin.read(), os.getcwd()),
        flush=True)))


if __name__ == "__main__":
    main()
