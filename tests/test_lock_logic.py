"""The pure parts of file-lock: scope rules, the wait-for graph, the table policy."""

import pytest

from meshtools.core.config import Section
from meshtools.core.errors import ConfigError
from meshtools.locks import graph, policy
from meshtools.locks.scopes import ScopeRules, scope_of
from meshtools.locks.table import empty_table

pytestmark = pytest.mark.fast  # pure logic, in seconds: `make test-fast`

MANIFEST_DIRS = {"crates/core", "crates/cli", "web"}


def scope(path, is_dir=False, rules=ScopeRules()):
    return scope_of(path, is_dir, MANIFEST_DIRS.__contains__, rules)


@pytest.mark.parametrize("path,is_dir,expected", [
    ("crates/core/src/lib.rs", False, "crates/core"),
    ("crates/core/src", True, "crates/core"),
    ("crates/core", True, "crates/core"),
    ("crates/core/Cargo.toml", False, "crates/core"),
    ("crates/shared.rs", False, "crates"),
    ("crates", True, "crates"),
    ("docs/deep/er/guide.md", False, "docs"),
    ("README.md", False, "."),
    (".", True, "."),
    ("brand-new/dir/file.rs", False, "brand-new"),
    ("web/src/app.js", False, "web"),
])
def test_default_rule_nearest_manifest_else_top_level(path, is_dir, expected):
    assert scope(path, is_dir) == expected


def test_explicit_rules_come_first():
    rules = ScopeRules.from_config(Section({"locks": {"rule": [
        {"match": "crates/core/src/generated/*", "scope": "generated"},
        {"match": "*.md", "scope": "docs"}]}}))
    assert scope("crates/core/src/generated/x.rs", rules=rules) == "generated"
    assert scope("crates/core/src/lib.rs", rules=rules) == "crates/core"
    assert scope("crates/core/README.md", rules=rules) == "docs"


def test_custom_manifests():
    rules = ScopeRules.from_config(Section({"locks": {"manifests": ["BUILD"]}}))
    assert rules.manifests == ("BUILD",)


@pytest.mark.parametrize("config", [
    {"locks": {"manifests": "Cargo.toml"}},
    {"locks": {"rule": [{"scope": "x"}]}},
    {"locks": {"rule": [{"match": "a/*", "scope": "../up"}]}},
])
def test_bad_config_is_a_config_error(config):
    with pytest.raises(ConfigError):
        ScopeRules.from_config(Section(config))


def test_graph_two_and_three_party_cycles():
    holders = {"X": "A", "Y": "B", "Z": "C"}
    two = graph.edges(holders, {"A": ["Y"], "B": ["X"]})
    assert graph.cycle_through("A", two) == [("A", "Y", "B"), ("B", "X", "A")]
    three = graph.edges(holders, {"A": ["Y"], "B": ["Z"], "C": ["X"]})
    cycle = graph.cycle_through("C", three)
    assert cycle == [("C", "X", "A"), ("A", "Y", "B"), ("B", "Z", "C")]
    assert len(graph.all_cycles(three)) == 1
    assert "C waits for X, held by A" in graph.describe(cycle)


def test_graph_chain_without_cycle_and_self_wait():
    holders = {"X": "A", "Y": "B"}
    chain = graph.edges(holders, {"C": ["X"], "A": ["Y"]})
    assert graph.cycle_through("C", chain) is None
    assert graph.all_cycles(chain) == []
    assert graph.edges(holders, {"A": ["X"]}) == []  # waiting for your own scope is no edge


def test_graph_cycle_not_through_start_is_not_reported_for_start():
    holders = {"X": "A", "Y": "B", "Z": "C"}
    edges = graph.edges(holders, {"A": ["Y"], "B": ["X"], "D": ["Z"], "C": ["X"]})
    assert graph.cycle_through("D", edges) is None
    assert graph.cycle_through("C", edges) is None  # C -> A -> B -> A loops, but not back to C


def claimant(name, pid=100):
    return policy.Claimant(name, pid, 1, "h")


def test_grant_release_and_generations():
    table = empty_table()
    first = policy.grant(table, claimant("A"), ["X", "Y"], 10.0, None, "t")
    assert [h["generation"] for h in first] == [1, 2]
    again = policy.grant(table, claimant("A"), ["X"], 11.0, 5, "t")
    assert again[0]["generation"] == 1 and again[0]["lease_until"] == 16.0
    assert policy.blockers(table, "B", ["X", "Z"]) == {"X": table["locks"]["X"]}
    released, refused = policy.release(table, "B", ["X"])
    assert released == [] and [h["scope"] for h in refused] == ["X"]
    released, refused = policy.release(table, "A", None)
    assert sorted(h["scope"] for h in released) == ["X", "Y"] and refused == []
    assert policy.grant(table, claimant("B"), ["X"], 12.0, None, "t")[0]["generation"] == 3


def test_reap_drops_dead_and_expired_but_not_live():
    table = empty_table()
    policy.grant(table, claimant("dead", 1), ["X"], 0.0, None, "t")
    policy.grant(table, claimant("leased", 2), ["Y"], 0.0, 5, "t")
    policy.grant(table, claimant("live", 3), ["Z"], 0.0, None, "t")
    policy.set_wait(table, "waiter", claimant("waiter", 4).owner(), ["Z"], "t")
    policy.set_wait(table, "gone", claimant("gone", 1).owner(), ["Z"], "t")
    reclaimed = policy.reap(table, 6.0, lambda owner: owner["pid"] == 1)
    assert {(h["scope"], h["reason"]) for h in reclaimed} == {("X", "holder dead"),
                                                             ("Y", "lease expired")}
    assert set(table["locks"]) == {"Z"}
    assert [w["waiter"] for w in table["waits"].values()] == ["waiter"]


def test_wait_for_edges_union_of_a_sessions_waits():
    table = empty_table()
    policy.grant(table, claimant("A", 1), ["X"], 0.0, None, "t")
    policy.grant(table, claimant("B", 2), ["Y"], 0.0, None, "t")
    policy.set_wait(table, "C", claimant("C", 3).owner(), ["X"], "t")
    policy.set_wait(table, "C", claimant("C", 4).owner(), ["Y"], "t")
    assert set(policy.wait_for_edges(table)) == {("C", "X", "A"), ("C", "Y", "B")}
    policy.clear_wait(table, claimant("C", 3).owner())
    assert policy.wait_for_edges(table) == [("C", "Y", "B")]


def test_a_holding_proves_only_a_live_own_unexpired_owner():
    mine = {"holder": "A", "since": "t", "pid": 10, "pid_start": 5, "host": "h",
            "lease_until": None}
    owners = {(10, 5, "h")}
    alive = lambda h: True  # noqa: E731

    def why(holding, claimant="A", owners=owners, now=100.0, alive=alive):
        return policy.unproven(holding, claimant, owners, now, alive)

    assert why(mine) is None
    assert why(None) == "nobody holds it"
    assert "held by A" in why(mine, claimant="B")
    assert "lease" in why(dict(mine, lease_until=99.0))
    assert "gone" in why(mine, alive=lambda h: None)  # another host: not proven
    assert "not yours" in why(mine, owners={(10, 6, "h")})  # same pid, another process
    assert "not yours" in why(dict(mine, pid_start=None), owners={(10, None, "h")})

