"""Whether a read-only role's Bash line is plainly read-only: the lock gate's Bash check.

Recognising writes cannot be won (a shell has too many ways to run `rm`), so this is the
inverse: a real shell parser (tree-sitter-bash) must read the line as simple commands of
the programs in readonly.toml, each within that program's rules, with literal words and no
redirection into a file. Anything else, including what the parser cannot read, is refused
with the reason. Pure: a command line (and the role's name) in, a reason or None out.
"""

import functools
import os
import re
from typing import NamedTuple

from ..core.errors import BadInput

DATA = os.path.join(os.path.dirname(__file__), "readonly.toml")
_RULE_KEYS = frozenset({"roles", "deny_long", "deny_short", "deny_words", "only_options",
                        "requires", "first_word", "bare", "needs_for_words", "max_words",
                        "script", "globals", "takes_value", "subcommands", "runs"})
# Node types that join commands, and the tokens between them.
_LISTS = frozenset({"program", "list", "pipeline", "redirected_statement"})
_JOINERS = frozenset({";", "&", "&&", "||", "|", "|&", "\n"})
_SAFE_OUTPUTS = frozenset({"/dev/null"})
_BRACE_EXPANSION = re.compile(r"\{[^{}\0]*(,|\.\.)[^{}\0]*\}")
_GLOB = re.compile(r"[*?\[]")


class Word(NamedTuple):
    value: str
    glob: bool  # an unquoted *, ? or [: the shell may turn it into other words


class Refused(Exception):
    """The reason a line is not plainly read-only."""


def refusal(command, role: str | None = None) -> str | None:
    """Why the Bash line is not plainly read-only for role (None: it is)."""
    if not isinstance(command, str):
        raise BadInput("Bash without a command")
    try:
        for name, words in simple_commands(command):
            check_command(name, words, role, rules())
    except Refused as e:
        return str(e)
    return None


@functools.cache
def rules() -> dict:
    """readonly.toml's programs, each table's keys checked (a typo would allow too much
    or too little without a word)."""
    import tomllib

    with open(DATA, "rb") as f:
        programs = tomllib.load(f)["programs"]

    def check(table: dict, where: str) -> None:
        unknown = set(table) - _RULE_KEYS
        if unknown:
            raise ValueError(f"{DATA}: {where}: unknown key {sorted(unknown)[0]!r}")
        for sub, inner in table.get("subcommands", {}).items():
            check(inner, f"{where} {sub}")

    for name, table in programs.items():
        check(table, name)
    return programs


@functools.cache
def _parser():
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


def simple_commands(command: str) -> list[tuple[str, list[Word]]]:
    """(name, words) of every simple command in the line; Refused for anything that is not
    a plain list of simple commands with literal words and harmless redirections."""
    if "\\\n" in command:  # bash joins the lines before it parses: tree-sitter does not
        raise Refused("a backslash-newline (a continued line) is not read as plainly")
    tree = _parser().parse(command.encode("utf-8", "surrogatepass"))
    if tree.root_node.has_error:
        raise Refused("the shell parser cannot read the line as plain commands")
    found: list[tuple[str, list[Word]]] = []
    _statements(tree.root_node, found)
    return found


def _statements(node, found: list) -> None:
    for child in node.children:
        if child.type in _LISTS:
            _statements(child, found)
        elif child.type == "command":
            _command(child, found)
        elif child.type in ("file_redirect", "heredoc_redirect", "herestring_redirect"):
            _redirect(child, found)
        elif child.type == "comment" or child.type in _JOINERS:
            continue
        else:
            raise Refused(f"{_describe(child)} is not a simple command")


def _command(node, found: list) -> None:
    name, words = None, []
    for child in node.children:
        if child.type == "command_name":
            name = _name(child)
        elif child.type in ("file_redirect", "heredoc_redirect", "herestring_redirect"):
            _redirect(child, found)
        elif child.type == "variable_assignment":
            raise Refused(f"setting {_text(child)!r} before a command can change what it does")
        else:
            words.append(_word(child))
    if name is None:
        raise Refused(f"{_text(node)!r} has no command name")
    found.append((name, words))


def _name(node) -> str:
    (child,) = node.children
    if child.type != "word" or not re.fullmatch(r"[A-Za-z0-9_.+-][A-Za-z0-9_.+/-]*",
                                                  _text(child)):
        raise Refused(f"the command name {_text(child)!r} is not a plain word")
    return _text(child)


def _word(node) -> Word:
    """The literal value of an argument; Refused for anything the shell would expand."""
    pieces = node.children if node.type == "concatenation" else [node]
    value, unquoted, glob = [], [], False
    for piece in pieces:
        text = _text(piece)
        if piece.type in ("word", "number"):
            if "\\" in text:
                raise Refused(f"the word {_text(node)!r} has a backslash escape")
            value.append(text)
            unquoted.append(text)
            glob = glob or bool(_GLOB.search(text))
        elif piece.type == "raw_string":
            value.append(text[1:-1])
            unquoted.append("\0")
        elif piece.type == "string" and all(c.type in ('"', "string_content")
                                            for c in piece.children):
            if re.search(r"[\\$`]", text[1:-1]):
                raise Refused(f"the word {_text(node)!r} has an escape or expansion")
            value.append(text[1:-1])
            unquoted.append("\0")
        else:
            raise Refused(f"{_describe(piece)} in {_text(node)!r} is expanded by the shell")
    if _BRACE_EXPANSION.search("".join(unquoted)):
        raise Refused(f"the word {_text(node)!r} is a brace expansion")
    return Word("".join(value), glob)


def _redirect(node, found: list) -> None:
    """Input, fd duplications and /dev/null only: never into a file. The parser hangs what
    follows a here-document's start on the line (`| cmd`, `&& cmd`) under it."""
    if node.type == "herestring_redirect":
        for child in node.children[1:]:
            _word(child)
        return
    if node.type == "heredoc_redirect":
        for child in node.children:
            if child.type == "file_redirect":
                _redirect(child, found)
            elif child.type == "command":
                _command(child, found)
            elif child.type in _LISTS:
                _statements(child, found)
            elif child.type in _JOINERS:
                continue
            elif child.type == "heredoc_body":
                bad = [c for c in child.children if c.type != "heredoc_content"]
                if bad:
                    raise Refused(f"{_describe(bad[0])} in a here-document is expanded")
            elif child.type not in ("<<", "<<-", "heredoc_start", "heredoc_end"):
                raise Refused(f"{_describe(child)} in a here-document")
        return
    operator = next(c.type for c in node.children if not c.is_named)
    targets = [c for c in node.children if c.is_named and c.type != "file_descriptor"]
    if len(targets) != 1:  # `ls 2>/dev/null x`: x is the command's, out of the parser's sight
        raise Refused(f"{_text(node)!r}: words after a redirection are not read as plainly")
    target = _word(targets[0]).value
    if operator == "<":
        return
    if operator in (">&", "<&") and re.fullmatch(r"\d+|-", target):
        return
    if operator in (">", ">>", "&>", "&>>", ">|", ">&") and target in _SAFE_OUTPUTS:
        return
    raise Refused(f"`{operator} {target}` redirects into a file")


def check_command(name: str, words: list[Word], role: str | None, programs: dict) -> None:
    """Refused unless readonly.toml allows program name with these words for role."""
    spec = programs.get(name)
    if spec is None:
        raise Refused(f"`{name}` is not a read-only program the gate knows "
                      "(locks/readonly.toml)")
    _check(spec, name, words, role)


def _check(spec: dict, label: str, words: list[Word], role: str | None,
           fed: bool = False) -> None:
    """fed: the program also gets words from its input (under xargs), unknown here."""
    if "roles" in spec and role not in spec["roles"]:
        raise Refused(f"`{label}` is for the roles {', '.join(spec['roles'])} only")
    ruled = set(spec) - {"roles"}
    if ruled and fed:
        raise Refused(f"`{label}` under xargs: the words it reads may be options")
    if "subcommands" in spec:
        _check_subcommand(spec, label, words, role)
        return
    if spec.get("runs"):
        _check_runner(spec, label, words, role)
        return
    options, plain = _split(words)
    if ruled and any(w.glob for w in words):
        raise Refused(f"`{label}`: an unquoted glob may expand into an option")
    for word in words:
        if word.value in spec.get("deny_words", ()):
            raise Refused(f"`{label} {word.value}` may write")
    for option in options:
        _check_option(spec, label, option)
    if "requires" in spec and not any(_option_name(o) in spec["requires"] for o in options):
        raise Refused(f"`{label}` only with one of {', '.join(spec['requires'])}")
    _check_plain(spec, label, [w.value for w in plain], options)


def _check_subcommand(spec: dict, label: str, words: list[Word], role) -> None:
    n = 0
    while n < len(words) and words[n].value.startswith("-"):
        option = _option_name(words[n].value)
        if option not in spec.get("globals", ()):
            raise Refused(f"`{label} {words[n].value}` is not an option the gate allows "
                          "before the subcommand")
        n += 2 if option in spec.get("takes_value", ()) and "=" not in words[n].value else 1
    if n >= len(words):
        raise Refused(f"`{label}` without a subcommand")
    sub = words[n].value
    if words[n].glob or sub not in spec["subcommands"]:
        raise Refused(f"`{label} {sub}` is not a read-only subcommand the gate knows")
    _check(spec["subcommands"][sub], f"{label} {sub}", words[n + 1:], role)


def _check_runner(spec: dict, label: str, words: list[Word], role) -> None:
    """xargs OPTIONS COMMAND...: its options, then COMMAND as a command of its own that
    also gets the words xargs reads."""
    n = 0
    while n < len(words) and words[n].value.startswith("-") and words[n].value != "-":
        _check_option(spec, label, words[n].value)
        takes = _option_name(words[n].value) in spec.get("takes_value", ())
        n += 2 if takes and "=" not in words[n].value else 1
    if n >= len(words):
        raise Refused(f"`{label}` without a command")
    name = words[n].value
    if words[n].glob or name not in rules():
        raise Refused(f"`{label} {name}`: `{name}` is not a read-only program the gate knows")
    _check(rules()[name], f"{label} {name}", words[n + 1:], role, fed=True)


def _split(words: list[Word]) -> tuple[list[str], list[Word]]:
    """Options (before a `--`) and the other words."""
    options, plain, ended = [], [], False
    for word in words:
        if not ended and word.value == "--":
            ended = True
        elif not ended and len(word.value) > 1 and word.value.startswith("-"):
            options.append(word.value)
        else:
            plain.append(word)
    return options, plain


def _option_name(option: str) -> str:
    return option.split("=", 1)[0] if option.startswith("--") else option


def _check_option(spec: dict, label: str, option: str) -> None:
    name = _option_name(option)
    if name.startswith("--"):  # getopt_long takes any unambiguous abbreviation: --i, --in
        if len(name) > 2 and any(d.startswith(name) for d in spec.get("deny_long", ())):
            raise Refused(f"`{label} {option}` may write")
    elif set(name[1:]) & set(spec.get("deny_short", "")):
        raise Refused(f"`{label} {option}` may write")
    allowed = spec.get("only_options")
    if allowed is not None and name not in allowed and not (
            not name.startswith("--") and all(f"-{c}" in allowed for c in name[1:])):
        raise Refused(f"`{label} {option}` is not an option the gate allows "
                      f"(only {', '.join(allowed)})")


def _check_plain(spec: dict, label: str, plain: list[str], options: list[str]) -> None:
    if "first_word" in spec:
        if not plain and not spec.get("bare"):
            raise Refused(f"`{label}` only as {' or '.join(spec['first_word'])}")
        if plain and plain[0] not in spec["first_word"]:
            raise Refused(f"`{label} {plain[0]}` is not one of "
                          f"{', '.join(spec['first_word'])}")
    if "max_words" in spec and len(plain) > spec["max_words"]:
        raise Refused(f"`{label}` takes at most {spec['max_words']} words here "
                      "(a further word is written to or run)")
    needs = spec.get("needs_for_words")
    if needs and plain and not any(_option_name(o) in needs for o in options):
        raise Refused(f"`{label} {plain[0]}` would change something; only with one of "
                      f"{', '.join(needs)}")
    if "script" in spec:
        if not plain or not re.fullmatch(spec["script"], plain[0]):
            raise Refused(f"`{label}`: only a script that prints lines (like '1,20p') "
                          "is allowed")


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _describe(node) -> str:
    text = _text(node)
    return f"{node.type.replace('_', ' ')} {text[:40]!r}"
