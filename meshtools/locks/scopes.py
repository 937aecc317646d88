"""Which sub-project a path belongs to.

Default rule: the nearest directory below the repository root that holds a package
manifest, else the top-level directory; files at the root share the root scope ".". Rules in
config.toml come first:

    [locks]
    manifests = ["Cargo.toml", "pyproject.toml", "package.json", "go.mod"]
    [[locks.rule]]
    match = "docs/*"        # fnmatch on the repository-relative path; '*' spans '/'
    scope = "docs"
"""

import fnmatch
import os
from typing import Callable, NamedTuple

from ..core import config, git
from ..core.config import Section
from ..core.errors import BadInput
from ..core.ids import ROOT_SCOPE, validate_scope

DEFAULT_MANIFESTS = config.default("locks", "manifests")


class ScopeRules(NamedTuple):
    manifests: tuple[str, ...] = DEFAULT_MANIFESTS
    rules: tuple[tuple[str, str], ...] = ()  # (pattern, scope), first match wins

    @classmethod
    def from_config(cls, settings: Section) -> "ScopeRules":
        """The [locks] table of config.toml (settings: config.of(home))."""
        locks = settings.section("locks")
        manifests = locks.value("manifests")
        rules = []
        for n, rule in enumerate(locks.value("rule"), 1):
            if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
                raise locks.error("rule", f"#{n} needs a string 'match'")
            try:
                rules.append((rule["match"], validate_scope(rule.get("scope", ""))))
            except BadInput as e:
                raise locks.error("rule", f"#{n}: {e}")
        return cls(tuple(manifests), tuple(rules))


def scope_of(relpath: str, is_dir: bool, has_manifest: Callable[[str], bool],
             rules: ScopeRules = ScopeRules()) -> str:
    """The scope of a normalised repository-relative path ('.' is the root itself)."""
    for pattern, scope in rules.rules:
        if fnmatch.fnmatchcase(relpath, pattern):
            return scope
    if relpath == ".":
        return ROOT_SCOPE
    parts = relpath.split("/")
    dirs = parts if is_dir else parts[:-1]
    for depth in range(len(dirs), 0, -1):
        candidate = "/".join(dirs[:depth])
        if has_manifest(candidate):
            return candidate
    return dirs[0] if dirs else ROOT_SCOPE


class Resolved(NamedTuple):
    arg: str  # what the user typed
    path: str  # repository-relative path
    scope: str


def resolve(arg: str, repository: git.Worktree, rules: ScopeRules,
            cwd: str | None = None) -> Resolved:
    """Map a PATH argument (relative to cwd, or to the repository when cwd is outside it)
    to its scope, refusing anything outside the mesh's repository."""
    if not arg or "\0" in arg:
        raise BadInput(f"invalid path {arg!r}")
    cwd = cwd or os.getcwd()
    base = cwd if git.find_worktree(cwd) else repository.root
    absolute = os.path.realpath(os.path.join(base, arg))
    worktree = git.find_worktree(absolute)
    if worktree is None or not _same_repository(worktree, repository):
        raise BadInput(f"{arg}: outside the repository {repository.root}")
    relpath = os.path.relpath(absolute, os.path.realpath(worktree.root)).replace(os.sep, "/")
    if relpath == ".git" or relpath.startswith(".git/"):
        raise BadInput(f"{arg}: inside the git directory, not a lockable path")
    root = worktree.root

    def has_manifest(reldir: str) -> bool:
        return any(os.path.isfile(os.path.join(root, reldir, m)) for m in rules.manifests)

    is_dir = os.path.isdir(absolute) or arg.endswith("/")
    scope = scope_of(relpath, is_dir, has_manifest, rules)
    return Resolved(arg, relpath, validate_scope(scope))


def resolver(home, cwd: str | None = None) -> Callable[[str], Resolved]:
    """resolve() bound to the mesh's repository and config.toml's rules: what file-lock
    and a routed task's scopes share."""
    repository = home.repository()
    rules = ScopeRules.from_config(config.of(home))
    return lambda arg: resolve(arg, repository, rules, cwd)


def _same_repository(a: git.Worktree, b: git.Worktree) -> bool:
    return os.path.realpath(a.common_dir) == os.path.realpath(b.common_dir)
