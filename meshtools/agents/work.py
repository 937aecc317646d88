"""Which commits a task produced: the worktree's HEAD before and after it ran.

The anchor lands exactly those (mesh-pick), so a worker of a landing role wraps its executor
in `RecordingExecutor`. The range goes into the result record (`work`) and, for
`mesh-pick TASK_ID`, into MESH_HOME/tasks/<id>.json.
"""

from . import gitops, pick


def head_of(workdir: str) -> tuple[str | None, str | None]:
    """(commit, branch) checked out in workdir; (None, None) outside a repository."""
    commit = gitops.run(workdir, "rev-parse", "--verify", "-q", "HEAD", check=False)
    if commit.returncode != 0:
        return None, None
    branch = gitops.run(workdir, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return commit.stdout.strip(), (branch.stdout.strip() or None) if branch.returncode == 0 else None


class RecordingExecutor:
    """An executor that also notes the commits each task made on the worktree's branch."""

    def __init__(self, inner, home, role: str):
        self.inner, self.home, self.role = inner, home, role
        self.name = getattr(inner, "name", "agent")

    def run(self, task, workdir, timeout, on_start=lambda pid: None):
        base, _ = head_of(workdir)
        outcome = self.inner.run(task, workdir, timeout, on_start)
        head, branch = head_of(workdir)
        if base and head and head != base:
            work = {"branch": branch, "base": base, "head": head}
            pick.record_task_work(self.home, task["id"], self.role, branch or "", base, head)
            outcome.details["work"] = work
        return outcome

    def interrupt(self) -> None:
        self.inner.interrupt()
