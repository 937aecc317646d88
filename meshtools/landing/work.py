"""The task's work record: which commits a task produced, the worktree's HEAD before and
after it ran.

The anchor lands exactly those (mesh-pick), so a worker of a landing role wraps its executor
in `RecordingExecutor`. One range dict ({branch, base, head}, `work_range`) goes into the
result record (`work`) and, for `mesh-pick TASK_ID`, into MESH_HOME/tasks/<id>/work.json
(`record_task_work`, read back by `load_task_work`).

Before each task the worktree's branch is rebased on main, so every task starts from what
has landed (its own earlier commits, picked to main, fall away as already applied) and
conflicts with other roles' work show up at once rather than at landing. A rebase that
conflicts is aborted and the task runs on the branch as it was.
"""

import os

from ..core import clock, config, errors, events, fs
from ..core.ids import validate_name
from . import gitops


def work_range(branch: str | None, base: str, head: str) -> dict:
    """The commits a task made, BASE..HEAD on branch: the one shape both stores hold."""
    return {"branch": branch, "base": base, "head": head}


def head_of(workdir: str) -> tuple[str | None, str | None]:
    """(commit, branch) checked out in workdir; (None, None) outside a repository."""
    commit = gitops.run(workdir, "rev-parse", "--verify", "-q", "HEAD", check=False)
    if commit.returncode != 0:
        return None, None
    branch = gitops.run(workdir, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    name = branch.stdout.strip() if branch.returncode == 0 else ""
    return commit.stdout.strip(), name or None


def sync_with_main(home, workdir: str, role: str, head: str, main: str) -> str:
    """Rebase the worktree's branch (at head) on main when the worktree is clean and behind;
    a conflicting rebase is aborted, leaving it as it was. Returns the HEAD after."""
    if gitops.ok(workdir, "merge-base", "--is-ancestor", main, "HEAD"):
        return head  # current
    if gitops.status_lines(workdir, untracked=False):
        return head  # dirty: left alone
    done = gitops.run(workdir, "rebase", "--quiet", main, check=False,
                      config=gitops.identity_args(workdir))
    if done.returncode != 0:
        gitops.run(workdir, "rebase", "--abort", check=False)
        events.emit(home, "worktree.sync_conflict", role=role, main=main, head=head,
                    error=gitops.first_line(done.stderr or done.stdout))
        return head
    after = gitops.out(workdir, "rev-parse", "HEAD")
    events.emit(home, "worktree.synced", role=role, main=main, before=head, after=after)
    return after


class RecordingExecutor:
    """An executor that also notes the commits each task made on the worktree's branch."""

    def __init__(self, inner, home, role: str):
        self.inner, self.home, self.role = inner, home, role
        self.name = getattr(inner, "name", "agent")
        self._main: str | None = None  # the branch work lands on: it stays for our life

    def run(self, task, workdir, timeout, on_start=lambda pid: None):
        base, branch = head_of(workdir)
        if base is not None and branch is not None:  # on a branch: start from main
            if self._main is None:
                self._main = gitops.main_of(workdir, config.of(self.home)).branch
            base = sync_with_main(self.home, workdir, self.role, base, self._main)
        outcome = self.inner.run(task, workdir, timeout, on_start)
        head, branch = head_of(workdir)
        if base and head and head != base:
            work = work_range(branch, base, head)
            record_task_work(self.home, task["id"], self.role, work)
            outcome.details["work"] = work
        return outcome

    def interrupt(self) -> None:
        self.inner.interrupt()


# -- task records --------------------------------------------------------------------------

WORK_FILE = "work.json"


def task_file(home, task_id: str) -> str:
    return os.path.join(home.task_dir(task_id), WORK_FILE)


def record_task_work(home, task_id: str, role: str, work: dict) -> dict:
    """Remember which commits a task produced (work: a work_range; written by the queue
    worker, read by `mesh-pick TASK_ID`): MESH_HOME/tasks/<TASK_ID>/work.json, atomically."""
    validate_name(role, "role")
    record = {"ts": clock.iso(), "kind": "task_work", "task": task_id, "role": role,
              **work, "branch": work["branch"] or ""}
    path = task_file(home, task_id)
    home.ensure(os.path.dirname(path))
    fs.atomic_write_json(path, record)
    return record


def load_task_work(home, task_id: str) -> dict:
    path = task_file(home, task_id)
    try:
        record = fs.read_json(path)
    except ValueError as e:
        raise errors.BadInput(f"{path}: malformed JSON ({e})")
    if record is None:
        raise errors.BadInput(f"no work recorded for task {task_id} ({path})")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) and record[k]
                                               for k in ("base", "head")):
        raise errors.BadInput(f"{path}: needs string keys base and head")
    return record
