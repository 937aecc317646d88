"""meshctl dash: the snapshot assembler, the actions, the refusal without a terminal, and
the whole program end to end in tmux (a private socket) against a live mesh."""

import os
import shutil
import subprocess
import time
import uuid

import psutil
import pytest

from meshtools.core.home import MeshHome
from meshtools.dash import actions, app, render, snapshot, theme, view

from .helpers import wait_until

# -- pure: the one adapter from the collector to render's shape ---------------------------

HEALTH = {"ts": "2026-12-02T15:00:00Z", "home": "/m",
          "peers": [{"id": "builder-1", "role": "builder", "state": "alive", "task": None}],
          "redis": {"url": "unix:///m/r.sock", "up": True, "rtt_ms": 0.3, "age": 0.0,
                    "persistence": {"aof": True}, "used_memory": 1000, "error": None},
          "queues": [], "dead": {"count": 0, "by_queue": {}, "ids": []}, "pause": None,
          "budget": {"spent_today_usd": 0.0, "daily_usd": None}, "problems": []}


def collected(**data):
    """Collector.snapshot()'s shape: every source given is fresh, the others loading."""
    names = ("health", "events", "detail", "procs", "git", "gpus", "services", "offload")
    return {n: ({"data": data[n], "age": 0.5, "error": None} if n in data
                else {"data": None, "age": None, "error": None}) for n in names}


def test_assemble_before_any_source_answered_shows_loading_not_trouble():
    snap = snapshot.assemble(collected(), "2026-12-02T15:00:00Z", "proj", ["builder"])
    assert snap["problems"] is None and snap["peers"] is None
    lines = render.render(snap, view.View(), 100, 30, theme.theme("mono"))
    shown = "\n".join(lines)
    assert "…" in lines[1] and "nothing needs you" not in shown and "peers …" in lines[0]
    assert "redis …" in shown and "Redis unreachable" not in shown


def test_assemble_puts_each_source_where_render_draws_it():
    gpus = {"gpus": [{"index": 0, "name": "H200", "util": 50, "mem_used": 1, "mem_total": 2,
                      "util_history": [10, 50], "mem_history": [50.0, 50.0]}], "absent": None}
    git = {"builder": {"branch": "mesh/builder", "unpicked": 2, "forecast": "conflict",
                       "paths": ["a.py"]}}
    snap = snapshot.assemble(collected(health=HEALTH, gpus=gpus, git=git,
                                       procs={"builder-1": {"cpu": 3.0, "rss": 2 << 20}},
                                       events=[{"event": "task.ok", "task": "t-1"}],
                                       detail={"peer": "builder-1", "events": []}),
                             "2026-12-02T15:00:01Z", "proj", ["builder", "anchor"])
    assert snap["sources"]["health"] == {"age": 0.5, "error": None}
    assert snap["sources"]["peers"] == snap["sources"]["health"]  # peers come from health
    assert snap["redis"]["age"] == 0.5
    assert snap["detail"] == {"peer": "builder-1", "events": [], "age": 0.5, "error": None}
    # a conflict forecast is a problem, from health.problems (the one owner of problems)
    assert [(p["kind"], p["subject"]) for p in snap["problems"]] == [("conflict", "builder")]
    shown = "\n".join(render.render(snap, view.View(), 140, 40, theme.theme("mono")))
    assert "a conflict waiting" in shown and "GPU0 H200" in shown and "conflict" in shown


def test_detail_pieces_pick_the_peer_out_of_events_and_the_lock_table():
    events = [{"event": "session.phase", "id": "b-1"}, {"event": "lock.granted", "holder": "b-2"},
              {"event": "task.claimed", "task": "t-1", "worker": "b-1"},
              {"event": "task.ok", "id": "t-1"}]
    assert snapshot.about(events, "b-1") == [events[0], events[2]]
    table = {"locks": {"crates/core": {"holder": "b-1"}, "docs": {"holder": "b-2"}},
             "waits": {"k": {"waiter": "b-1", "scopes": ["docs"]}}}
    assert snapshot.locks_of(table, "b-1") == {"held": ["crates/core"], "waiting": ["docs"]}


def test_the_detail_shows_the_current_run_of_the_task_as_meshctl_trace_does(mesh_home):
    from meshtools.executors import trace

    home = MeshHome(str(mesh_home))
    for attempt in ("first run", "second run"):
        writer = trace.Writer.open(home, {"id": "t-42"}, agent="shell", session="b-1")
        writer.output(f"{attempt} says hello")
    shown = "\n".join(snapshot.trace_lines(home, "t-42"))
    assert "second run says hello" in shown and "first run" not in shown
    assert snapshot.trace_lines(home, None) == snapshot.trace_lines(home, "../x") == []


def test_a_waiting_peers_detail_shows_the_trace_of_its_last_task(mesh_home, anchor_process):
    from meshtools.coord import registry
    from meshtools.executors import trace

    home = MeshHome(str(mesh_home))
    registry.register(home, "builder", "b-1", anchor_process().pid)
    writer = trace.Writer.open(home, {"id": "t-7"}, agent="shell", session="b-1")
    writer.output("t-7 says hello")
    registry.heartbeat(home, "b-1", task="t-7")
    registry.heartbeat(home, "b-1", phase="waiting", task=None)  # done: it waits again
    detail = snapshot.Detail(home, snapshot.Feed(home, None))
    detail.selected = "b-1"
    found = detail()
    assert "t-7 says hello" in "\n".join(found["trace"])
    assert (found["trace_task"], found["trace_last"]) == ("t-7", True)
    peers = [dict(HEALTH["peers"][0], id="b-1")]
    snap = snapshot.assemble(collected(health=dict(HEALTH, peers=peers), detail=found),
                             "2026-12-02T15:00:01Z", "proj", ["builder"])
    shown = "\n".join(render.render(snap, view.View(mode="detail", selected="b-1"), 100, 40,
                                     theme.theme("mono")))
    assert "trace of its last task t-7 (waiting now)" in shown and "t-7 says hello" in shown
    assert snapshot.traced_task({"task": "t-8", "last_task": "t-7"}) == ("t-8", False)
    assert snapshot.traced_task({}) == (None, False)


def test_no_terminal_is_refused_with_one_line_pointing_to_mesh_top(run, repo):
    assert app.refusal({"TERM": "xterm"}, True) is None
    assert "mesh-top" in app.refusal({"TERM": "dumb"}, True)
    assert "not a terminal" in app.refusal({"TERM": "xterm"}, False)
    assert "--json" in app.refusal({"TERM": "xterm"}, True, as_json=True)
    piped = run("meshctl", "dash", check=64)
    assert piped.stdout == "" and len(piped.stderr.splitlines()) == 1
    assert "mesh-top" in piped.stderr and "Traceback" not in piped.stderr


def test_actions_say_what_went_wrong_in_one_line(repo, mesh_home):
    home = MeshHome(str(mesh_home))
    link = snapshot.Link(home)
    said = actions.run({"cmd": "kill", "peer": "builder-9"}, home, link)
    assert said.startswith("kill: no supervisor for builder-9")
    said = actions.run({"cmd": "send", "to": "nobody", "message": "hi"}, home, link)
    assert said == "send: unknown peer 'nobody'"
    said = actions.run({"cmd": "pick", "task": "t-none"}, home, link)
    assert said.startswith("pick: ") and "\n" not in said


# -- end to end: tmux on a private socket, a live mesh --------------------------------------

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Pane:
    """One tmux server of our own (tmux -L NAME) with one window running a command."""

    def __init__(self, command: str, columns: int = 120, rows: int = 40, env=None):
        self.tmux = ["tmux", "-L", f"dash-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        extra = [f"-e{k}={v}" for k, v in (env or {}).items()]
        subprocess.run([*self.tmux, "new-session", "-d", "-x", str(columns), "-y", str(rows),
                        *extra, command], check=True, env=dict(os.environ, TERM="xterm"))

    def text(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p"], capture_output=True,
                              text=True).stdout

    def shows(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (screen := self.text()):
            assert time.monotonic() < deadline, f"{text!r} never showed; the pane:\n{screen}"
            time.sleep(0.05)
        return screen

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", *keys], check=True)

    def literal(self, text: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-l", text], check=True)

    def show(self, fmt: str) -> str:
        return subprocess.run([*self.tmux, "display-message", "-p", fmt], capture_output=True,
                              text=True).stdout.strip()

    def resize(self, columns: int, rows: int) -> None:
        subprocess.run([*self.tmux, "resize-window", "-x", str(columns), "-y", str(rows)],
                       check=True)

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def peer_table(screen: str) -> list[str]:
    """The peer ids of the table's rows, top to bottom (the feed below names peers too)."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("─ peers")) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith(("  ", "› ")) or not line.strip():
            break
        rows.append(line[2:].split()[0])
    return rows


@needs_tmux
def test_the_dash_end_to_end_in_tmux(run, repo, mesh_home):
    run("meshctl", "init", "--agent", "shell", "--roles", "builder,research,-anchor",
        check=0, timeout=120)
    env = {"MESH_HOME": str(mesh_home), "PATH": os.environ["PATH"], "NO_COLOR": "1",
           "BLESSED_QUERY_TIMEOUT_SECONDS": "0"}
    pane = Pane(f"cd {repo} && meshctl dash; echo EXIT=$?; stty -a; sleep 600", env=env)
    try:
        screen = pane.shows("─ peers 2/2")
        assert "2 peers, 2 alive" in screen and "nothing needs you" in screen
        pane.shows("waiting")
        # filter: a regex; only research stays
        pane.literal("/res")
        pane.keys("Enter")
        assert peer_table(pane.shows("filter /res/")) == ["research-1"]
        pane.keys("/", "Escape")
        wait_until(lambda: len(peer_table(pane.text())) == 2)
        # sort: R sorts by role, again descending
        pane.literal("R")
        pane.shows("sort role asc")
        pane.literal("R")
        assert peer_table(pane.shows("sort role desc")) == ["research-1", "builder-1"]
        # the selected peer's detail, and back
        pane.keys("Down", "Enter")
        screen = pane.shows("locks  held: -")  # "loading…" until the detail's next read
        assert "─ peer research-1" in screen and "─ inbox " in screen and "─ log " in screen
        pane.keys("Escape")
        pane.shows("─ peers 2/2")
        # dispatch: routed to builder, run by its worker, the completion in the feed
        pane.literal(":exec builder echo hello-from-the-dash")
        pane.keys("Enter")
        screen = pane.shows("-> builder (asked for builder)")
        task = next(line for line in screen.splitlines() if "-> builder" in line).split()[0]
        wait_until(lambda: any("task.ok" in line and task[:12] in line
                               for line in pane.text().splitlines()), timeout=30)
        # bad input: one error line, the dash keeps running
        pane.literal(":exec")
        pane.keys("Enter")
        pane.shows("empty task")
        pane.keys("Escape")  # (Esc then ':' at once would read as Alt+':')
        wait_until(lambda: pane.text().rstrip().splitlines()[-1].startswith(" q quit"))
        # a pause shows in the problems line
        pane.literal(":pause 1m")
        pane.keys("Enter")
        pane.shows("need you: dispatch paused until")
        # a resize redraws at the new size
        pane.resize(80, 24)
        wait_until(lambda: all(len(line) <= 80 for line in pane.text().splitlines())
                   and "─ peers" in pane.text())
        assert len(pane.text().splitlines()) <= 24
        # q quits and restores the terminal: normal screen, cursor shown, canonical mode
        pane.literal("q")
        pane.shows("EXIT=0")
        screen = pane.shows("icanon")  # stty -a's local modes, printed after the exit line
        assert "EXIT=0" in screen and pane.show("#{alternate_on}") == "0"
        assert pane.show("#{cursor_flag}") == "1"
        assert " icanon" in screen and "-icanon" not in screen
    finally:
        pane.kill()
        run("meshctl", "down", timeout=120)


@needs_tmux
def test_the_first_frame_comes_before_slow_sources_and_sigterm_restores(run, repo,
                                                                       mesh_home):
    """Without Redis (never started for the dash) the frame still comes, Redis down shown;
    SIGTERM leaves through the same restoring path as q."""
    env = {"MESH_HOME": str(mesh_home), "PATH": os.environ["PATH"], "TERM": "xterm"}
    pane = Pane(f"cd {repo} && meshctl dash; echo EXIT=$?; sleep 600", env=env)
    try:
        pane.shows("redis ✗")
        shell = psutil.Process(int(pane.show("#{pane_pid}")))
        dash, = [p for p in shell.children() if "dash" in " ".join(p.cmdline())]
        dash.terminate()
        pane.shows("EXIT=143")
        assert pane.show("#{alternate_on}") == "0" and pane.show("#{cursor_flag}") == "1"
        assert not (mesh_home / "redis" / "redis.pid").exists()
    finally:
        pane.kill()
