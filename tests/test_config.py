"""config.toml: a value of the wrong type is a configuration error (78) naming file:line:key."""

import pytest

from meshtools.core import config
from meshtools.core.errors import ConfigError


@pytest.mark.parametrize("text,argv,where", [
    ('# mesh\n[coord]\nstale_after = "abc"\n', ["coord-peers"],
     "config.toml:3: [coord] stale_after: expected a number, got 'abc'"),
    ("[coord]\ndead_after = nan\n", ["coord-peers"], "config.toml:2: [coord] dead_after"),
    ("locks = 5\n", ["file-lock", "acquire", "--as", "A", "docs"],
     "config.toml:1: locks: expected a table, got 5"),
    ('[locks]\nmanifests = ["a", 1]\n', ["file-lock", "check", "--as", "A", "docs"],
     "config.toml:2: [locks] manifests: expected a list of strings"),
    ("budget = 1\n", ["queue-drain", "--agent", "shell", "--burst"],
     "config.toml:1: budget: expected a table, got 1"),
    ('[anchor]\nmax_handbacks = "x"\n', ["mesh-anchor", "--once"],
     "config.toml:2: [anchor] max_handbacks: expected an integer, got 'x'"),
    ("[agents.x]\noutput = \"text\"\ncommand = 5\n", ["queue-drain", "--agent", "x", "--burst"],
     "config.toml:3: [agents.x] command: expected a string or a list, got 5"),
    ("[worktrees]\nroot = 7\n", ["mesh-worktree", "ensure", "builder"],
     "config.toml:2: [worktrees] root: expected a string, got 7"),
    # a command string that shlex cannot split was an internal error (70)
    ("[agent]\ncommand = \"claude 'x\"\n", ["mesh-agent", "research", "hi"],
     "config.toml:2: [agent] command: cannot split"),
    ("[agents.x]\ncommand = \"a 'b\"\n", ["queue-drain", "--agent", "x", "--burst"],
     "config.toml:2: [agents.x] command: cannot split"),
    ("[agents.x]\n\ncommand = []\n", ["queue-drain", "--agent", "x", "--burst"],
     "config.toml:3: [agents.x] command: must be a non-empty list of strings"),
])
def test_a_wrong_type_exits_78_naming_the_key(repo, run, mesh_home, anchor_process, text,
                                              argv, where):
    run("coord-register", "--role", "builder", "--id", "b1", "--pid",
        str(anchor_process().pid), check=0)
    (mesh_home / "config.toml").write_text(text)
    result = run(*argv)
    assert result.returncode == 78, (result.returncode, result.stderr)
    assert f"{mesh_home}/{where}" in result.stderr and result.stderr.count("\n") == 1


def test_section_reads_typed_values(mesh_home):
    settings = config.Section({"coord": {"stale_after": 5, "name": "x"}, "flag": True})
    coord = settings.section("coord")
    assert coord.get("stale_after", float) == 5.0 and coord.get("missing", float, 1.5) == 1.5
    assert settings.section("absent").get("x", str, "d") == "d"
    with pytest.raises(ConfigError, match=r"\[coord\] name: expected a number, got 'x'"):
        coord.get("name", float)
    with pytest.raises(ConfigError, match="flag: expected a table, got True"):
        settings.section("flag")
    with pytest.raises(ConfigError, match="expected an integer, got True"):
        config.Section({"n": True}).get("n", int)


def test_the_config_init_writes_tells_the_liveness_rule_of_the_readme(run, repo):
    """Its comment said a heartbeat older than dead_after makes a session dead: on this
    host a live process never is (issue 8, item 2)."""
    home = run("meshctl", "init", "--no-agents", "--json", check=0).records[-1]["home"]
    text = open(f"{home}/config.toml").read()
    assert 'older than dead_after, "dead"' not in text
    assert "a live process on this host is never dead" in text


def test_the_init_template_sets_only_keys_of_the_schema_at_their_defaults():
    """meshctl init's config.toml, its commented-out settings included, against SCHEMA: a
    key there is one the loader knows, and a value it shows is the default the code uses."""
    import re
    import tomllib

    from meshtools.mesh.boot import DEFAULT_CONFIG

    text = re.sub(r"(?m)^# (?=\[|\w+ = )", "", DEFAULT_CONFIG)
    data = tomllib.loads(text)
    assert config.unknown(data) == []
    assert set(data) == set(config.SCHEMA)  # every section is shown
    shown = {(name, key): value for name, table in data.items() for key, value in table.items()}
    assert ("coord", "stale_after") in shown and ("anchor", "fatal_respawns") in shown
    for (name, key), value in shown.items():
        default = config.default(name, key)
        if default not in (None, ()):  # an example of an optional setting, a list of tables
            assert (tuple(value) if isinstance(value, list) else value) == default, (name, key)


def test_unknown_lists_keys_and_tables_the_schema_lacks():
    data = {"coord": {"stale_afer": 5, "dead_after": 1}, "cord": {}, "locks": 5,
            "agents": {"x": {"command": "x", "outptu": "text"}}}
    assert config.unknown(data) == [(("coord",), "stale_afer"), ((), "cord"),
                                    (("agents", "x"), "outptu")]


def test_unknown_lists_keys_of_entries_of_an_array_of_tables():
    data = {"dash": {"service": [{"name": "a", "target": "x"}, {"name": "b", "tagret": "y"}],
                     "offload": "not a list: its reader says so"}}
    assert config.unknown(data) == [(("dash", "service"), "tagret")]


def test_a_typo_in_config_is_warned_about_once_naming_file_line_and_key(run, mesh_home):
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[coord]\nstale_afer = 5\n\n[cord]\nx = 1\n")
    result = run("queue-drain", "--agent", "shell", "--burst", check=0)  # reads it twice
    assert result.stderr.splitlines() == [
        f"queue-drain: warning: {mesh_home}/config.toml:2: [coord] stale_afer: unknown key, "
        "ignored (known: dead_after, stale_after)",
        f"queue-drain: warning: {mesh_home}/config.toml:4: cord: unknown key, ignored (known: "
        f"{', '.join(sorted([*config.SCHEMA, *config.TABLES]))})"]


def test_value_types_and_defaults_come_from_the_schema(mesh_home):
    from meshtools.core.home import MeshHome

    mesh_home.mkdir(parents=True, exist_ok=True)
    home = MeshHome(str(mesh_home))
    assert config.value(home, "coord", "stale_after") == 60.0
    assert config.value(home, "anchor", "max_handbacks") == 1
    (mesh_home / "config.toml").write_text('[anchor]\nmax_handbacks = 2.5\n')
    with pytest.raises(ConfigError, match=r"config.toml:2: \[anchor\] max_handbacks: expected"
                                          " an integer, got 2.5"):
        config.value(MeshHome(str(mesh_home)), "anchor", "max_handbacks")
