"""What main's history says about a branch's commits: the queries landing (pick) and the
worktree listing (unpicked commits) share.

A commit counts as already landed when it is reachable from main, when `git cherry` marks
it '-' (an equivalent patch is on main), or when main carries a "(cherry picked from commit
SHA)" line naming it (picks use -x, so a later pick recognises its own earlier ones).
"""

import re

from ..core import errors
from . import gitops

TRAILER = re.compile(r"^\(cherry picked from commit ([0-9a-f]{7,64})\)\s*$", re.M)


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


def named(sha: str, trailers: set[str]) -> bool:
    """Whether a -x trailer names sha (a trailer may hold an abbreviated sha)."""
    return sha in trailers or any(len(t) < 40 and sha.startswith(t) for t in trailers)


def unpicked_from_cherry(cherry_text: str, trailers: set[str]) -> list[str]:
    """The '+' commits of a `git cherry MAIN BRANCH` that main names in no -x trailer."""
    return [sha for sha, sign in parse_cherry(cherry_text).items()
            if sign == "+" and not named(sha, trailers)]


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
