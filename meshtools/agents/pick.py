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

Picks of one mesh are serialised by flock on MESH_HOME/pick.lock.

The queue worker records the range each task produced with `record_task_work`; `mesh-pick
TASK_ID` reads it back (MESH_HOME/tasks/<TASK_ID>.json).
"""

import os
import re
import subprocess

from ..core import clock, config, errors, events, fs, git as gitfiles
from ..core.ids import validate_name, validate_task_id
from ..core.redact import redact_text
from . import gitops

TRAILER = re.compile(r"^\(cherry picked from commit ([0-9a-f]{7,64})\)\s*$", re.M)
GATE_TAIL_LINES = 40
GATE_TAIL_CHARS = 4000
_IN_PROGRESS = ("CHERRY_PICK_HEAD", "MERGE_HEAD", "REVERT_HEAD", "rebase-merge",
                "rebase-apply")
_EVENT = {"picked": "pick.landed", "skipped": "pick.skipped", "conflict": "pick.conflict",
          "gate_failed": "pick.gate_failed"}


# -- pure logic ----------------------------------------------------------------------------

def parse_cherry(text: str) -> dict[str, str]:
    """`git cherry` output -> {sha: '+' (not on upstream) or '-' (equivalent is there)}."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in "+-":
            found[parts[1]] = parts[0]
    return found


def picked_from(messages: str) -> set[str]:
    """The shas named by "(cherry picked from commit SHA)" lines in commit messages."""
    return set(TRAILER.findall(messages))


def _named(sha: str, trailers: set[str]) -> bool:
    return sha in trailers or any(len(t) < 40 and sha.startswith(t) for t in trailers)


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
        elif _named(sha, trailers):
            skipped.append({"commit": sha, "reason": "already_picked"})
        else:
            to_pick.append(sha)
    return to_pick, skipped


def unpicked_from_cherry(cherry_text: str, trailers: set[str]) -> list[str]:
    """The '+' commits of a `git cherry MAIN BRANCH` that main names in no -x trailer."""
    return [sha for sha, sign in parse_cherry(cherry_text).items()
            if sign == "+" and not _named(sha, trailers)]


def tail(text: str, lines: int = GATE_TAIL_LINES, chars: int = GATE_TAIL_CHARS) -> str:
    kept = "\n".join(text.splitlines()[-lines:])
    return kept[-chars:]


def parse_range(spec: str) -> tuple[str | None, str]:
    """'BASE..HEAD' -> (BASE, HEAD); a single revision means that one commit (None, REV)."""
    if "..." in spec:
        raise errors.BadInput(f"--commits {spec!r}: use BASE..HEAD (two dots)")
    if ".." in spec:
        base, head = spec.split("..", 1)
        if not base or not head:
            raise errors.BadInput(f"--commits {spec!r}: name both ends, BASE..HEAD")
        return base, head
    if not spec:
        raise errors.BadInput("--commits: empty range")
    return None, spec


# -- reading the repository ----------------------------------------------------------------

def trailers_on(cwd, main: str) -> set[str]:
    """Every sha that main's history says was cherry-picked onto it."""
    text = gitops.out(cwd, "log", "--format=%B", "-F",
                      "--grep=(cherry picked from commit ", f"refs/heads/{main}", "--")
    return picked_from(text)


def cherry_states(cwd, main: str, commits: list[str]) -> dict[str, str]:
    """`git cherry` verdicts for commits, newest first so one call usually covers a chain."""
    states: dict[str, str] = {}
    done: set[str] = set()
    for sha in reversed(commits):
        if sha in done:
            continue
        found = parse_cherry(gitops.out(cwd, "cherry", f"refs/heads/{main}", sha))
        states.update(found)
        done.update(found)
        done.add(sha)  # absent from the output: reachable from main
    return states


def range_commits(cwd, base: str | None, head: str) -> list[str]:
    """The non-merge commits of BASE..HEAD, oldest first (a lone HEAD: just that commit)."""
    head_sha = gitops.commit_of(cwd, head)
    if base is None:
        return [head_sha]
    base_sha = gitops.commit_of(cwd, base)
    return gitops.lines(cwd, "rev-list", "--reverse", "--no-merges", f"{base_sha}..{head_sha}")


def unpicked(cwd, main: str, branch: str, trailers: set[str] | None = None) -> list[str]:
    """Commits of branch whose change is not on main (cherry '+', no -x trailer), oldest
    first: what `mesh-worktree list` counts. trailers: trailers_on(main), if known."""
    text = gitops.out(cwd, "cherry", f"refs/heads/{main}", f"refs/heads/{branch}")
    return unpicked_from_cherry(text, trailers_on(cwd, main) if trailers is None else trailers)


def role_commits(cwd, main: str, branch: str) -> list[str]:
    """Every non-merge commit of branch not reachable from main, oldest first."""
    if not gitops.has_branch(cwd, branch):
        raise errors.BadInput(f"no branch {branch}")
    return gitops.lines(cwd, "rev-list", "--reverse", "--no-merges",
                        f"refs/heads/{main}..refs/heads/{branch}")


# -- task records --------------------------------------------------------------------------

def task_file(home, task_id: str) -> str:
    return os.path.join(home.tasks, f"{validate_task_id(task_id)}.json")


def record_task_work(home, task_id: str, role: str, branch: str, base: str, head: str) -> dict:
    """Remember which commits a task produced (written by the queue worker, read by
    `mesh-pick TASK_ID`): MESH_HOME/tasks/<TASK_ID>.json, atomically."""
    validate_name(role, "role")
    record = {"ts": clock.iso(), "kind": "task_work", "task": task_id, "role": role,
              "branch": branch, "base": base, "head": head}
    path = task_file(home, task_id)
    home.ensure(home.tasks)
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
    """Land commits (full shas, oldest first, as range_commits and role_commits return them:
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


def _finish(home, record: dict, root: str) -> dict:
    record["ts"] = clock.iso()
    record["main_after"] = gitops.out(root, "rev-parse", "HEAD")
    fields = {k: v for k, v in record.items() if k not in ("ts", "kind", "gate_output")}
    events.emit(home, _EVENT[record["status"]], **fields)
    return record
