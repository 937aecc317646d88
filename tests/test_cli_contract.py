"""The contract every command keeps: the umbrella, terminals vs pipes, broken pipes, help."""

import json
import os
import pty
import subprocess

import pytest

from .helpers import on_terminal, read_terminal, redis_of, wait_until


def register(run, anchor, sid, role="builder"):
    run("coord-register", "--role", role, "--id", sid, "--pid", str(anchor.pid), check=0)


def test_meshctl_takes_the_common_options_before_the_subcommand(run, repo, tmp_path,
                                                               anchor_process):
    """`meshctl --home X peers` is `meshctl peers --home X`; a subcommand's own option
    still wins, and $MESH_HOME (set by the fixture) loses to either."""
    other = tmp_path / "other-home"
    assert run("meshctl", "--home", str(other), "home", check=0).stdout.strip() == str(other)
    assert run("meshctl", "--home", "elsewhere", "home", "--home", str(other),
               check=0).stdout.strip() == str(other)
    pid = str(anchor_process().pid)
    run("meshctl", "--home", str(other), "register", "--role", "builder", "--id", "b1",
        "--pid", pid, check=0)
    assert [r["id"] for r in run("meshctl", "--home", str(other), "peers", check=0).records] \
        == ["b1"]
    assert run("meshctl", "peers", check=0).records == []
    code, shown, _ = on_terminal(["meshctl", "--json", "--home", str(other), "peers"])
    assert code == 0 and json.loads(shown.splitlines()[0])["id"] == "b1"
    code, shown, _ = on_terminal(["meshctl", "--home", str(other), "peers"])
    assert code == 0 and "ID" in shown and "{" not in shown


def test_default_home_is_shared_by_every_worktree(run, repo, monkeypatch):
    monkeypatch.delenv("MESH_HOME")
    subprocess.run(["git", "worktree", "add", "-q", "-b", "mesh/research",
                    str(repo.parent / "wt-research")], cwd=repo, check=True)
    main = run("meshctl", "home", check=0).stdout.strip()
    linked = run("meshctl", "home", cwd=str(repo.parent / "wt-research" / "docs"), check=0)
    assert main == linked.stdout.strip() == str(repo / ".git" / "meshtools")


def test_umbrella_and_group_serve_the_same_commands(run, anchor_process, repo):
    a = anchor_process()
    register(run, a, "b1")
    run("coord", "register", "--role", "memory", "--id", "m1", "--pid", str(a.pid), check=0)
    assert [r["id"] for r in run("meshctl", "peers", check=0).records] == ["b1", "m1"]
    run("meshctl", "send", "--as", "m1", "builder", "hi", check=0)
    assert run("coord", "recv", "--as", "b1", check=0).records[0]["body"] == "hi"
    run("meshctl", "lock", "acquire", "--as", "b1", "docs", check=0)
    assert run("meshctl", "lock", "status", check=0).records[0]["holder"] == "b1"
    assert run("meshctl", "lock", "--as", "b1", "web", "--", "true").returncode == 0


def test_terminal_gets_a_table_pipe_gets_json(anchor_process, run, repo):
    register(run, anchor_process(), "b1")
    parent, child = pty.openpty()
    proc = subprocess.Popen(["coord-peers"], stdout=child, stderr=child)
    os.close(child)
    out = read_terminal(parent)
    proc.wait()
    text = out.decode()
    assert "ID" in text and "STATE" in text and "b1" in text and "{" not in text
    piped = run("coord-peers", check=0).stdout
    assert json.loads(piped.splitlines()[0])["id"] == "b1"


def test_broken_pipe_exits_quietly(run, anchor_process):
    a = anchor_process()
    register(run, a, "b1")
    run("sh", "-c", "for i in $(seq 400); do echo '{\"n\": '$i'}'; done | coord-send b1 -",
        check=0)
    result = run("sh", "-c", "coord-recv --as b1 --peek | head -1", check=0)
    assert json.loads(result.stdout)["data"] == {"n": 1}
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr


@pytest.mark.parametrize("command", ["meshctl", "coord", "coord-register", "coord-peers",
                                     "coord-send", "coord-recv", "file-lock"])
def test_help_exits_zero(run, command):
    result = run(command, "--help", check=0)
    assert result.stdout.startswith("Usage:")


def test_nul_and_control_characters_in_piped_ids(run, anchor_process, mesh_home):
    register(run, anchor_process(), "b1")
    result = run("coord-send", "-", "hi", input='{"id": "b1\\u0000../../x"}\n')
    assert result.returncode == 65 and "invalid peer id" in result.stderr
    assert not (mesh_home / "inbox").exists()


@pytest.mark.parametrize("argv", [["coord-send", "--as", "u6", "u6", b"\xff"],
                                  ["coord-heartbeat", "--phase", b"\xff"],
                                  ["queue-pause", "--for", "60", "--reason", b"\xff"],
                                  ["queue-results", "--wait", b"\xff"],
                                  ["queue-push", b"echo \xff"],
                                  ["meshctl", "--home", b"/tmp/\xff", "peers"],
                                  ["file-lock", "acquire", "--as", "a", b"src/\xff.rs"]])
def test_an_argument_that_is_not_utf8_is_bad_input(run, mesh_home, argv):
    """It exited 70 (a bug) where a write met it, or was stored as U+FFFD (queue-push)."""
    result = run(*argv)
    assert result.returncode == 65, (result.returncode, result.stderr)
    bad = next(n for n, arg in enumerate(argv) if isinstance(arg, bytes))
    assert result.stderr.startswith(f"{argv[0]}: argument {bad} is not UTF-8 text: "), \
        result.stderr
    assert "\\xff" in result.stderr and result.stderr.count("\n") == 1 and not result.stdout
    assert not (mesh_home / "redis").exists()  # refused before anything was done


def test_internal_errors_are_one_line(run, repo, mesh_home):
    (mesh_home).mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[locks\nbroken")
    result = run("file-lock", "acquire", "--as", "a", "docs")
    assert result.returncode == 78 and "config.toml" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["meshctl", "coord", "file-lock", "queue-dead",
                                     "mesh-redis", "mesh-roles", "mesh-worktree"])
def test_command_lists_show_whole_descriptions(run, command):
    lines = run(command, "--help", check=0).stdout.splitlines()
    listed = lines[lines.index("Commands:") + 1:]
    assert listed and not [line for line in listed if line.rstrip().endswith("...")]
    if command == "meshctl":  # a description longer than a line is wrapped, not cut
        text = " ".join(" ".join(listed).split())
        assert "notice stale, dead or FATAL peers and respawn dead and FATAL ones." in text


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
@pytest.mark.parametrize("argv", [["mesh-agent", "builder", "hi", "--timeout"],
                                  ["mesh-agent", "builder", "hi", "--startup-timeout"],
                                  *[["mesh-supervise", flag] for flag in
                                    ("--base", "--cap", "--min-uptime", "--rerun-delay",
                                     "--grace")],
                                  ["mesh-anchor", "--once", "--interval"]])
def test_every_seconds_flag_refuses_nan_inf_and_negatives(run, mesh_home, argv, value):
    """click.FloatRange takes nan (every comparison with it is false) and inf: a supervisor
    whose backoff is NaN, a run whose timeout never ends."""
    result = run(*argv, value, "--", "true") if argv[0] == "mesh-supervise" else \
        run(*argv, value)
    assert result.returncode == 64 and "not a finite number of seconds" in result.stderr, \
        result.stderr


@pytest.mark.parametrize("argv", [["mesh-roles", "--json"], ["queue-push", "--id", "x", "true"]])
def test_a_full_disk_is_an_io_error_not_a_bug(mesh_home, argv):
    """stdout on a full disk (for real: /dev/full) exited 70, which says "a bug"."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 74 and done.stderr.endswith(": No space left on device\n"), \
        (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", [["mesh-events"], ["queue-stat"], ["coord-peers"]])
def test_a_home_that_is_a_file_is_a_config_error(run, tmp_path, argv):
    """--home naming a file (or a path through one) was an internal error (70,
    NotADirectoryError) wherever the first directory under it was made."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for home in (a_file, a_file / "mesh"):
        result = run(*argv, "--home", str(home))
        assert result.returncode == 78 and f"{a_file} is a file" in result.stderr, result.stderr
    too_long = run(*argv, "--home", str(tmp_path / ("a" * 5000)))
    assert too_long.returncode == 78 and "File name too long" in too_long.stderr


@pytest.mark.parametrize("argv", [["queue-results", "--follow"], ["mesh-events", "--follow"]])
def test_redis_going_away_mid_command_is_unavailable_not_a_bug(run, mesh_home, argv):
    """A follower whose Redis was stopped under it exited 70 (ConnectionError: a bug)."""
    run("mesh-redis", "start", check=0)
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = redis_of(mesh_home)
    wait_until(lambda: len(watcher.client_list()) >= 2)  # the follower is connected
    run("mesh-redis", "stop", check=0)
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == 69 and err.startswith(f"{argv[0]}: redis unavailable"), err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv, hint", [
    (["meshctl", "peer"], "No such command 'peer'; did you mean 'peers'?"),
    (["coord", "registr"], "No such command 'registr'; did you mean 'register'?"),
    (["queue-dead", "lst"], "No such command 'lst'; did you mean 'list'?"),
])
def test_a_misspelt_subcommand_gets_a_did_you_mean(run, argv, hint):
    """`file-lock acqure` had one, `meshctl peer` only "No such command 'peer'."."""
    refused = run(*argv)
    assert refused.returncode == 64 and hint in refused.stderr


def test_an_unknown_subcommand_far_from_any_gets_no_guess(run):
    refused = run("meshctl", "frobnicate")
    assert refused.returncode == 64 and "No such command 'frobnicate'." in refused.stderr
