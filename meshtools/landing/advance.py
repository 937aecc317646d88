"""Moving main to a commit whose gate passed, so that a kill at any instant leaves it at
either the old commit or the new one, never between.

main moves by one compare-and-swap of its ref (`git update-ref refs/heads/MAIN NEW OLD`);
then the checkout that has main checked out, if any, is brought from OLD to NEW with
`git read-tree -u -m OLD NEW` (git's own fast-forward of the index and files, which never
overwrites a change of the user's). The two run in one child of their own session that
holds the pick lock: a kill -9 of mesh-pick, or of its process group, lets it finish, and
the next pass waits for it on the lock. A journal (landing.state) written before the swap
and removed after tells the next pass that a landing may have been cut off between the two
(a crash of the machine, a failed checkout update); `recover` finishes it or says why not.

The checkout that has main checked out must be clean and idle, or main does not move at
all (landing waits, Busy 75, and says why): moving the ref under a dirty checkout would
show the user's files as changes against work they never saw. A checkout on another branch
is not touched, and main moves.
"""

import os
import subprocess
import time

from ..core import errors, git as gitfiles
from ..core.words import plural
from . import gitops, state, worktree

IN_PROGRESS = ("CHERRY_PICK_HEAD", "MERGE_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply")
INDEX_LOCK_WAIT = 10.0  # seconds a git command in flight in the checkout is waited for
_SWAP_LOST, _CHECKOUT_FAILED = 3, 4
_MOVE = ('git update-ref -m "$1" "refs/heads/$2" "$3" "$4" || exit 3\n'
         '[ -z "$5" ] && exit 0\n'
         'cd "$5" && git read-tree -u -m "$4" "$3" || exit 4\n')


# -- pure logic ----------------------------------------------------------------------------

def decide_recovery(journal: dict, main_now: str, checkout_at: str | None) -> str:
    """What an interrupted landing needs: 'done' (main never moved, moved on since, or its
    checkout is at the new commit or gone), 'finish' (main moved, its checkout is still at
    the old commit) or 'stuck' (the checkout is at neither). checkout_at: 'old', 'new',
    'other', or None when no checkout has main."""
    if main_now != journal.get("new") or checkout_at in (None, "new"):
        return "done"
    return "finish" if checkout_at == "old" else "stuck"


# -- the checkout --------------------------------------------------------------------------

def checkout_of(root: str, branch: str) -> str | None:
    """The worktree that has branch checked out (the main checkout, usually), if any."""
    for found in worktree.registered(root):
        if found["branch"] == branch and not found["prunable"]:
            return found["path"]
    return None


def refusal(checkout: str) -> str | None:
    """Why main may not move under this checkout now (a git operation in progress in it,
    uncommitted changes), or None."""
    where = gitfiles.worktree_at(checkout)
    for name in IN_PROGRESS:
        if where is not None and os.path.exists(os.path.join(where.git_dir, name)):
            return f"the main checkout {checkout} has a {name} in progress"
    changes = gitops.status_lines(checkout, untracked=False)
    if changes:
        return (f"the main checkout {checkout} has {plural(len(changes), 'uncommitted change')}"
                " (commit or stash them)")
    return None


def at(checkout: str, old: str, new: str) -> str:
    """Which of the two commits the checkout's index is at: 'new', 'old' or 'other'."""
    for name, commit in (("new", new), ("old", old)):
        if gitops.ok(checkout, "diff-index", "--cached", "--quiet", commit, "--"):
            return name
    return "other"


def _wait_for_index(checkout: str) -> None:
    """Give a git command that holds the checkout's index lock time to finish."""
    where = gitfiles.worktree_at(checkout)
    lock = os.path.join(where.git_dir, "index.lock") if where else None
    deadline = time.monotonic() + INDEX_LOCK_WAIT
    while lock and os.path.exists(lock) and time.monotonic() < deadline:
        time.sleep(0.05)


# -- moving main ---------------------------------------------------------------------------

def check(root: str, branch: str, old: str, new: str | None = None) -> str | None:
    """Busy (75) unless main can move now: the checkout that has it clean and idle, and
    (given new) git's dry run of bringing it from old to new says yes. Its path, if any."""
    checkout = checkout_of(root, branch)
    if checkout is None:
        return None
    why = refusal(checkout)
    if why is None and new is not None:
        trial = gitops.run(checkout, "read-tree", "-u", "-m", "-n", old, new, check=False)
        if trial.returncode != 0:
            why = f"the main checkout {checkout} cannot take the landing: " + \
                gitops.first_line(trial.stderr).removeprefix("error: ")
    if why is not None:
        raise errors.Busy(f"{why}; landing waits, {branch} unchanged")
    return checkout


def move(home, root: str, branch: str, old: str, new: str, lock_fd: int,
         message: str) -> str | None:
    """Move branch from old to new (compare-and-swap) and its checkout with it. Busy (75,
    nothing moved) when branch is no longer at old. Returns None, or why the checkout was
    left behind (main moved; the next pass tries again: the journal stays)."""
    checkout = check(root, branch, old, new)
    state.write_journal(home, {"old": old, "new": new, "branch": branch, "checkout": checkout})
    done = subprocess.run(["/bin/sh", "-c", _MOVE, "mesh-land", message, branch, new, old,
                           checkout or ""], env=gitops.environment(), pass_fds=(lock_fd,),
                          start_new_session=True, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if done.returncode == _CHECKOUT_FAILED:
        return (f"{branch} moved to {new[:12]}, but the main checkout {checkout} was not "
                f"brought up to it: {gitops.first_line(done.stderr)}")
    state.clear_journal(home)
    if done.returncode == _SWAP_LOST:
        raise errors.Busy(f"{branch} moved while the gate ran; nothing landed, the next pass "
                          "tries again")
    if done.returncode != 0:
        raise gitops.failure(done, f"moving {branch}")
    return None


def recover(home, root: str, branch: str) -> None:
    """Finish a landing that was cut off after main moved (its checkout still at the old
    commit); Busy (75) when it cannot be finished without a person, saying why."""
    journal = state.journal(home)
    if journal is None:
        return
    if not all(isinstance(journal.get(k), str) for k in ("old", "new")):
        state.clear_journal(home)  # not one we wrote: it says nothing
        return
    main_now = gitops.out(root, "rev-parse", f"refs/heads/{journal.get('branch') or branch}")
    checkout = checkout_of(root, journal.get("branch") or branch)
    old, new = journal.get("old"), journal.get("new")
    where = at(checkout, old, new) if checkout and main_now == new else None
    action = decide_recovery(journal, main_now, where)
    if action == "finish":
        _wait_for_index(checkout)
        done = gitops.run(checkout, "read-tree", "-u", "-m", old, new, check=False)
        if done.returncode != 0:
            raise errors.Busy(f"an interrupted landing moved {branch} to {new[:12]}; the "
                              f"main checkout {checkout} is still at {old[:12]} and cannot "
                              f"follow: {gitops.first_line(done.stderr)}; landing waits")
    elif action == "stuck":
        raise errors.Busy(f"an interrupted landing moved {branch} to {new[:12]}; the main "
                          f"checkout {checkout} is at neither it nor {old[:12]} (see git "
                          "status there); landing waits")
    state.clear_journal(home)
