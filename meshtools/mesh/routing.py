"""Which role a task in plain words goes to. Pure: text and rules in, a decision out.

The rules are data, per role, in roles.toml (`route_words`, `route_paths`; see its header):
word patterns matched at word boundaries (a pattern never matches inside a word: `add`
does not match "address") and globs matched against the paths the task names. A role's
score is the sum of the weights of its patterns and globs that match, each counted once.
The best role wins only when it is confident: a score of at least THRESHOLD, MARGIN ahead
of the runner-up and RATIO times its score; anything else (no match, a tie, a mixed task)
goes to the anchor, whose charter tells it to re-dispatch with `meshctl execute --role
ROLE`. Words are looked for in the first WORDS_WITHIN characters (a task says what it is
up front; a 1 MiB prompt would take seconds), paths in all of it.

The route never loops. A task carries `hops`: how often it was handed on (a task enqueued
from inside a running task has its parent's hops + 1). At JUDGE_HOPS a task bound for the
anchor is for the anchor's own judgement (it does the work or answers; it does not
re-dispatch), beyond it the anchor's queue refuses it, and beyond MAX_HOPS every queue does:
every chain of hand-ons ends.
"""

import fnmatch
import functools
import re
from typing import NamedTuple

from ..core.errors import ConfigError, Refused

ANCHOR = "anchor"
THRESHOLD = 3  # the least score of a confident route
MARGIN = 2  # how far the winner must be ahead of the runner-up ...
RATIO = 2  # ... and how many times its score (two strong claims make a mixed task)
JUDGE_HOPS = 2
MAX_HOPS = 5
WORDS_WITHIN = 4000

# Tokens that look like paths: a '/' (not a URL), or a known file extension.
EXTENSIONS = frozenset("""py pyi rs go js mjs cjs ts tsx jsx c h cc cpp hpp java kt swift rb
php cs scala sh bash zsh fish lua sql proto md rst txt toml json yaml yml ini cfg conf lock
html css scss vue svelte ipynb xml gradle mk cmake""".split())
_PROSE = frozenset({"and/or", "either/or", "on/off", "yes/no", "read/write", "input/output",
                    "i/o", "ci/cd", "tcp/ip", "n/a", "w/o", "client/server", "true/false",
                    "pros/cons", "he/she", "his/her", "s/he"})
_STRIP = "`'\"()[]{}<>,;:!?*"
_PATHISH = re.compile(r"[\w.\-/~+@]*[A-Za-z][\w.\-/~+@]*")
_LEADING_ROLE = re.compile(r"\s*@([A-Za-z0-9][A-Za-z0-9._-]*?)[:,]?(?:\s+|$)")
_LINE_NUMBER = re.compile(r":\d+(?::\d+)?$")  # client.rs:42, client.rs:42:7


class Rules(NamedTuple):
    """One role's routing rules: (regex, weight) and (glob, weight) pairs."""
    words: tuple[tuple[str, float], ...] = ()
    paths: tuple[tuple[str, float], ...] = ()


class Route(NamedTuple):
    role: str
    reason: str
    scores: dict
    confident: bool
    judge: bool = False  # for the anchor's own judgement: do it, do not re-dispatch
    paths: tuple[str, ...] = ()  # the paths the task names


def rules_of(roles: dict) -> dict[str, Rules]:
    """The rules of every role that has some (core.roles.Role records), every word
    pattern compiled: ConfigError (78) names the role and file of one that does not
    compile or that matches the empty string (it would match anywhere)."""
    for name, role in roles.items():
        patterns = tuple(pattern for pattern, _ in role.route_words)
        where = f"{role.source}: roles.{name}.route_words"
        for pattern in patterns:
            if re.search(r"\\[1-9]|\(\?P[<=]", pattern):
                raise ConfigError(f"{where}: {pattern!r}: named groups and backreferences "
                                  "are not allowed")
            if re.sub(r"\\.", "", pattern) != re.sub(r"\\.", "", pattern).lower():
                raise ConfigError(f"{where}: {pattern!r}: write it in lowercase (it is "
                                  "matched against the lowercased task)")
        try:
            empty = _found("", patterns)
        except re.error:
            for pattern in patterns:  # one by one only to name the bad one
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ConfigError(f"{where}: {pattern!r} is no regular expression "
                                      f"({e})") from None
            raise
        if empty:
            raise ConfigError(f"{where}: {patterns[min(empty)]!r} matches the empty string "
                              "(it would match anywhere)")
    return {name: Rules(role.route_words, role.route_paths) for name, role in roles.items()
            if role.route_words or role.route_paths}


def leading_role(text: str) -> tuple[str | None, str]:
    """`@builder fix it` (or `@builder: fix it`) -> ('builder', 'fix it'); text without
    one -> (None, text)."""
    match = _LEADING_ROLE.match(text)
    if not match:
        return None, text
    return match[1], text[match.end():]


def paths_named(text: str) -> list[str]:
    """The tokens of text that look like repository paths (a '/' that is no URL and no
    prose such as and/or, or a known file extension), without the quotes, backticks and
    punctuation around them and a :line(:column) after them; each once, in order."""
    found = []
    for token in text.split():
        token = _LINE_NUMBER.sub("", token.lstrip(_STRIP).rstrip(_STRIP + ".,"))
        if (not token or "://" in token or token.lower() in _PROSE
                or not _PATHISH.fullmatch(token)):
            continue
        extension = token.rsplit(".", 1)[1].lower() if "." in token.rsplit("/", 1)[-1] else ""
        if ("/" in token or extension in EXTENSIONS) and token not in found:
            found.append(token)
    return found


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern:
    """One regex for all of a role's word patterns (one compile rather than one each: this
    is start-up time). At every position not inside a word, an optional lookahead per
    pattern captures whether it matches there, up to a word boundary; so each pattern is
    found on its own, overlapping others ('tests?' and 'unit tests?' both match "unit
    tests"). A pattern uses no backreferences and no named groups, and is matched against
    the lowercased text (faster to compile than re.IGNORECASE): it is written in lowercase."""
    return re.compile(r"(?<!\w)" + "".join(rf"(?:(?=(?P<_{i}>{p})(?!\w)))?"
                                          for i, p in enumerate(patterns)))


@functools.lru_cache(maxsize=64)
def _globber(globs: tuple[str, ...]) -> re.Pattern:
    """One regex for all of a role's globs (fnmatch's, '*' spans '/'; any case, as the
    words), matched at a path's start: a group per glob that matches the whole path."""
    return re.compile("".join(rf"(?:(?=(?P<_{i}>{fnmatch.translate(g.lower())})))?"
                              for i, g in enumerate(globs)))


def _found(prose: str, patterns: tuple[str, ...]) -> dict[int, str]:
    """{index of a pattern: the text it first matched}."""
    found = {}
    for match in _matcher(patterns).finditer(prose.lower()):
        if match.lastindex is None:  # nothing starts here
            continue
        for name, text in match.groupdict().items():
            if text is not None:
                found.setdefault(int(name[1:]), text)
    return found


def _hits(text: str, paths: list[str], rule: Rules) -> list[tuple[str, float]]:
    """(what matched, its weight) for one role: its word patterns on the text without the
    paths (the words of docs/security.md are no security task), its globs on the paths."""
    prose = text[:WORDS_WITHIN]
    for path in paths:
        prose = prose.replace(path, " ")
    found = _found(prose, tuple(pattern for pattern, _ in rule.words))
    words = [(said, rule.words[i][1]) for i, said in sorted(found.items())]
    globbed = set()
    if rule.paths:
        matcher = _globber(tuple(glob for glob, _ in rule.paths))
        for path in paths:
            hits = matcher.match(path.lstrip("./").lower()).groupdict()
            globbed.update(int(name[1:]) for name, hit in hits.items() if hit is not None)
    return words + [rule.paths[i] for i in sorted(globbed)]


def score(text: str, paths: list[str], rules: dict[str, Rules]) -> dict[str, float]:
    """Every role's score for text: the weights of what matched, each pattern once."""
    return {role: sum(w for _, w in _hits(text, paths, rule)) for role, rule in rules.items()}


def matched(text: str, paths: list[str], rule: Rules) -> list[str]:
    """What of one role's rules matched: the words as written, the globs."""
    return [what for what, _ in _hits(text, paths, rule)]


def decide(scores: dict[str, float], explicit: str | None = None, hops: int = 0,
           threshold: float = THRESHOLD, margin: float = MARGIN,
           ratio: float = RATIO) -> Route:
    """The route: the explicit role, else the confident winner, else the anchor; Refused
    (77) where the loop guard ends the chain of hand-ons."""
    if hops > MAX_HOPS:
        raise Refused(f"this task would be handed on for the {hops}th time (at most "
                      f"{MAX_HOPS}): do it yourself")
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    if explicit is not None:
        route = Route(explicit, f"asked for {explicit}", scores, True)
    elif not ranked or ranked[0][1] < threshold:
        best = f" (best: {ranked[0][0]} {ranked[0][1]:g})" if ranked and ranked[0][1] else ""
        route = Route(ANCHOR, f"no confident match{best}", scores, False)
    elif len(ranked) > 1 and (ranked[0][1] - ranked[1][1] < margin
                              or ranked[0][1] < ratio * ranked[1][1]):
        (first, a), (second, b) = ranked[:2]
        why = "a tie" if a == b else "too close"
        route = Route(ANCHOR, f"{why}: {first} {a:g}, {second} {b:g}", scores, False)
    else:
        route = Route(ranked[0][0], f"matched {ranked[0][0]} ({ranked[0][1]:g})", scores, True)
    if route.role != ANCHOR or hops < JUDGE_HOPS:
        return route
    if hops > JUDGE_HOPS:
        raise Refused(f"not handed on to the anchor again: this task was handed on {hops} "
                      f"times; do it yourself, or name a specialist with --role ROLE")
    return route._replace(judge=True, reason=f"{route.reason}; handed on {hops} times: "
                                             "for the anchor's own judgement")


def route(text: str, rules: dict[str, Rules], explicit: str | None = None,
          hops: int = 0) -> Route:
    """decide() on text's scores; the reason names what matched for the winner."""
    paths = paths_named(text)
    decided = decide(score(text, paths, rules), explicit, hops)
    if decided.confident and explicit is None:
        found = matched(text, paths, rules[decided.role])
        decided = decided._replace(reason=f"{decided.reason}: {', '.join(found)}")
    return decided._replace(paths=tuple(paths))
