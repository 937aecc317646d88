"""The dash's pure heart: render() on a virtual screen (pyte) through frame_diff(), the key
table driving handle() and the help overlay, and the `:` command grammar. No terminal."""

import os
import re
import stat

import pyte
import pytest

from meshtools.core.errors import BadInput
from meshtools.core.home import MeshHome
from meshtools.dash import commands, keys, peers, render, theme, view
from meshtools.dash.text import width
from .helpers import dash_snapshot

pytestmark = pytest.mark.fast  # pure logic, in seconds: `make test-fast`

SIZES = [(80, 24), (120, 40), (200, 50)]
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9]+)*m")
SGR = re.compile(r"\x1b\[[0-9;]*m")


def screen_of(lines, columns, rows, old=None, screen=None):
    """The pyte screen after writing the frame as the dash will: frame_diff's escapes."""
    if screen is None:
        screen = pyte.Screen(columns, rows)
    pyte.Stream(screen).feed(render.frame_diff(old, lines))
    return screen


def draw(snapshot, v, columns=80, rows=24, name="dark"):
    return render.render(snapshot, v, columns, rows, theme.theme(name))


def plain(lines):
    return [SGR.sub("", line) for line in lines]


def text_of(screen):
    return "\n".join(screen.display)


def press(v, snapshot, *keys_pressed):
    """handle() every key in turn; the last action."""
    action = None
    for key in keys_pressed:
        v, action = view.handle(v, key, snapshot)
    return v, action


def typed(text):
    return list(text)


# -- the screen ------------------------------------------------------------------------

@pytest.mark.parametrize("columns,rows", SIZES)
@pytest.mark.parametrize("name", ["dark", "light", "mono"])
def test_every_size_fills_the_screen_exactly_and_shows_every_panel(columns, rows, name):
    snapshot = dash_snapshot(peers=6, gpus=1)
    lines = draw(snapshot, view.View(selected="research-2"), columns, rows, name)
    assert len(lines) == rows
    assert all(width(line) == columns for line in lines)
    screen = screen_of(lines, columns, rows)
    assert screen.display == [line.ljust(columns) for line in plain(lines)]
    shown = text_of(screen)
    for expected in ("meshtools · repo · 15:04:05", "memory-4 is dead", "redis ✔ 0.4ms",
                     "openrouter ✗ unreachable", "default 3 (1 running, oldest 42s)",
                     "dead 1 (builder 1)", "spent $1.25 of $10.00", "PEER", "STATE",
                     "triage-3", "GPU0 H200", "─ events", "task.failed", "q quit"):
        assert expected in shown, expected
    assert "› research-2" in shown  # the selection is marked without any attribute too
    row = next(i for i, line in enumerate(screen.display) if "› research-2" in line)
    assert screen.buffer[row][2].reverse


def test_wide_screens_show_every_column_and_80_columns_drop_them_in_the_documented_order():
    snapshot = dash_snapshot()
    wide = text_of(screen_of(draw(snapshot, view.View(), 200, 50), 200, 50))
    assert all(c.label in wide for c in peers.COLUMNS)
    narrow = [c.name for c, _ in peers.fitting(80)]
    dropped = {c.name for c in peers.COLUMNS if c.name not in narrow}
    assert dropped and dropped == set(peers.DROP_ORDER[:len(dropped)])
    assert {"id", "role", "state", "phase", "task"} <= set(narrow)
    header = next(line for line in plain(draw(snapshot, view.View())) if "PEER" in line)
    assert "BRANCH" not in header and "TASK" in header


def test_a_short_screen_drops_panels_in_order_and_keeps_the_peer_table():
    snapshot = dash_snapshot(peers=6, gpus=4)
    heights = render.layout(80, 16, snapshot)
    dropped = [p for p in render.DROP_PANELS if heights[p] == 0]
    assert dropped and dropped == list(render.DROP_PANELS[:len(dropped)])
    assert heights["peers"] >= 2 + render.MIN_PEER_ROWS
    assert sum(heights.values()) == 16
    assert render.layout(80, 24, snapshot)["gpus"] == 4  # all there when they fit


def test_panel_heights_do_not_follow_the_data():
    few, many = dash_snapshot(peers=2, events=1), dash_snapshot(peers=50, events=300)
    assert render.layout(120, 40, few) == render.layout(120, 40, many)
    rule = [i for i, line in enumerate(plain(draw(few, view.View()))) if "─ events" in line]
    assert rule == [i for i, line in enumerate(plain(draw(many, view.View())))
                    if "─ events" in line]


@pytest.mark.parametrize("mode", ["main", "detail", "help", "command", "filter"])
def test_an_empty_or_partial_snapshot_still_draws(mode):
    """Before the first collection, and when a source gives records without some fields."""
    partial = {"peers": [{"id": "a"}], "queues": [{}], "events": ["raw", {}], "gpus": [{}],
               "services": [{}], "offload": [{}], "redis": {"up": True}, "pause": None,
               "budget": {"spent_today_usd": 0.0}, "detail": {"peer": "a"}}
    for snapshot in ({}, partial):
        lines = draw(snapshot, view.View(mode=mode, selected="a"))
        assert len(lines) == 24 and all(width(line) == 80 for line in lines)
    assert "› a " in "\n".join(plain(draw(partial, view.View(selected="a"))))


def test_too_small_a_screen_says_the_size_it_needs():
    lines = draw(dash_snapshot(), view.View(), 50, 10)
    assert len(lines) == 10 and all(width(line) == 50 for line in lines)
    assert plain(lines)[0].startswith("terminal too small: need 60x12")


@pytest.mark.parametrize("columns,rows", SIZES)
def test_no_color_keeps_layout_and_reverse_but_writes_no_colour(columns, rows):
    snapshot = dash_snapshot()
    mono = theme.theme("dark", no_color=True)
    assert mono.name == "mono"
    lines = render.render(snapshot, view.View(selected="builder-1"), columns, rows, mono)
    assert not any(COLOUR.search(line) for line in lines)
    dark = draw(snapshot, view.View(selected="builder-1"), columns, rows)
    assert any(COLOUR.search(line) for line in dark)  # the check can fail
    assert plain(lines) == plain(dark)
    screen = screen_of(lines, columns, rows)
    row = next(i for i, line in enumerate(screen.display) if "› builder-1" in line)
    assert screen.buffer[row][3].reverse


def test_the_feed_is_newest_at_the_bottom_and_coloured_by_kind():
    snapshot = dash_snapshot(events=40)
    lines = draw(snapshot, view.View())
    feed = [line for line in lines if "t-00" in line and ":" in line[:8]]
    assert "t-0039" in feed[-1] and "t-0038" in feed[-2]
    failed = next(line for line in feed if "task.failed" in line)
    assert "\x1b[1;31mtask.failed" in failed
    assert render.event_style("task.done") == "ok"
    assert render.event_style("lock.waiting") == "warn"
    assert render.event_style("lock.granted") == "ok"


def test_data_cannot_move_the_cursor_and_wide_text_keeps_widths():
    snapshot = dash_snapshot(peers=3)
    snapshot["peers"][0]["phase"] = "tool Edit 日本語\x1b[2J"
    snapshot["peers"][0]["task"] = "t\nx"
    snapshot["events"][-1]["note"] = "\x1b]0;title\x07"
    lines = draw(snapshot, view.View(), 120, 40)
    assert not any("\x1b[2J" in line or "\x07" in line or "\n" in line for line in lines)
    assert all(width(line) == 120 for line in lines)
    assert screen_of(lines, 120, 40).display == [line.ljust(120) for line in plain(lines)]


def test_the_gpu_panel_draws_samples_and_says_no_gpu():
    assert not hasattr(render, "SPARK")  # one sparkline: spark.py's
    snapshot = dash_snapshot(gpus=0)
    snapshot["sources"] = {"gpus": {"age": 1.0, "error": None,
                                    "absent": "no GPU (NVML: driver not loaded)"}}
    shown = "\n".join(plain(draw(snapshot, view.View())))
    assert "no GPU (NVML: driver not loaded)" in shown
    snapshot["sources"] = {"gpus": {"age": None, "error": None}}  # not sampled yet
    assert "gpu       …" in "\n".join(plain(draw(snapshot, view.View())))
    shown = "\n".join(plain(draw(dash_snapshot(gpus=2), view.View(), 120, 40)))
    assert "GPU1 H200" in shown and "▁" in shown and "55.0G/139.0G" in shown


def test_stale_and_failed_sources_say_so():
    snapshot = dash_snapshot()
    snapshot["redis"] = {"up": False, "error": "connection refused", "age": 30.0}
    snapshot["sources"] = {"peers": {"age": 12.0, "error": None}}
    shown = "\n".join(plain(draw(snapshot, view.View(), 120, 40)))
    assert "redis ✗ connection refused" in shown
    assert "(12s old)" in shown


def test_pause_shows_in_the_problems_area_and_the_queues():
    snapshot = dash_snapshot()
    snapshot["pause"] = {"reason": "dash", "until": "2026-12-02T15:05:05Z", "by": "dash"}
    snapshot["problems"] = [{"kind": "paused", "subject": "mesh", "text": "paused for 1m"}]
    shown = "\n".join(plain(draw(snapshot, view.View())))
    assert "⚠ 1 need you: paused for 1m" in shown
    assert "PAUSED until 15:05 by dash" in shown


# -- writing frames --------------------------------------------------------------------

def test_frame_diff_writes_only_the_rows_that_changed():
    snapshot = dash_snapshot()
    before = draw(snapshot, view.View())
    screen = screen_of(before, 80, 24)
    assert render.frame_diff(before, before) == ""
    snapshot["peers"][1]["phase"] = "thinking"
    after = draw(snapshot, view.View())
    diff = render.frame_diff(before, after)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed and len(changed) < 3
    assert re.findall(r"\x1b\[(\d+);1H", diff) == [str(i + 1) for i in changed]
    assert "\x1b[2J" not in diff
    screen_of(after, 80, 24, old=before, screen=screen)
    assert screen.display == [line.ljust(80) for line in plain(after)]


def test_frame_diff_repaints_everything_after_a_resize():
    small, large = draw(dash_snapshot(), view.View()), draw(dash_snapshot(), view.View(), 80, 30)
    diff = render.frame_diff(small, large)
    assert diff.startswith("\x1b[?2026h\x1b[H\x1b[2J") and diff.endswith("\x1b[?2026l")
    assert len(re.findall(r"\x1b\[\d+;1H", diff)) == 30
    screen = screen_of(small, 80, 30)  # old rows beyond are cleared
    screen_of(large, 80, 30, old=small, screen=screen)
    assert screen.display == [line.ljust(80) for line in plain(large)]


# -- keys -------------------------------------------------------------------------------

def test_the_key_table_binds_each_key_once_per_mode_and_every_action_is_handled():
    seen = {}
    for entry in keys.TABLE:
        assert set(entry.modes) <= set(keys.MODES)
        for mode in entry.modes:
            for key in entry.keys:
                assert (mode, key) not in seen, (mode, key)
                seen[mode, key] = entry.action
        assert entry.action.startswith("sort:") or entry.action in view._ACTIONS
    assert keys.key_of("q") == "q"


@pytest.mark.parametrize("columns,rows", [(80, 24), (120, 40)])
def test_the_help_overlay_shows_every_key_of_the_table(columns, rows):
    snapshot = dash_snapshot()
    v, _ = press(view.View(), snapshot, "?")
    assert v.mode == "help"
    shown = text_of(screen_of(draw(snapshot, v, columns, rows), columns, rows))
    for entry in keys.TABLE:
        assert f"{keys.label(entry)} " in shown, entry
    for entry in keys.TABLE:
        assert f"in {' · '.join(entry.modes)}" in shown
    assert all(entry.help in shown for entry in keys.TABLE)
    v, _ = press(v, snapshot, "KEY_ESCAPE")
    assert v.mode == "main"
    v, _ = press(v, snapshot, "?", "?")
    assert v.mode == "main"


def test_the_man_page_keys_section_comes_from_the_table():
    lines = keys.man_section(lambda text: text.replace("-", "\\-"))
    assert lines[0] == ".SH KEYS"
    for entry in keys.TABLE:
        assert f"\\fB{keys.label(entry)}\\fR" in lines


def test_filter_is_a_regex_that_a_leading_bang_inverts_and_esc_clears():
    snapshot = dash_snapshot()
    v, _ = press(view.View(), snapshot, "/", *typed("build|sec"))
    assert v.mode == "filter" and v.filter == "build|sec"
    assert [r["id"] for r in view.visible(v, snapshot)] == ["builder-1", "security-5"]
    lines = plain(draw(snapshot, v))
    assert lines[-1].startswith("/build|sec")
    assert "peers 2/6" in "\n".join(lines)
    assert not any(line.startswith("  research-2") for line in lines)
    v, _ = press(v, snapshot, "KEY_ENTER")
    assert v.mode == "main" and v.filter == "build|sec"
    v, _ = press(v, snapshot, "/", "KEY_CTRL_U", *typed("!build|sec"), "KEY_ENTER")
    assert v.inverted and len(view.visible(v, snapshot)) == 4
    v, _ = press(v, snapshot, "KEY_ESCAPE")
    assert v.filter == "" and len(view.visible(v, snapshot)) == 6
    v, _ = press(v, snapshot, "/", *typed("(tri"))  # no regex: taken literally, no crash
    assert view.visible(v, snapshot) == [] and draw(snapshot, v)
    v, _ = press(v, snapshot, "KEY_BACKSPACE", "KEY_BACKSPACE", "KEY_BACKSPACE", "KEY_BACKSPACE")
    assert v.filter == "" and v.mode == "filter"


def test_sort_by_a_column_key_reverses_on_a_second_press_and_s_cycles():
    snapshot = dash_snapshot()
    v, _ = press(view.View(), snapshot, "C")
    cpus = [r["cpu"] for r in view.visible(v, snapshot)]
    assert v.sort == "cpu" and cpus[:5] == sorted(cpus[:5]) and cpus[-1] is None  # dead: none
    v, _ = press(v, snapshot, "C")
    assert v.reverse and [r["cpu"] for r in view.visible(v, snapshot)][:5] == sorted(cpus[:5])[::-1]
    v, _ = press(v, snapshot, "s")
    assert v.sort == "mem" and not v.reverse
    assert "sort mem asc" in "\n".join(plain(draw(snapshot, v)))


def test_selection_moves_over_the_visible_rows_and_stays_on_screen():
    snapshot = dash_snapshot(peers=50)
    v, _ = press(view.View(), snapshot, "j")
    first = view.visible(v, snapshot)[0]["id"]
    assert v.selected == first
    v, _ = press(v, snapshot, *["KEY_DOWN"] * 60)
    last = view.visible(v, snapshot)[-1]["id"]
    assert v.selected == last
    assert f"› {last}" in "\n".join(plain(draw(snapshot, v)))
    v, _ = press(v, snapshot, "k")
    assert v.selected == view.visible(v, snapshot)[-2]["id"]


def test_enter_opens_the_detail_of_the_selected_peer_and_esc_goes_back():
    snapshot = dash_snapshot()
    v, _ = press(view.View(), snapshot, "j", "j", "KEY_ENTER")
    assert v.mode == "detail" and v.selected == "groomer-6"
    assert "loading…" in "\n".join(plain(draw(snapshot, v)))
    snapshot["detail"] = {
        "peer": "groomer-6", "age": 0.2, "error": None,
        "events": [{"ts": "2026-12-02T15:00:01Z", "event": "lock.granted", "peer": "groomer-6",
                    "scope": "crates/core"}],
        "inbox": [{"ts": "2026-12-02T15:00:02Z", "from": "anchor", "body": "rebase on main"}],
        "locks": {"held": ["crates/core"], "waiting": ["docs"]},
        "trace": [{"ts": "2026-12-02T15:00:03Z", "event": "agent.tool", "tool": "Edit"}],
        "log": ["compiling core", "tests passed"]}
    shown = "\n".join(plain(draw(snapshot, v, 120, 40)))
    for expected in ("─ peer groomer-6", "held: crates/core", "waiting for: docs",
                     "scope=crates/core", "anchor: rebase on main", "agent.tool", "tool=Edit",
                     "tests passed", "─ log"):
        assert expected in shown, expected
    assert all(width(line) == 80 for line in draw(snapshot, v))
    v, _ = press(v, snapshot, "KEY_UP")  # moves to the peer above, still in detail
    assert v.mode == "detail" and v.selected == "builder-1"
    v, _ = press(v, snapshot, "KEY_ESCAPE")
    assert v.mode == "main"


def test_pause_and_themes_cycle():
    snapshot = dash_snapshot()
    v, _ = press(view.View(), snapshot, "p")
    assert v.paused and "DISPLAY PAUSED" in plain(draw(snapshot, v))[0]
    names = []
    for _ in range(3):
        v, _ = press(v, snapshot, "t")
        names.append(v.theme)
    assert names == ["light", "mono", "dark"]
    assert press(v, snapshot, "q")[1] == {"cmd": "quit"}


# -- command mode -----------------------------------------------------------------------

KNOWN = commands.Known(roles=("builder", "research", "anchor"),
                       peers=("builder-1", "research-2"), tasks=("t-0001", "t-0002"),
                       dead=("1700000000000-0",))


@pytest.mark.parametrize("line,action", [
    ("exec builder make test", {"cmd": "exec", "role": "builder", "task": "make test"}),
    ("exec fix the flaky test", {"cmd": "exec", "role": None, "task": "fix the flaky test"}),
    ("send builder-1 rebase on main", {"cmd": "send", "to": "builder-1",
                                       "message": "rebase on main"}),
    ("send builder hi", {"cmd": "send", "to": "builder", "message": "hi"}),
    ("kill research-2", {"cmd": "kill", "peer": "research-2"}),
    ("restart builder-1", {"cmd": "restart", "peer": "builder-1"}),
    ("pick t-0001", {"cmd": "pick", "task": "t-0001"}),
    ("pause 1m", {"cmd": "pause", "seconds": 60.0}),
    ("pause", {"cmd": "pause", "seconds": 3600.0}),
    ("resume", {"cmd": "resume"}),
    ("retry 1700000000000-0", {"cmd": "retry", "id": "1700000000000-0"}),
])
def test_commands_parse_to_actions(line, action):
    assert commands.parse(line, KNOWN) == action


@pytest.mark.parametrize("line,error", [
    ("", "empty command"),
    ("exce builder x", "unknown command 'exce'; did you mean 'exec'?"),
    ("exec biulder make test", "unknown role 'biulder'; did you mean 'builder'?"),
    ("exec builder", "empty task"),
    ("exec", "empty task"),
    ("send nobody hi", "unknown peer 'nobody'"),
    ("send builder-1", "empty message"),
    ("kill builder-9", "unknown peer 'builder-9'; did you mean 'builder-1'?"),
    ("kill", "usage: kill PEER"),
    ("pick ../etc", "invalid task id"),
    ("pause soon", "pause: 'soon' is not a duration"),
    ("resume now", "usage: resume"),
])
def test_bad_commands_are_one_error_line(line, error):
    with pytest.raises(BadInput) as caught:
        commands.parse(line, KNOWN)
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_command_mode_runs_a_line_and_keeps_the_dash_running_on_bad_input():
    snapshot = dash_snapshot()
    v, action = press(view.View(), snapshot, ":", *typed("exec biulder x"), "KEY_ENTER")
    assert action is None and v.mode == "command" and "unknown role 'biulder'" in v.message
    assert "unknown role 'biulder'" in plain(draw(snapshot, v))[-1]
    assert v.history == ()  # not recorded
    v, action = press(v, snapshot, "KEY_CTRL_W", "KEY_CTRL_W", *typed("builder make test"),
                      "KEY_ENTER")
    assert action == {"cmd": "exec", "role": "builder", "task": "make test"}
    assert v.mode == "main" and v.history == ("exec builder make test",)
    v, action = press(v, snapshot, ":", *typed("pause 1m"), "KEY_ENTER")
    assert action == {"cmd": "pause", "seconds": 60.0}
    v, _ = press(v, snapshot, ":", "KEY_UP", "KEY_UP")
    assert v.line == "exec builder make test"
    v, _ = press(v, snapshot, "KEY_DOWN")
    assert v.line == "pause 1m"
    v, _ = press(v, snapshot, "KEY_DOWN")
    assert v.line == ""
    v, _ = press(v, snapshot, "KEY_ESCAPE")
    assert v.mode == "main"


def test_tab_completes_commands_roles_peers_and_tasks_with_the_suggestion_inline():
    assert commands.candidates("re", KNOWN) == ["restart ", "resume ", "retry "]
    assert commands.candidates("exec bu", KNOWN) == ["exec builder "]
    assert commands.candidates("kill re", KNOWN) == ["kill research-2 "]
    assert commands.candidates("pick t-", KNOWN) == ["pick t-0001 ", "pick t-0002 "]
    assert commands.candidates("send an", KNOWN) == ["send anchor "]
    assert commands.candidates("exec builder ma", KNOWN) == []
    assert commands.suggestion("ex", KNOWN) == "ec "
    snapshot = dash_snapshot()
    v, _ = press(view.View(), snapshot, ":", *typed("exec bu"))
    assert plain(draw(snapshot, v))[-1].startswith(":exec bu ilder ")
    v, _ = press(v, snapshot, "KEY_TAB")
    assert v.line == "exec builder "
    v, _ = press(v, snapshot, "k", "KEY_CTRL_W")
    assert v.line == "exec builder "
    v, _ = press(v, snapshot, "KEY_CTRL_U", *typed("rest"), "KEY_RIGHT")
    assert v.line == "restart "
    v, _ = press(v, snapshot, "KEY_F1", "\x1b[I")  # no binding, not printable: ignored
    assert v.line == "restart "


def test_history_is_deduplicated_skips_a_leading_space_and_is_saved_private(tmp_path):
    history = ()
    for line in ("resume", "pause 1m", "resume", " exec secret", ""):
        history = commands.remember(history, line)
    assert history == ("pause 1m", "resume")
    assert commands.remember(tuple(map(str, range(5))), "x", limit=3) == ("3", "4", "x")
    home = MeshHome(str(tmp_path / "mesh"))
    assert commands.load_history(home) == ()
    commands.save_history(home, history)
    path = home.sub(commands.HISTORY_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert commands.load_history(home) == history


def test_known_names_come_from_the_snapshot():
    known = commands.Known.of(dash_snapshot(peers=6, events=8))
    assert "anchor" in known.roles and "builder" in known.roles
    assert known.peers[0] == "builder-1"
    assert known.tasks[0] == "t-0007"  # newest first
    assert known.dead == ("1700000000000-0",)
