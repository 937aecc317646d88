"""Routing a task in plain words to a role: pure functions (mesh/routing.py,
mesh/dispatch.py) and the labelled set of bench/routing.py."""

import importlib.util
import os

import pytest

from meshtools.core import roles
from meshtools.mesh import routing
from meshtools.mesh.routing import ANCHOR, Rules, decide, paths_named, score
from meshtools.core.errors import BadInput, ConfigError, Refused
from meshtools.core.home import MeshHome
from meshtools.mesh import dispatch

pytestmark = pytest.mark.fast  # pure logic, in seconds: `make test-fast`

RULES = routing.rules_of(roles.load())
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "routing.py")


def _bench():
    spec = importlib.util.spec_from_file_location("routing_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_labelled_set_routes_95_percent_right_and_never_to_a_wrong_specialist():
    bench = _bench()
    cases = bench.load()
    assert len(cases) >= 80
    assert {c["role"] for c in cases} == {*RULES, ANCHOR}  # every role and ambiguous ones
    report = bench.evaluate(cases)
    assert report["accuracy"] >= 0.95, report["misses"]
    assert report["wrong_specialist"] == 0, report["misses"]


def test_the_evaluation_counts_a_wrong_specialist():
    """The set's assertion can fail: a miss to a specialist is counted as such."""
    report = _bench().evaluate([{"task": "cut the 2.4.0 release", "role": "security"},
                                {"task": "help", "role": "builder"}])
    assert report["right"] == 0 and report["wrong_specialist"] == 1
    assert [m["got"] for m in report["misses"]] == ["triage", ANCHOR]


@pytest.mark.parametrize("text, role, matches", [
    ("add a --verbose flag", "builder", True),
    ("address the comments", "builder", False),  # never a substring: add is not address
    ("the testing harness", "builder", True),  # stems written in the data: test(s|ing)?
    ("the contest results", "builder", False),
    ("prefix the keys", "builder", False),  # fix
    ("a CVE in libyaml", "security", True),
    ("review docs/security.md", "security", False),  # a path's words are no words
])
def test_words_match_at_word_boundaries_only(text, role, matches):
    scores = score(text, paths_named(text), RULES)
    assert (scores[role] > 0) is matches, scores


def test_paths_named_strips_quotes_and_punctuation_and_skips_prose_and_urls():
    text = ("Fix `crates/net/src/client.rs`, then \"web/app.js\"; see README.md. Read/write "
            "and/or https://example.com/a/b and ./scripts/run.sh (v1.2 e.g. tests/) at "
            "src/lib.rs:42:7 and main.go:9")
    assert paths_named(text) == ["crates/net/src/client.rs", "web/app.js", "README.md",
                                 "./scripts/run.sh", "tests/", "src/lib.rs", "main.go"]


def test_path_globs_score_once_per_glob():
    rules = {"builder": Rules(paths=(("*.rs", 3),))}
    assert score("a.rs b.rs", ["a.rs", "b.rs"], rules) == {"builder": 3}


def test_a_confident_winner_needs_the_threshold_a_margin_and_twice_the_runner_up():
    assert decide({"builder": 5, "research": 0}).role == "builder"
    assert decide({"builder": 2}).role == ANCHOR  # under the threshold
    tie = decide({"builder": 4, "security": 4})
    assert (tie.role, tie.confident) == (ANCHOR, False) and "tie" in tie.reason
    assert decide({"builder": 5, "security": 4}).role == ANCHOR  # under the margin
    assert decide({"builder": 8, "research": 5}).role == ANCHOR  # two strong claims
    assert decide({"builder": 10, "research": 5}).role == "builder"
    assert decide({}).role == ANCHOR


def test_an_explicit_role_wins_over_the_scores():
    route = decide({"builder": 9}, explicit="security")
    assert (route.role, route.confident) == ("security", True)


def test_a_leading_at_role_is_taken_off_the_task():
    assert routing.leading_role("@builder fix it") == ("builder", "fix it")
    assert routing.leading_role("  @memory") == ("memory", "")
    assert routing.leading_role("@security: look") == ("security", "look")
    assert routing.leading_role("mail me@example.com") == (None, "mail me@example.com")


def test_the_route_never_loops():
    assert decide({}, hops=1) == decide({}, hops=0)  # the anchor re-dispatches
    judged = decide({}, hops=2)
    assert judged.role == ANCHOR and judged.judge and "own judgement" in judged.reason
    with pytest.raises(Refused, match="not handed on to the anchor again"):
        decide({}, hops=3)
    with pytest.raises(Refused):
        decide({}, explicit=ANCHOR, hops=3)
    assert decide({"builder": 9}, hops=3).role == "builder"  # a specialist still may
    with pytest.raises(Refused, match="at most 5"):
        decide({"builder": 9}, hops=6)


def test_the_reason_names_what_matched():
    route = routing.route("fix the failing test in tests/test_queue.py", RULES)
    assert route.role == "builder" and route.paths == ("tests/test_queue.py",)
    assert "fix" in route.reason and "*.py" in route.reason


def _override(tmp_path, text) -> MeshHome:
    (tmp_path / "roles.toml").write_text(text)
    return MeshHome(str(tmp_path))


@pytest.mark.parametrize("table, message", [
    ("'fix(' = 3", "is no regular expression"),
    ("'a?' = 3", "matches the empty string"),
    ("'Fix' = 3", "write it in lowercase"),
    ("'(?P<x>fix)' = 3", "named groups"),
])
def test_a_bad_word_pattern_is_a_config_error_naming_it(tmp_path, table, message):
    home = _override(tmp_path, f"[roles.builder.route_words]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        routing.rules_of(roles.load(home))
    assert "roles.builder.route_words" in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("[roles.builder]\nroute_words = ['fix']\n", "must be a table"),
    ("[roles.builder.route_words]\nfix = 'high'\n", "weight must be a finite number"),
    ("[roles.builder.route_paths]\n'*.rs' = nan\n", "weight must be a finite number"),
])
def test_route_tables_are_checked_when_the_roles_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        roles.load(_override(tmp_path, text))
    assert f"{tmp_path / 'roles.toml'}:" in str(caught.value)


def test_a_mesh_replaces_a_roles_route_table(tmp_path):
    home = _override(tmp_path, "[roles.research.route_words]\n'widgets?' = 5\n")
    rules = routing.rules_of(roles.load(home))
    assert routing.route("widgets everywhere", rules).role == "research"
    assert routing.route("find prior art", rules).role == ANCHOR


# --- dispatch: the task execute enqueues -----------------------------------------------------

KNOWN = roles.load()


def _prepare(text, lineage=dispatch.Lineage(), scopes=("crates/net",), **raw):
    return dispatch.prepare({"prompt": text, **raw}, KNOWN, RULES, lineage,
                            lambda paths: list(scopes))


def test_a_writing_roles_prompt_names_the_lock_scopes():
    task, route = _prepare("crates/net/src/client.rs panics on an empty response, fix it")
    assert route.role == "builder" and task["scopes"] == ["crates/net"]
    assert task["prompt"].endswith("\n\nLock scopes for this task: crates/net (file-lock "
                                   "acquire crates/net before editing)")
    assert task["hops"] == 0 and "parent" not in task


def test_a_read_only_roles_prompt_has_no_lock_line_but_the_task_has_its_scopes():
    task, route = _prepare("@research how does crates/net/src/client.rs retry?")
    assert route.role == "research" and task["scopes"] == ["crates/net"]
    assert task["prompt"] == "how does crates/net/src/client.rs retry?"


def test_the_tasks_own_role_wins_over_the_default_role():
    task, _ = dispatch.prepare({"prompt": "@memory tidy", "role": None}, KNOWN, RULES,
                               dispatch.Lineage(), lambda p: [], default_role="security")
    assert task["role"] == "memory"
    task, _ = dispatch.prepare({"prompt": "tidy"}, KNOWN, RULES, dispatch.Lineage(),
                               lambda p: [], default_role="security")
    assert task["role"] == "security"


def test_a_task_for_the_anchors_own_judgement_says_so_ahead():
    task, route = _prepare("make it better", dispatch.Lineage("t1", 2))
    assert route.judge and task["judge"] is True and task["parent"] == "t1"
    assert task["prompt"].startswith("[For the anchor's own judgement] This task was handed "
                                     "on 2 times")
    assert task["prompt"].endswith("make it better")


def test_a_tasks_lineage_and_scopes_are_never_taken_from_its_input():
    raw = {"prompt": "groom the backlog", "hops": -9, "parent": "x", "judge": True,
           "scopes": ["/"], "routed": "by hand", "deadline": "friday"}
    task, _ = dispatch.prepare(raw, KNOWN, RULES, dispatch.Lineage(), lambda p: [])
    assert task == {"prompt": "groom the backlog", "deadline": "friday", "role": "groomer",
                    "hops": 0, "scopes": [], "routed": task["routed"]}


def test_a_refusal_in_a_batch_names_its_line():
    with pytest.raises(Refused, match="^stdin line 4: not handed on to the anchor again"):
        dispatch.prepare({"prompt": "help"}, KNOWN, RULES, dispatch.Lineage("t1", 3),
                         lambda p: [], where="stdin line 4")


@pytest.mark.parametrize("text, message", [
    ("", "empty task"), ("  @builder  ", "empty task"),
    ("@bogus fix it", "unknown role 'bogus' (roles: anchor, builder, groomer, memory, "
                      "research, security, triage)"),
])
def test_bad_tasks_are_bad_input(text, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        _prepare(text)


@pytest.mark.parametrize("environ, expected", [
    ({}, dispatch.Lineage(None, 0)),
    ({"MESH_TASK_HOPS": "3"}, dispatch.Lineage(None, 0)),  # no task: not inside one
    ({"MESH_TASK": "t1"}, dispatch.Lineage("t1", 1)),
    ({"MESH_TASK": "t1", "MESH_TASK_HOPS": "1"}, dispatch.Lineage("t1", 2)),
])
def test_lineage_comes_from_the_running_task(environ, expected):
    assert dispatch.lineage(environ) == expected


@pytest.mark.parametrize("environ", [{"MESH_TASK": "t1", "MESH_TASK_HOPS": "-1"},
                                     {"MESH_TASK": "t1", "MESH_TASK_HOPS": "two"},
                                     {"MESH_TASK": "t1", "MESH_TASK_HOPS": "²"},
                                     {"MESH_TASK": "../x"}])
def test_a_malformed_lineage_is_a_config_error(environ):
    with pytest.raises(ConfigError):
        dispatch.lineage(environ)


def test_read_batch_takes_json_objects_and_plain_lines():
    lines = ['{"prompt": "groom the backlog", "id": "a"}\n', "\n", "fix a.py\n"]
    assert dispatch.read_batch(lines) == [(1, {"prompt": "groom the backlog", "id": "a"}),
                                          (3, {"prompt": "fix a.py"})]
    with pytest.raises(BadInput, match="stdin line 2: malformed JSON"):
        dispatch.read_batch(["x\n", "{nope\n"])


def test_progress_names_the_peer_that_runs_the_task():
    sessions = [{"id": "builder-1", "task": "other", "phase": "thinking"},
                {"id": "builder-2", "task": "t1", "phase": "tool Edit"}]
    assert dispatch.progress(sessions, "t1", 12.9) == "t1: builder-2 tool Edit, 12s"
    assert dispatch.progress(sessions[:1], "t1", 3) == "t1: queued, 3s"


@pytest.mark.parametrize("result, code", [
    ({"status": "ok", "exit_code": 0}, 0), ({"status": "failed", "exit_code": 3}, 3),
    ({"status": "failed", "exit_code": 137}, 1), ({"status": "failed", "exit_code": None}, 1),
    ({"status": "invalid"}, 1),
])
def test_the_exit_status_of_a_waited_task(result, code):
    assert dispatch.exit_status(result) == code
