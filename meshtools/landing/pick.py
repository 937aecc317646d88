"""Landing work: cherry-pick a worker's commits onto the main branch in the main checkout.

Workers commit on their own branch (mesh/<role>) in their own worktree; the anchor lands
that work on main. Landing happens in the repository's main checkout, never in a worker's
worktree, and is all-or-nothing: a conflict or a failing gate puts main back exactly where
it was (safe, because we refuse to start unless the main checkout is clean and on main).

What counts as "already landed", so nothing is ever picked twice:
  - the commit is reachable from main (it was merged or fast-forwarded), or
  - `git cherry MAIN COMMIT` marks it '-' (an equivalent patch is on main), or
  - main carries a "(cherry picked from commit SHA)" line naming it (we pick with -x, so
    a later pick recognises its own earlier picks even after main changed around them), or
  - cherry-picking it turns out empty (its change is already there in another shape).

Picks of one mesh are serialised by flock on MESH_HOME/pick.lock. The history queries
(cherry, trailers, ranges) are in landing.history; the task's recorded range in landing.work.
"""

import os
import subprocess

from ..core import clock, config, errors, events, fs, git as gitfiles
from ..core.redact import redact_text
from . import gitops
from .history import cherry_states, named, trailers_on

GATE_TAIL_LINES = 40
GATE_TAIL_CHARS = 4000
_IN_PROGRESS = ("CHERRY_PICK_HEAD", "MERGE_HEAD", "REVERT_HEAD", "rebase-merge",
                "rebase-apply")
_EVENT = {"picked": "pick.landed", "skipped": "pick.skipped", "conflict": "pick.conflict",
          "gate_failed": "pick.gate_failed"}


# -- pure logic ----------------------------------------------------------------------------

def decide_picks(commits: list[str], cherry: dict[str, str], trailers: set[str]
                 ) -> tuple[list[str], list[dict]]:
    """Split commits (oldest first) into those to pick, in order, and those skipped with the
    reason. A commit absent from `cherry` is already reachable from main."""
    to_pick, skipped, seen = [], [], set()
    for sha in commits:
        if sha in seen:
            continue
        seen.add(sha)
        state = cherry.get(sha)
        if state is None:
            skipped.append({"commit": sha, "reason": "on_main"})
        elif state == "-":
            skipped.append({"commit": sha, "reason": "patch_on_main"})
        elif named(sha, trailers):
            skipped.append({"commit": sha, "reason": "already_picked"})
        else:
            to_pick.append(sha)
    return to_pick, skipped


def tail(text: str, lines: int = GATE_TAIL_LINES, chars: int = GATE_TAIL_CHARS) -> str:
    kept = "\n".join(text.splitlines()[-lines:])
    return kept[-chars:]


# -- landing -------------------------------------------------------------------------------

def _preconditions(root: str, main: str) -> None:
    """Refuse (75, nothing changed) unless the main checkout is on main, clean, idle."""
    checkout = gitfiles.worktree_at(root)  # main_checkout found it: it is there
    branch = gitfiles.current_branch(checkout)
    if branch != main:
        raise errors.Busy(f"main checkout {root} is on {branch or 'a detached HEAD'}, "
                          f"not {main}; nothing picked")
    for name in _IN_PROGRESS:
        if os.path.exists(os.path.join(checkout.git_dir, name)):
            raise errors.Busy(f"main checkout {root} has a {name} in progress; nothing picked")
    changes = gitops.status_lines(root, untracked=False)
    if changes:
        raise errors.Busy(f"main checkout {root} has {len(changes)} uncommitted "
                          f"change{'s' if len(changes) != 1 else ''}; nothing picked")


def _rollback(root: str, before: str) -> None:
    gitops.run(root, "cherry-pick", "--abort", check=False)
    gitops.run(root, "reset", "-q", "--hard", before)


def _pick_one(root: str, sha: str, identity: list[str]) -> tuple[str, list[str]]:
    """Cherry-pick one commit: ('picked', []), ('empty', []) or ('conflict', files).
    Any other failure rolls nothing back itself and raises GitError."""
    result = gitops.run(root, "cherry-pick", "-x", sha, check=False, config=identity)
    if result.returncode == 0:
        return "picked", []
    conflicted = gitops.lines(root, "diff", "--name-only", "--diff-filter=U")
    if conflicted:
        return "conflict", conflicted
    staged = gitops.run(root, "diff", "--cached", "--quiet", check=False).returncode
    if staged == 0 and gitops.ok(root, "rev-parse", "-q", "--verify", "CHERRY_PICK_HEAD"):
        gitops.run(root, "cherry-pick", "--skip", check=False)
        return "empty", []
    raise gitops.failure(result, f"git cherry-pick {sha[:12]}", exit_code=errors.TEMPFAIL)


def run_gate(root: str, command: str, before: str) -> tuple[int, str]:
    """The gate command under sh -c in the main checkout: (exit status, output tail).
    $MESH_PICK_BEFORE names main before the picks, so a gate can test just the change."""
    env = dict(os.environ, MESH_PICK_BEFORE=before, GIT_TERMINAL_PROMPT="0")
    proc = subprocess.run(["/bin/sh", "-c", command], cwd=root, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    return proc.returncode, tail(proc.stdout.decode(errors="replace"))


def pick(home, main: gitops.Main, shas: list[str], *, role: str | None = None,
         task: str | None = None, gate: str | None = None) -> dict:
    """Land commits (full shas, oldest first, as history.range_commits and role_commits return them:
    not resolved again here) on main.branch in the main checkout main.root (gitops.main_of).

    Returns the record {ts, kind:"pick", status, role, task, picked, skipped, conflicts,
    main_before, main_after, ...}; status is "picked" (at least one landed), "skipped"
    (nothing to land), "conflict" or "gate_failed" (main put back as it was). Raises Busy
    (75) without changing anything when the main checkout is not on main and clean.
    """
    root, main = main
    gate = gate if gate is not None else config.value(home, "pick", "gate")
    home.ensure()
    with fs.flocked(home.pick_lock):
        _preconditions(root, main)
        before = gitops.out(root, "rev-parse", "HEAD")
        to_pick, skipped = decide_picks(shas, cherry_states(root, main, shas),
                                        trailers_on(root, main))
        record = {"ts": None, "kind": "pick", "status": None, "role": role, "task": task,
                  "picked": [], "picked_from": [], "skipped": [s["commit"] for s in skipped],
                  "skip_reasons": {s["commit"]: s["reason"] for s in skipped},
                  "conflicts": [], "main": main, "main_before": before, "main_after": before}
        identity = gitops.identity_args(root) if to_pick else []
        try:
            for sha in to_pick:
                outcome, files = _pick_one(root, sha, identity)
                if outcome == "conflict":
                    _rollback(root, before)
                    record.update(status="conflict", conflicts=files, commit=sha,
                                  rolled_back=record["picked"], picked=[], picked_from=[])
                    return _finish(home, record, root)
                if outcome == "empty":
                    record["skipped"].append(sha)
                    record["skip_reasons"][sha] = "empty"
                    continue
                record["picked"].append(gitops.out(root, "rev-parse", "HEAD"))
                record["picked_from"].append(sha)
        except BaseException:
            _rollback(root, before)  # an unexpected failure (or ^C) leaves main as it was
            raise
        if gate and record["picked"]:
            code, output = run_gate(root, gate, before)
            record.update(gate=gate, gate_exit=code)
            if code != 0:
                _rollback(root, before)
                record.update(status="gate_failed", gate_output=redact_text(output),
                              rolled_back=record["picked"], picked=[], picked_from=[])
                return _finish(home, record, root)
        record["status"] = "picked" if record["picked"] else "skipped"
        return _finish(home, record, root)


def pick_task(home, task_id: str, gate: str | None = None) -> dict:
    """pick() the range recorded for a task (landing.work), its role's branch."""
    from . import history, work

    main = gitops.main_of(home.repository().root, config.of(home))
    recorded = work.load_task_work(home, task_id)
    commits = history.range_commits(main.root, recorded["base"], recorded["head"])
    return pick(home, main, commits, role=recorded.get("role"), task=task_id, gate=gate)


def _finish(home, record: dict, root: str) -> dict:
    record["ts"] = clock.iso()
    record["main_after"] = gitops.out(root, "rev-parse", "HEAD")
    fields = {k: v for k, v in record.items() if k not in ("ts", "kind", "gate_output")}
    events.emit(home, _EVENT[record["status"]], **fields)
    return record
