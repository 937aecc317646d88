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
from meshtools.locks import gate

from .conftest import git
from .helpers import wait_until


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
    """b1 (builder) holds crates/core and docs; r1 is a research session; l1's lease on
    lease/ has run out; d1's holder process died; t1 took over a dead id that held takeover/;
    e1's lock is owned by a live process that is not the caller's."""
    keeper, doomed, first, second, stranger = (anchor_process() for _ in range(5))
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(keeper.pid), check=0)
    run("coord-register", "--role", "research", "--id", "r1", "--pid", str(keeper.pid), check=0)
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
    b1 = {"MESH_SESSION": "b1"}
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
        ("research Bash redirect", call("Bash", {"command": "echo x > crates/core/a"}, repo),
         {"MESH_SESSION": "r1"}),
        ("research Bash git commit", call("Bash", {"command": "git commit -qam x"}, repo),
         {"MESH_SESSION": "r1"}),
        ("research Bash sed -i", call("Bash", {"command": "cd docs && sed -i s/a/b/ g.md"},
                                      repo), {"MESH_SESSION": "r1"}),
        ("research Bash unparseable", call("Bash", {"command": "echo 'open"}, repo),
         {"MESH_SESSION": "r1"}),
        ("research Bash without a command", call("Bash", {}, repo), {"MESH_SESSION": "r1"}),
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
    ]


def honest(repo):
    core = repo / "crates/core/src/lib.rs"
    b1, r1 = {"MESH_SESSION": "b1"}, {"MESH_SESSION": "r1"}
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
        ("research Bash reading", call("Bash", {
            "command": "git log --oneline | head -5 2>/dev/null; grep -rn x . >&2"}, repo), r1),
        ("builder Bash writing", call("Bash", {"command": "echo x > out.txt"}, repo), b1),
        ("builder Bash the recognizer cannot parse", call("Bash", {"command": "echo 'a"}, repo),
         b1),
        ("an MCP tool with a URL and text", call("mcp__gh__issue", {
            "url": "https://x/y", "body": "see docs/a.md"}, repo), b1),
        ("an MCP tool writing in a held scope", call("mcp__fs__write_file", {
            "target": str(repo / "docs/y.md")}, repo), b1),
        ("a relative path from a held cwd", call("Write", {"file_path": "lib.rs"},
                                                 core.parent), b1),
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
    bash = run("file-lock", "check", "--hook", env={"MESH_SESSION": "r1"},
               input=call("Bash", {"command": "rm -rf docs"}, mesh))
    assert "role research is read-only" in bash.stderr and "`rm`" in bash.stderr


def test_check_applies_the_same_proof(mesh, run):
    run("file-lock", "check", "--as", "b1", "crates/core", check=0)
    assert run("file-lock", "check", "--as", "t1", "takeover/x").returncode == 1
    assert run("file-lock", "check", "--as", "l1", "lease/x").returncode == 1


@pytest.mark.parametrize("command,why", [
    ("echo x > f", "into f"),
    ("echo x >> f", "into f"),
    ("cmd &> log", "into log"),
    ("ls | tee f", "`tee`"),
    ("sudo -u x mv a b", "`mv`"),
    ("A=1 timeout 5 rm x", "`rm`"),
    ("ls\nrm x", "`rm`"),
    ("perl -pi -e s/a/b/ f", "`perl -i`"),
    ("perl -Mstrict -e 1", None),
    ("sed -i.bak s/a/b/ f", "`sed -i`"),
    ("git -C sub push origin", "`git push`"),
    ("bash -c 'cp a b'", "`cp`"),
    ("ls -la 2>/dev/null", None),
    ("grep x f 2>&1 | head >&2", None),
    ("git status && git diff", None),
    ("sed -n 1p f", None),
])
def test_bash_recognizer(command, why):
    found = gate.bash_writes(command)
    assert (found is None) if why is None else (why in found)


@pytest.mark.parametrize("tool_input", [{}, {"file_path": 5}, {"file_path": ["a", ""]},
                                        {"notebook_path": "x"}])
def test_write_tools_must_name_their_paths(tool_input):
    with pytest.raises(BadInput):
        gate.write_paths(gate.Call("Edit", tool_input, None))
