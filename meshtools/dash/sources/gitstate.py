"""Each role's branch (mesh/<role>): how many of its commits are not on main yet, and a
conflict forecast: would landing them (mesh-pick cherry-picks them, oldest first) apply
cleanly onto main as it is now?

The forecast replays the picks with `git merge-tree --write-tree` (git >= 2.38), which
merges in the object store and never touches a checkout or a ref. Each step merges commit C
onto the tree so far with C's parent as the base, as a cherry-pick does: merge-tree finds
the base itself (--merge-base came only in 2.40), so the tree so far is wrapped in a commit
whose parent is C's parent. Those commits are written with a fixed identity and date, so
the same forecast writes the same objects again rather than new ones each time.
"""

import functools
import re

from ...core import config
from ...landing import gitops, history
from ...landing.worktree import BRANCH_PREFIX, mesh_worktrees

MIN_GIT = (2, 38)  # merge-tree --write-tree
FIXED = {"GIT_AUTHOR_NAME": gitops.FALLBACK_NAME, "GIT_AUTHOR_EMAIL": gitops.FALLBACK_EMAIL,
         "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_NAME": gitops.FALLBACK_NAME,
         "GIT_COMMITTER_EMAIL": gitops.FALLBACK_EMAIL,
         "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}


# -- pure logic ----------------------------------------------------------------------------

def parse_version(text: str) -> tuple[int, ...] | None:
    """`git version 2.39.5` (or `2.39.5.windows.1`) -> (2, 39, 5); None if unreadable."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(n) for n in found.groups() if n is not None) if found else None


def can_forecast(version: tuple[int, ...] | None) -> bool:
    return version is not None and version[:2] >= MIN_GIT


def parse_merge_tree(text: str) -> tuple[str, list[str]]:
    """`merge-tree --write-tree --name-only --no-messages -z` output -> (tree, the paths
    in conflict, each once)."""
    tree, *paths = text.split("\0")
    return tree.strip(), list(dict.fromkeys(p for p in paths if p))


def verdict(unpicked: int, conflict: tuple[str, list[str]] | None = None,
            error: str | None = None) -> dict:
    """The record of one branch's forecast: clean, conflict (at a commit, with its paths)
    or unknown (with why)."""
    if error is not None:
        return {"unpicked": unpicked, "forecast": "unknown", "paths": [], "error": error}
    if conflict is not None:
        commit, paths = conflict
        return {"unpicked": unpicked, "forecast": "conflict", "commit": commit,
                "paths": paths, "error": None}
    return {"unpicked": unpicked, "forecast": "clean", "paths": [], "error": None}


# -- reading the repository ----------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def git_version() -> tuple[int, ...] | None:
    return parse_version(gitops.out("/", "version", check=False))


def replay(cwd, main: str, commits: list[str]) -> tuple[str, list[str]] | None:
    """Cherry-pick commits (oldest first) onto main in the object store only: None when
    every one applies cleanly, else (the first that conflicts, its paths). GitError when
    git cannot tell (a root commit, a merge-tree failure)."""
    tree = gitops.out(cwd, "rev-parse", f"refs/heads/{main}^{{tree}}")
    for sha in commits:
        parent = gitops.out(cwd, "rev-parse", "--verify", f"{sha}^1")
        ours = gitops.out(cwd, "commit-tree", tree, "-p", parent, "-m", "meshtools forecast",
                          env=FIXED)
        result = gitops.run(cwd, "merge-tree", "--write-tree", "--name-only",
                            "--no-messages", "-z", ours, sha, check=False)
        if result.returncode not in (0, 1):
            raise gitops.failure(result, "git merge-tree")
        tree, paths = parse_merge_tree(result.stdout)
        if result.returncode == 1:
            return sha, paths
    return None


def branch_state(cwd, main: str, branch: str, trailers: set[str], forecast: bool) -> dict:
    """One branch: its unpicked commits counted and, if forecast, replayed onto main."""
    commits = history.unpicked(cwd, main, branch, trailers)
    if not forecast:
        return verdict(len(commits), error=f"git older than "
                                           f"{'.'.join(map(str, MIN_GIT))}")
    try:
        return verdict(len(commits), replay(cwd, main, commits))
    except gitops.GitError as e:
        return verdict(len(commits), error=str(e))


def roles_state(home, repo, known: dict | None = None) -> dict[str, dict]:
    """{role: {branch, worktree, unpicked, forecast, paths, error}} for every mesh/<role>
    branch of the repository around repo (its worktree path, or None without one).
    known: a dict kept between calls, so that a branch is counted and forecast again only
    once it or main moved (a forecast costs a few git runs per unpicked commit)."""
    root, main = gitops.main_of(repo, config.of(home))
    main_head = gitops.out(root, "rev-parse", f"refs/heads/{main}")
    worktrees = {wt["branch"]: wt["path"] for wt in mesh_worktrees(root)}
    forecast = can_forecast(git_version())
    known = {} if known is None else known
    trailers, found, kept = None, {}, {}
    for line in gitops.lines(root, "for-each-ref", "--format=%(objectname) %(refname)",
                             f"refs/heads/{BRANCH_PREFIX}"):
        head, ref = line.split(" ", 1)
        branch = ref.removeprefix("refs/heads/")
        key = (main_head, branch, head)
        if key not in known:
            if trailers is None:  # one walk of main's history for every branch
                trailers = history.trailers_on(root, main)
            known[key] = branch_state(root, main, branch, trailers, forecast)
        kept[key] = known[key]
        found[branch[len(BRANCH_PREFIX):]] = {"branch": branch,
                                              "worktree": worktrees.get(branch), **kept[key]}
    known.clear()
    known.update(kept)  # what no branch needs any more is forgotten
    return found
