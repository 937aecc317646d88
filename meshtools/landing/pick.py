"""Landing work: cherry-pick a worker's commits onto the main branch, gated, all or nothing.

Workers commit on their own branch (mesh/<role>) in their own worktree; the anchor lands
that work on main. A pass applies the candidates onto main's tip in a scratch worktree
(landing.scratch), never in the user's checkout or a worker's, runs the gate there, and
only when it passes moves main (landing.advance: one compare-and-swap of the ref, then the
checkout that has main, if clean). A conflict or a failing gate leaves main untouched; so
does a kill -9 at any instant, and the next pass finishes or redoes what it cut off. So
main only ever holds commits whose gate passed.

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

from ..core import clock, config, errors, events, fs, proc
from ..core.redact import redact_text
from . import advance, gitops, scratch, state
from .history import cherry_states, named, trailers_on

GATE_TAIL_LINES = 40
GATE_TAIL_CHARS = 4000
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

def _pick_one(cwd: str, sha: str, identity: list[str]) -> tuple[str, list[str]]:
    """Cherry-pick one commit: ('picked', []), ('empty', []) or ('conflict', files).
    Any other failure raises GitError."""
    result = gitops.run(cwd, "cherry-pick", "-x", sha, check=False, config=identity)
    if result.returncode == 0:
        return "picked", []
    conflicted = gitops.lines(cwd, "diff", "--name-only", "--diff-filter=U")
    if conflicted:
        return "conflict", conflicted
    staged = gitops.run(cwd, "diff", "--cached", "--quiet", check=False).returncode
    if staged == 0 and gitops.ok(cwd, "rev-parse", "-q", "--verify", "CHERRY_PICK_HEAD"):
        gitops.run(cwd, "cherry-pick", "--skip", check=False)
        return "empty", []
    raise gitops.failure(result, f"git cherry-pick {sha[:12]}", exit_code=errors.TEMPFAIL)


def run_gate(cwd: str, command: str, before: str) -> tuple[int, str]:
    """The gate command under sh -c in the scratch worktree: (exit status, output tail).
    $MESH_PICK_BEFORE names main before the picks, so a gate can test just the change.
    It dies with this process (a killed pass never lands, so its gate need not go on)."""
    env = dict(os.environ, MESH_PICK_BEFORE=before, GIT_TERMINAL_PROMPT="0")
    done = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          preexec_fn=proc.die_with_parent())
    return done.returncode, tail(done.stdout.decode(errors="replace"))


def pick(home, main: gitops.Main, shas: list[str], *, role: str | None = None,
         task: str | None = None, gate: str | None = None) -> dict:
    """Land commits (full shas, oldest first, as history.range_commits and role_commits return them:
    not resolved again here) on main.branch (main.root: its repository, gitops.main_of).

    The commits are cherry-picked onto main's tip in a scratch worktree and the gate runs
    there; only when it passes does main move (landing.advance), so main only ever holds
    commits whose gate passed, and a commit on main (or named by a -x line on it) counts as
    landed. Returns the record {ts, kind:"pick", status, role, task, picked, skipped,
    conflicts, main_before, main_after, ...}; status is "picked" (at least one landed),
    "skipped" (nothing to land), "conflict" or "gate_failed" (main unchanged). Raises Busy
    (75), main unchanged, while the checkout that has main checked out is not clean and
    idle, or an interrupted landing cannot be finished; why is kept for `meshctl status`.
    """
    root, branch = main
    gate = gate if gate is not None else config.value(home, "pick", "gate")
    home.ensure()
    with fs.flocked(home.pick_lock) as lock_fd:
        try:
            scratch.forget_half_made(home, root)
            advance.recover(home, root, branch)
            record = _land(home, main, shas, role, task, gate, lock_fd)
        except errors.Busy as e:
            state.note_blocked(home, str(e), task)
            raise
        finally:
            if os.path.lexists(state.scratch_path(home)):  # else fresh() clears leftovers
                scratch.clear(home, root)
        if record.get("checkout_behind"):
            state.note_blocked(home, record["checkout_behind"], task)
        else:
            state.clear_blocked(home)
        return _finish(home, record, root)


def _land(home, main: gitops.Main, shas: list[str], role, task, gate, lock_fd: int) -> dict:
    root, branch = main
    before = gitops.out(root, "rev-parse", f"refs/heads/{branch}")
    to_pick, skipped = decide_picks(shas, cherry_states(root, branch, shas),
                                    trailers_on(root, branch))
    record = {"ts": None, "kind": "pick", "status": None, "role": role, "task": task,
              "picked": [], "picked_from": [], "skipped": [s["commit"] for s in skipped],
              "skip_reasons": {s["commit"]: s["reason"] for s in skipped},
              "conflicts": [], "main": branch, "main_before": before, "main_after": before}
    if not to_pick:
        record["status"] = "skipped"
        return record
    advance.check(root, branch, before)  # a dirty checkout on main: wait before the work
    workdir = scratch.fresh(home, root, before)
    identity = gitops.identity_args(root)
    for sha in to_pick:
        outcome, files = _pick_one(workdir, sha, identity)
        if outcome == "conflict":
            record.update(status="conflict", conflicts=files, commit=sha,
                          rolled_back=record["picked"], picked=[], picked_from=[])
            return record
        if outcome == "empty":
            record["skipped"].append(sha)
            record["skip_reasons"][sha] = "empty"
            continue
        record["picked"].append(gitops.out(workdir, "rev-parse", "HEAD"))
        record["picked_from"].append(sha)
    if gate and record["picked"]:
        code, output = run_gate(workdir, gate, before)
        record.update(gate=gate, gate_exit=code)
        if code != 0:
            record.update(status="gate_failed", gate_output=redact_text(output),
                          rolled_back=record["picked"], picked=[], picked_from=[])
            return record
    if record["picked"]:
        behind = advance.move(home, root, branch, before, record["picked"][-1], lock_fd,
                              f"mesh-pick: {task or role or 'commits'}")
        if behind:
            record["checkout_behind"] = behind
    record["status"] = "picked" if record["picked"] else "skipped"
    return record


def pick_task(home, task_id: str, gate: str | None = None) -> dict:
    """pick() the range recorded for a task (landing.work), its role's branch."""
    from . import history, work

    main = gitops.main_of(home.repository().root, config.of(home))
    recorded = work.load_task_work(home, task_id)
    commits = history.range_commits(main.root, recorded["base"], recorded["head"])
    return pick(home, main, commits, role=recorded.get("role"), task=task_id, gate=gate)


def _finish(home, record: dict, root: str) -> dict:
    record["ts"] = clock.iso()
    record["main_after"] = gitops.out(root, "rev-parse", f"refs/heads/{record['main']}")
    fields = {k: v for k, v in record.items() if k not in ("ts", "kind", "gate_output")}
    events.emit(home, _EVENT[record["status"]], **fields)
    return record
