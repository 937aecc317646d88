"""The lock gate (`file-lock check --hook`): it allows only what it has proved.

One mesh is set up once per test (sessions, locks, symlinks, a second repository), then a
table of hook calls is put through the real command: every hostile one must be denied
(exit 2, a reason on stderr), every honest one allowed (exit 0).
"""

import json
import os
import time

import pytest

from meshtools.core.errors import BadInput
from meshtools.locks import gate, readonly

from .helpers import git, wait_until


def call(tool, tool_input=None, cwd=None, **extra):
    body = {"session_id": "s", "hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_use_id": "toolu_1", **extra}
    if tool_input is not None:
        body["tool_input"] = tool_input
    if cwd is not None:
        body["cwd"] = str(cwd)
    return json.dumps(body)


@pytest.fixture
def mesh(repo, run, anchor_process, tmp_path):
    """b1 (builder) holds crates/core and docs; r1 is a research session, s1 a security one
    (read-only, with Bash); l1's lease on lease/ has run out; d1's holder process died; t1
    took over a dead id that held takeover/; e1's lock is owned by a live process that is
    not the caller's."""
    keeper, doomed, first, second, stranger = (anchor_process() for _ in range(5))
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(keeper.pid), check=0)
    run("coord-register", "--role", "research", "--id", "r1", "--pid", str(keeper.pid), check=0)
    run("coord-register", "--role", "security", "--id", "s1", "--pid", str(keeper.pid), check=0)
    run("coord-register", "--role", "builder", "--id", "t1", "--pid", str(first.pid), check=0)
    run("file-lock", "acquire", "-n", "--as", "b1", "crates/core", "docs", check=0)
    until = run("file-lock", "acquire", "-n", "--as", "l1", "--lease", "0.3", "lease/x",
                check=0).records[0]["lease_until"]
    run("file-lock", "acquire", "-n", "--as", "d1", "--pid", str(doomed.pid), "dead/x", check=0)
    run("file-lock", "acquire", "-n", "--as", "t1", "takeover/x", check=0)
    run("file-lock", "acquire", "-n", "--as", "e1", "--pid", str(stranger.pid), "elsewhere/x", check=0)
    for gone in (doomed, first):  # no acquire after this: nothing reaps their locks
        gone.kill()
        gone.wait()
    run("coord-register", "--role", "builder", "--id", "t1", "--pid", str(second.pid), check=0)

    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.symlink(outside, repo / "crates/core/escape.txt")
    os.symlink(tmp_path / "no-such-dir" / "x", repo / "crates/core/dangling.txt")
    os.symlink(repo / "crates/core/src/lib.rs", repo / "crates/core/inside.rs")
    other = tmp_path / "other"
    (other / "crates/core").mkdir(parents=True)
    (other / "crates/core/Cargo.toml").write_text("[package]\n")
    git(other, "init", "-q")
    os.link(outside, repo / "crates/core/hard.txt")  # a second name of a file outside
    (tmp_path / "elsewhere").mkdir()
    wait_until(lambda: time.time() > until)
    return repo


def hostile(repo):
    core = repo / "crates/core/src/lib.rs"
    b1, r1, s1 = {"MESH_SESSION": "b1"}, {"MESH_SESSION": "r1"}, {"MESH_SESSION": "s1"}
    return [
        ("empty stdin", "", b1),
        ("whitespace", " \n\t", b1),
        ("not an object", "[1, 2]", b1),
        ("no tool_name", json.dumps({"tool_input": {"file_path": str(core)}}), b1),
        ("no tool_input", call("Edit", cwd=repo), b1),
        ("tool_input null", call("Edit", cwd=repo).replace('"tool_name"',
                                                          '"tool_input": null, "tool_name"'), b1),
        ("tool_input []", call("Edit", [], repo), b1),
        ("file_path empty", call("Edit", {"file_path": ""}, repo), b1),
        ("file_path null", call("Write", {"file_path": None, "content": "x"}, repo), b1),
        ("path instead of file_path", call("Edit", {"path": str(core)}, repo), b1),
        ("MultiEdit with only edits", call("MultiEdit", {"edits": [
            {"old_string": "a", "new_string": "b"}]}, repo), b1),
        ("NotebookEdit without notebook_path", call("NotebookEdit", {"new_source": "x"}, repo),
         b1),
        ("held file_path beside a free notebook_path", call("Edit", {
            "file_path": str(core), "notebook_path": str(repo / "web/nb.ipynb")}, repo), b1),
        ("a free path inside edits[]", call("MultiEdit", {"file_path": str(core), "edits": [
            {"file_path": str(repo / "web/src/app.js"), "old_string": "1"}]}, repo), b1),
        (".. escaping the repository",
         call("Write", {"file_path": str(repo / "crates/core/../../../x.txt")}, repo), b1),
        ("relative .. escaping", call("Write", {"file_path": "../../x.txt"}, repo), b1),
        ("/etc/passwd", call("Write", {"file_path": "/etc/passwd", "content": "x"}, repo), b1),
        ("/root/.bashrc for research", call("Write", {"file_path": "/root/.bashrc"}, repo),
         {"MESH_SESSION": "r1"}),
        ("research writing in a held scope", call("Edit", {"file_path": str(core)}, repo),
         {"MESH_SESSION": "r1"}),
        ("symlink to a file outside",
         call("Edit", {"file_path": str(repo / "crates/core/escape.txt")}, repo), b1),
        ("dangling symlink to outside",
         call("Write", {"file_path": str(repo / "crates/core/dangling.txt")}, repo), b1),
        ("a path in another repository", call("Write", {
            "file_path": str(repo.parent / "other/crates/core/x.rs")}, repo.parent / "other"),
         b1),
        ("the git directory", call("Write", {"file_path": str(repo / ".git/config")}, repo), b1),
        ("unheld scope", call("Write", {"file_path": str(repo / "web/src/app.js")}, repo), b1),
        ("held by another session", call("Edit", {"file_path": str(core)}, repo),
         {"MESH_SESSION": "b2"}),
        ("lease expired", call("Write", {"file_path": str(repo / "lease/x")}, repo),
         {"MESH_SESSION": "l1"}),
        ("holder died", call("Write", {"file_path": str(repo / "dead/x")}, repo),
         {"MESH_SESSION": "d1"}),
        ("took over a dead id", call("Write", {"file_path": str(repo / "takeover/x")}, repo),
         {"MESH_SESSION": "t1"}),
        ("owned by a process not the caller's",
         call("Write", {"file_path": str(repo / "elsewhere/x")}, repo), {"MESH_SESSION": "e1"}),
        ("no session", call("Edit", {"file_path": str(core)}, repo), {}),
        ("security Bash redirect", call("Bash", {"command": "echo x > crates/core/a"}, repo),
         {"MESH_SESSION": "s1"}),
        ("security Bash git commit", call("Bash", {"command": "git commit -qam x"}, repo),
         {"MESH_SESSION": "s1"}),
        ("security Bash sed -i", call("Bash", {"command": "cd docs && sed -i s/a/b/ g.md"},
                                      repo), {"MESH_SESSION": "s1"}),
        ("security Bash unparseable", call("Bash", {"command": "echo 'open"}, repo),
         {"MESH_SESSION": "s1"}),
        ("security Bash without a command", call("Bash", {}, repo), {"MESH_SESSION": "s1"}),
        # the second attack: each of these was allowed
        ("a hard link to a file outside", call("Edit", {"file_path": str(core.parent.parent /
                                                                          "hard.txt")}, repo),
         b1),
        ("a relative path from a cwd outside the repository",
         call("Write", {"file_path": "docs/x.md"}, repo.parent / "elsewhere"), b1),
        ("a relative path from a cwd that does not exist",
         call("Write", {"file_path": "docs/x.md"}, "/nonexistent/dir"), b1),
        ("research `bash` (no tool: names are exact)", call("bash", {"command": "rm -rf docs"},
                                                            repo), {"MESH_SESSION": "r1"}),
        ("`WRITE` with a path", call("WRITE", {"file_path": str(repo / "docs/x")}, repo), b1),
        ("an MCP tool's target", call("mcp__fs__write_file", {"target": str(repo / "web/x")},
                                      repo), b1),
        ("an MCP tool's path under a homoglyph key",
         call("mcp__fs__write_file", {"file_p\u0430th": "/etc/passwd"}, repo), b1),
        ("an MCP tool's relative ../ path", call("mcp__x__put", {"to": "../../x"}, repo), b1),
        # the real CLI's tools outside a role's `tools`: they should not exist (issue 17/4)
        *[(f"builder {tool}", call(tool, {"name": "x", "prompt": "y"}, repo), b1)
          for tool in ("CronCreate", "EnterWorktree", "Workflow", "SendMessage",
                       "ScheduleWakeup", "Monitor", "Skill", "ToolSearch", "ReportFindings")],
        ("security CronCreate", call("CronCreate", {"cron": "* * * * *", "prompt": "x"}, repo),
         s1),
        ("research Bash (research has no Bash)", call("Bash", {"command": "ls"}, repo), r1),
        ("a read-only role's MCP tool with no path in it",
         call("mcp__db__query", {"sql": "drop table x"}, repo), r1),
        # oversized and repetitive inputs are bounded (issue 17/7)
        ("over the input cap", call("Write", {"file_path": str(core),
                                              "content": "x" * (gate.MAX_INPUT_BYTES + 1)},
                                    repo), b1),
        ("more distinct paths than the cap", call("mcp__fs__touch", {"paths": [
            str(repo / f"docs/{n}.md") for n in range(gate.MAX_PATHS + 1)]}, repo), b1),
        # MCP paths under keys and in shapes that were missed (issue 17/8)
        ("an MCP location", call("mcp__x__put", {"location": "crates/cli/src/main.rs"}, repo),
         b1),
        ("an MCP name with a slash", call("mcp__x__put", {"name": "crates/cli/x.rs"}, repo), b1),
        ("an MCP name of an existing file", call("mcp__x__put", {"name": "README.md"}, repo),
         b1),
        ("an MCP new file in a new folder", call("mcp__x__put", {"where": "newcrate/src/a.rs"},
                                                  repo), b1),
        ("an upper-case file URI", call("mcp__x__put", {"uri": "FILE:///etc/passwd"}, repo),
         b1),
        ("a file URI on localhost", call("mcp__x__put", {"u": "file://localhost/etc/passwd"},
                                         repo), b1),
        ("a file URI on another host", call("mcp__x__put", {"u": "file://evil/docs/a.md"},
                                            repo), b1),
        ("a file URI under a path key", call("mcp__x__put", {"path": "file:///etc/passwd"},
                                             repo), b1),
        ("a path with space before it", call("mcp__x__put", {"to": " /etc/passwd"}, repo), b1),
        ("a path with a newline after it", call("mcp__x__put", {"to": "/etc/passwd\n"}, repo),
         b1),
        ("a home path", call("mcp__x__put", {"dest_file_of": "~/.bashrc"}, repo), b1),
        # a read-only role's Bash line is allowed only when plainly read-only (issue 17/6)
        *[(f"security Bash {command!r}", call("Bash", {"command": command}, repo), s1)
          for command in WRITES[:ISSUE_FORMS]],
    ]


def honest(repo):
    core = repo / "crates/core/src/lib.rs"
    b1, r1, s1 = {"MESH_SESSION": "b1"}, {"MESH_SESSION": "r1"}, {"MESH_SESSION": "s1"}
    return [
        ("Edit in a held scope", call("Edit", {"file_path": str(core), "old_string": "a",
                                              "new_string": "b"}, repo), b1),
        ("Write a new file in a held scope",
         call("Write", {"file_path": str(repo / "docs/new/page.md"), "content": "x"}, repo), b1),
        ("relative path", call("Write", {"file_path": "docs/guide.md"}, repo), b1),
        ("MultiEdit", call("MultiEdit", {"file_path": str(core), "edits": [
            {"old_string": "a", "new_string": "b"}]}, repo), b1),
        ("NotebookEdit", call("NotebookEdit", {"notebook_path": str(repo / "docs/n.ipynb"),
                                               "new_source": "x"}, repo), b1),
        ("symlink to a held file", call("Edit", {"file_path": str(repo / "crates/core/inside.rs")},
                                        repo), b1),
        ("Read anywhere", call("Read", {"file_path": "/etc/passwd"}, repo), r1),
        ("Grep", call("Grep", {"pattern": "x", "path": "/"}, repo), r1),
        ("security Bash reading", call("Bash", {
            "command": "git log --oneline | head -5 2>/dev/null; grep -rn x . >&2"}, repo), s1),
        ("builder Bash writing", call("Bash", {"command": "echo x > out.txt"}, repo), b1),
        ("builder Bash the recognizer cannot parse", call("Bash", {"command": "echo 'a"}, repo),
         b1),
        ("an MCP tool with a URL and text", call("mcp__gh__issue", {
            "url": "https://x/y", "body": "see docs/a.md"}, repo), b1),
        ("an MCP tool writing in a held scope", call("mcp__fs__write_file", {
            "target": str(repo / "docs/y.md")}, repo), b1),
        ("a relative path from a held cwd", call("Write", {"file_path": "lib.rs"},
                                                 core.parent), b1),
        ("a role's own tool", call("Task", {"prompt": "x"}, repo), b1),
        ("Agent is Task's other name", call("Agent", {"prompt": "x"}, repo), b1),
        ("StructuredOutput for any role", call("StructuredOutput", {"role": "x"}, repo), r1),
        ("Read without a session", call("Read", {"file_path": "/etc/passwd"}, repo), {}),
        ("a held path repeated, under the input cap", call("MultiEdit", {
            "file_path": str(core), "edits": [{"file_path": str(core), "old_string": "a"}] *
            5000}, repo), b1),
        ("an MCP call with names that are no paths", call("mcp__gh__pr", {
            "repo": "owner/name", "branch": "feature/x", "to": "a@example.com",
            "title": "fix crates/cli/x.rs and docs", "url": "HTTPS://x/y"}, repo), b1),
        ("an MCP name in a held scope", call("mcp__x__put", {"name": "docs/y.md"}, repo), b1),
        *[(f"security Bash {command!r}", call("Bash", {"command": command}, repo), s1)
          for command in READS[:10]],
    ]


def test_the_gate_denies_what_it_cannot_prove(mesh, run):
    wrong = []
    for expected, cases in ((2, hostile(mesh)), (0, honest(mesh))):
        for name, stdin, env in cases:
            result = run("file-lock", "check", "--hook", input=stdin, env=env)
            if result.returncode != expected or (expected == 2 and not
                                                 result.stderr.startswith("file-lock: ")):
                wrong.append((name, result.returncode, result.stderr.strip()))
    assert wrong == []


def test_a_denial_says_why(mesh, run):
    died = run("file-lock", "check", "--hook", env={"MESH_SESSION": "t1"},
               input=call("Write", {"file_path": str(mesh / "takeover/x")}, mesh))
    # the takeover released the dead holder's lock: nothing is inherited
    assert "nobody holds it" in died.stderr and "file-lock acquire takeover" in died.stderr
    bash = run("file-lock", "check", "--hook", env={"MESH_SESSION": "s1"},
               input=call("Bash", {"command": "rm -rf docs"}, mesh))
    assert "role security is read-only" in bash.stderr and "`rm`" in bash.stderr


def test_a_hard_link_is_seen_from_any_working_directory(mesh, run):
    """The link count was read from the repository-relative path, relative to the hook's
    own working directory: from a subfolder it found nothing and allowed the write."""
    denied = run("file-lock", "check", "--hook", env={"MESH_SESSION": "b1"}, cwd=mesh / "web",
                 input=call("Edit", {"file_path": str(mesh / "crates/core/hard.txt")}, mesh))
    assert denied.returncode == 2 and "hard link" in denied.stderr


def test_check_applies_the_same_proof(mesh, run):
    run("file-lock", "check", "--as", "b1", "crates/core", check=0)
    assert run("file-lock", "check", "--as", "t1", "takeover/x").returncode == 1
    assert run("file-lock", "check", "--as", "l1", "lease/x").returncode == 1


# Issue 17/6: each of these was allowed for a read-only role by the recognizer of writes
# (the first ISSUE_FORMS are the issue's own; the gate runs them all through the CLI).
ISSUE_FORMS = 23
WRITES = [
    "cat README#; rm -f x", "echo x > 1", "{ rm -f x; }", "! rm -f x",
    "if true; then rm -f x; fi", "for f in x; do rm -f x; done", "coproc rm -f x",
    "bash -lc 'rm -f x'", "{rm,-f,x}", "$'\\x72m' -f x", "r\\\nm -f x", "setsid rm -f x",
    "flock F rm -f x", "git config core.hooksPath /tmp/h", "git checkout-index -f -a",
    "git branch -D main", "git remote add x /tmp/x", "git fetch . main:x",
    "git read-tree -u --reset HEAD", "sed -zi s/a/b/ f", "sed --i s/a/b/ f",
    "perl -0pi -e s/a/b/ f", "find . -name x -exec rm {} +",
    # and more of the same families
    "sed -n 1p 2>/dev/null -i f", "sed -n 1p *", "sed 's/a/b/w out' f", "sed -n '1e id' f",
    "sed -e 1p -i f", "git log --output=x", "git log --out=x", "git -c core.pager=rm log",
    "git stash", "git tag v1", "git branch newb", "git config --add x.y z", "sort -o f x",
    "sort -ro f x", "uniq a b", "env rm x", "A=1 ls", "GIT_EXTERNAL_DIFF=x git diff",
    "ls $(rm x)", "ls `rm x`", "ls <(rm x)", "ls $X", "cat <<EOF\n$(rm x)\nEOF",
    "cat <<EOF > out\nx\nEOF", "echo x >&out", "echo x &> out", "echo x >> out",
    "ls <> f", "ls; rm x", "ls && xargs rm", "mesh-pick --gate 'rm x'", "mesh-pick --no-gate",
    "mesh-pick --no-g", "meshctl down", "file-lock x -- rm x", "queue-dead purge", "ls {a,b}",
    "cat *.{py,rs}", "ls \"$x\"", "exec rm x", "eval 'rm x'", "f() { rm x; }; f",
    "time rm x", "(rm x)", "[[ -f x ]] && rm x", "case x in x) rm x;; esac",
    "while true; do rm x; done", "/bin/rm x", "\\rm x", "'rm' x", "ls\nrm x",
    "git ls-remote --upload-pack=x origin", "git grep -O x", "tree -o f", "date -s now",
    "echo 'open", "ls | xargs rm", "ls | xargs sed -n 1p", "ls | xargs git log",
    "ls | xargs xargs cat", "xargs -o cat", "rg --hostname-bin=x y",
    "cat <<EOF && rm x\nx\nEOF", "cat <<'EOF' | sh\nrm x\nEOF",
]
READS = [
    "git log --oneline | head", "grep -rn foo src", "ls -la", "cat a b | wc -l", "rg x",
    "file-lock status", "coord-peers", "queue-stat", "queue-dead list", "coord-send anchor done",
    "git status && git diff", "sed -n 1,20p f", "sed -n '/a/,/b/p' f", "sed 's/a/b/g' f",
    "git show HEAD@{1}", "git branch -a", "git branch --list 'mesh/*'", "git branch -vv",
    "git config --get user.name", "git stash list", "find . -name '*.py' -type f",
    "head -5 f 2>/dev/null", "grep x f 2>&1 | head >&2", "ls *.py", "cd docs && ls",
    "git -C sub log -3", "git --no-pager log -p -- src", "npm audit --json",
    'echo "a b" \'c\'', "cat <<'EOF'\nhi\nEOF", "grep -c x <<< 'abc'",
    "sort -k2 f | uniq -c", "jq .x f", "ls # ; rm x", "ls &", "cat < f", "git log --format=%H",
    "git diff --output-indicator-new=+ HEAD", "meshctl status --check", "mesh-events -n 5",
    "git ls-files | xargs grep -l foo", "find . -name '*.py' -print0 | xargs -0 wc -l",
]
ANCHOR_ONLY = ['meshctl execute --role builder "fix the parser"', "mesh-pick --role builder",
               "meshctl pick --role builder",
               "cat <<'EOF' | meshctl execute -\nfix $x in `y`\nEOF"]


@pytest.mark.parametrize("command", WRITES)
def test_a_read_only_line_that_is_not_plainly_read_only_is_denied(command):
    assert readonly.refusal(command, "anchor") is not None


@pytest.mark.parametrize("command", READS + ANCHOR_ONLY)
def test_plainly_read_only_lines_are_allowed(command):
    assert readonly.refusal(command, "anchor") is None


@pytest.mark.parametrize("command", ANCHOR_ONLY)
def test_the_anchors_own_commands_are_the_anchors(command):
    assert "anchor only" in readonly.refusal(command, "security")


@pytest.mark.parametrize("command, why", [
    ("echo x > f", "`> f` redirects into a file"),
    ("rm -rf docs", "`rm` is not a read-only program"),
    ("sed -zi s/a/b/ f", "`sed -zi` is not an option"),
    ("git branch -D x", "`git branch -D`"),
    ("find . -exec rm {} +", "`find -exec` may write"),
    ("$'\\x72m' x", "is not a plain word"),
    ("ls $(id)", "command substitution"),
    ("{rm,-f,x}", "cannot read"),
])
def test_a_denial_names_what_it_refused(command, why):
    assert why in readonly.refusal(command, "security")


def test_the_allowlist_is_well_formed():
    programs = readonly.rules()
    assert "rm" not in programs and "git" in programs and "push" not in programs["git"][
        "subcommands"]


def test_each_distinct_path_is_counted_once():
    """A path repeated thousands of times is one path to resolve (issue 17/7: 129,453
    repeats took the gate past its hook timeout)."""
    edits = [{"file_path": "/r/a.rs", "old_string": "x"}] * 6000
    assert gate.write_paths(gate.Call("MultiEdit", {"file_path": "/r/a.rs", "edits": edits},
                                      None)) == ["/r/a.rs"]
    many = [f"/r/{n % 7}.rs" for n in range(gate.MAX_VALUES - 10)]
    assert len(gate.write_paths(gate.Call("mcp__fs__w", {"paths": many}, None))) == 7


def test_the_input_cap_is_checked_before_parsing():
    with pytest.raises(BadInput, match="over 1 MiB"):
        gate.parse_call(b"{" * (gate.MAX_INPUT_BYTES + 1))


def test_the_walk_over_the_input_is_bounded():
    """Small values are many to the MiB: their number is capped as well."""
    with pytest.raises(BadInput, match="more than"):
        gate.write_paths(gate.Call("mcp__x__y", {"a": [0] * gate.MAX_VALUES}, None))
    with pytest.raises(BadInput, match="more than"):  # nesting, too
        deep = {}
        for _ in range(gate.MAX_VALUES):
            deep = {"a": deep}
        gate.write_paths(gate.Call("mcp__x__y", deep, None))


@pytest.mark.parametrize("value, exists, path", [
    ("crates/cli/src/main.rs", {"crates"}, True),
    ("README.md", {"README.md"}, True),
    ("new/dir/x.rs", set(), True),
    ("FILE:///etc/passwd", set(), True),
    ("  /etc/passwd\t", set(), True),
    ("~/.ssh/config", set(), True),
    ("owner/name", set(), False),
    ("feature/x", set(), False),
    ("fix crates/cli/x.rs and docs", {"crates"}, False),
    ("https://example.com/a.js", set(), False),
    ("mailto:a@b.c", set(), False),
    ("a@example.com", set(), False),
])
def test_looks_like_path(value, exists, path):
    assert gate.looks_like_path(value, exists.__contains__) is path


@pytest.mark.parametrize("tool, tools, read_only, denied", [
    ("Read", ("Read",), True, False),
    ("Agent", ("Task",), False, False),
    ("Task", ("Agent",), False, False),
    ("StructuredOutput", ("Read",), True, False),
    ("EnterWorktree", ("Read", "Edit"), False, True),
    ("CronCreate", ("CronCreate",), True, True),  # unknown to the gate: writes, maybe
    ("CronCreate", ("CronCreate",), False, False),  # a writing role that names it: paths
    ("mcp__fs__write", ("Read",), False, False),  # MCP tools are not in --tools
    ("mcp__fs__read", ("Read",), True, True),
    ("Bash", ("Read",), True, True),
])
def test_tool_refusal(tool, tools, read_only, denied):
    assert (gate.tool_refusal(tool, tools, read_only) is not None) is denied


@pytest.mark.parametrize("tool_input", [{}, {"file_path": 5}, {"file_path": ["a", ""]},
                                        {"notebook_path": "x"}])
def test_write_tools_must_name_their_paths(tool_input):
    with pytest.raises(BadInput):
        gate.write_paths(gate.Call("Edit", tool_input, None))
