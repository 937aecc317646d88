"""The roles as data: listing, overrides, malformed files, one anchor, the write boundary."""

import json

import pytest

from meshtools.core import roles
from meshtools.core.errors import ConfigError

SEVEN = {"anchor": "opus", "builder": "sonnet", "memory": "haiku", "triage": "sonnet",
         "research": "sonnet", "security": "sonnet", "groomer": "haiku"}


def write_override(mesh_home, text):
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "roles.toml").write_text(text)
    return mesh_home / "roles.toml"


def test_the_seven_roles_with_their_model_tiers(run):
    records = run("mesh-roles", "--json", check=0).records
    assert {r["name"]: r["model"] for r in records} == SEVEN
    assert all(r["kind"] == "role" and r["ts"].endswith("Z") for r in records)


def test_show_one_role_in_full(run):
    research = run("mesh-roles", "show", "research", "--json", check=0).records[0]
    assert research["read_only"] and research["writes"] == []
    assert "Edit" in research["disallowed_tools"] and research["charter"]
    groomer = run("mesh-roles", "show", "groomer", check=0, env={"NO_COLOR": "1"}).records
    assert groomer[0]["every"] == 86400


@pytest.mark.parametrize("name", ["nope", "../x", ""])
def test_unknown_or_invalid_role_is_refused(run, name):
    result = run("mesh-roles", "show", name)
    assert result.returncode == 65 and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_a_mesh_overrides_keys_and_adds_roles(run, mesh_home):
    write_override(mesh_home, '[roles.builder]\nmodel = "opus"\nconcurrency = 5\n\n'
                              '[roles.docs]\ndescription = "writes docs"\nmodel = "haiku"\n'
                              'charter = "docs only"\nprompt = "tidy the docs"\n'
                              'writes = ["docs/**"]\nevery = "30m"\n')
    by_name = {r["name"]: r for r in run("mesh-roles", "--json", check=0).records}
    assert by_name["builder"]["model"] == "opus" and by_name["builder"]["concurrency"] == 5
    assert by_name["builder"]["description"].startswith("Writes code")  # untouched keys stay
    assert by_name["docs"]["queue"] == "docs" and by_name["docs"]["every"] == 1800


@pytest.mark.parametrize("text, where, key", [
    ('[roles.builder]\nmodel = "opus"\nconcurrency = "many"\n', ":3:", "roles.builder.concurrency"),
    ('[roles.builder]\n\nmodle = "opus"\n', ":3:", "roles.builder.modle"),
    ('[roles.builder]\nmodel = "opus\n', "line 2", ""),
    ('[roles.memory]\nevery = "often"\n', ":2:", "roles.memory.every"),
    ('[roles.anchor]\nconcurrency = 2\n', ":2:", "roles.anchor.concurrency"),
    ('[roles.new]\nmodel = "haiku"\n', ":1:", "roles.new.description"),
    ('[roles.builder]\ntools = ["Read", 3]\n', ":2:", "roles.builder.tools"),
    # nan and inf passed `> 0`: a standing task every NaN seconds
    ('[roles.memory]\nevery = nan\n', ":2:", "roles.memory.every"),
    ('[roles.memory]\nevery = inf\n', ":2:", "roles.memory.every"),
])
def test_malformed_roles_file_names_file_line_and_key(run, mesh_home, text, where, key):
    path = write_override(mesh_home, text)
    result = run("mesh-roles", "--json")
    assert result.returncode == 78, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and str(path) in line and where in line and key in line
    assert result.stdout == ""


def test_parse_duration():
    assert [roles.parse_duration(v) for v in ("90s", "15m", "6h", "1d", 42)] == \
        [90, 900, 21600, 86400, 42]
    for bad in ("soon", "0m", -1, True, float("nan"), float("inf"), "999999999999999999999",
                "3651d"):
        with pytest.raises(ValueError):
            roles.parse_duration(bad)


def test_may_write_follows_the_globs():
    by_name = roles.load()
    assert roles.may_write(by_name["builder"], "crates/core/src/lib.rs")
    assert not roles.may_write(by_name["research"], "README.md")
    assert roles.may_write(by_name["memory"], "docs/guide.md")
    assert not roles.may_write(by_name["memory"], "crates/core/src/lib.rs")


def test_load_refuses_a_broken_override_in_library_code(mesh_home):
    write_override(mesh_home, "[roles.x]\n")
    from meshtools.core.home import MeshHome

    with pytest.raises(ConfigError, match="roles.x.description"):
        roles.load(MeshHome(str(mesh_home)))


def test_exactly_one_anchor_per_mesh(run, anchor_process):
    first, second = anchor_process(), anchor_process()
    run("coord-register", "--role", "anchor", "--pid", str(first.pid), check=0)
    refused = run("coord-register", "--role", "anchor", "--id", "anchor-b", "--pid",
                  str(second.pid))
    assert refused.returncode == 75 and "anchor-1 is alive" in refused.stderr
    assert [r["id"] for r in run("coord-peers", "--json", check=0).records] == ["anchor-1"]
    first.kill()
    first.wait()
    run("coord-register", "--role", "anchor", "--id", "anchor-b", "--pid", str(second.pid),
        check=0)


def test_the_gate_keeps_a_role_inside_its_write_boundary(run, repo, anchor_process):
    keeper = anchor_process()
    run("coord-register", "--role", "groomer", "--id", "g1", "--pid", str(keeper.pid), check=0)
    run("file-lock", "acquire", "crates/core", "--as", "g1", check=0)
    call = json.dumps({"hook_event_name": "PreToolUse", "tool_name": "Edit", "cwd": str(repo),
                       "tool_input": {"file_path": str(repo / "crates/core/src/lib.rs")}})
    denied = run("file-lock", "check", "--hook", input=call, env={"MESH_SESSION": "g1"})
    assert denied.returncode == 2 and "role groomer may not write" in denied.stderr
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(keeper.pid), check=0)
    run("file-lock", "release", "--all", "--as", "g1", check=0)
    run("file-lock", "acquire", "crates/core", "--as", "b1", check=0)
    assert run("file-lock", "check", "--hook", input=call,
               env={"MESH_SESSION": "b1"}).returncode == 0


def test_of_queue_finds_a_role_by_its_queue_not_its_name(mesh_home):
    from meshtools.core import roles
    from meshtools.core.home import MeshHome

    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "roles.toml").write_text('[roles.builder]\nqueue = "build"\n')
    known = roles.load(MeshHome(str(mesh_home)))
    assert roles.of_queue(known, "build").name == "builder"
    assert roles.of_queue(known, "builder") is None
    assert roles.of_queue(known, "triage").name == "triage"


def test_every_role_names_the_tools_that_exist_for_it(mesh_home):
    """`--tools` for every role (issue 17/4): a tool a CLI release adds stays off until a
    role names it. The packaged roles say theirs; a mesh's own role without the key gets
    reading tools, and editing ones only where it may write."""
    import tomllib

    from meshtools.core.home import MeshHome
    from meshtools.executors.claude import claude_argv

    packaged = tomllib.loads(roles.packaged_text()[1])["roles"]
    assert all("tools" in table for table in packaged.values())
    write_override(mesh_home, '[roles.docs]\ndescription = "d"\nmodel = "haiku"\ncharter = "c"\n'
                              'prompt = "p"\nwrites = ["docs/**"]\n\n'
                              '[roles.reader]\ndescription = "r"\nmodel = "haiku"\n'
                              'charter = "c"\nprompt = "p"\n')
    known = roles.load(MeshHome(str(mesh_home)))
    assert known["docs"].tools == ("Read", "Grep", "Glob", "Edit", "Write", "MultiEdit")
    assert known["reader"].tools == ("Read", "Grep", "Glob")
    for role in known.values():
        argv = claude_argv(role)
        assert ("--tools=" + ",".join(role.tools)) in argv, role.name
        assert not ({"Edit", "Write", "MultiEdit", "NotebookEdit"} & set(role.tools)
                    and role.read_only), role.name


@pytest.mark.parametrize("tools", ['["Read,Bash"]', '["Bash(git *)"]', '[""]'])
def test_a_tool_name_that_would_change_the_list_is_refused(run, mesh_home, tools):
    write_override(mesh_home, f"[roles.builder]\ntools = {tools}\n")
    result = run("mesh-roles", "--json")
    assert result.returncode == 78 and "roles.builder.tools" in result.stderr
