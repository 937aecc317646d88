"""A landing killed at any instant (kill -9 of mesh-pick, or of its whole process group)
leaves main at a commit whose gate passed, the main checkout clean and at main, and the next
pass recovers by itself: it lands the good work exactly once and refuses the bad.

The gate here fails on any BAD under src/, as the one in issue 17 did.
"""

import os
import random
import signal
import subprocess
import time

import pytest

from meshtools.core import fs
from meshtools.core.home import MeshHome

from .helpers import commit, git

GATE_SECONDS = 0.4
PHASES = ("launch", "start", "end")  # killed soon after launch, in the gate, after the gate


@pytest.fixture
def landing(repo, mesh_home, tmp_path, run):
    """A builder worktree and a config whose gate marks when it starts and ends."""
    builder = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    marks = tmp_path / "marks"
    marks.mkdir()
    gate = (f'touch "{marks}/start"; sleep {GATE_SECONDS}; ! grep -rq BAD src; '
            f'code=$?; touch "{marks}/end"; exit $code')
    (mesh_home / "config.toml").write_text(f"[pick]\ngate = '{gate}'\n")
    return builder, marks


def start_pick(sha: str, group: bool) -> subprocess.Popen:
    return subprocess.Popen(["mesh-pick", "--commits", sha, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)


def kill(process: subprocess.Popen, group: bool) -> None:
    """kill -9 mesh-pick (or its process group), then wait until nothing it left holds the
    pick lock: the step that moves main runs on by design, and the next pass waits so too."""
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.communicate()
    with fs.flocked(MeshHome(os.environ["MESH_HOME"]).pick_lock):
        pass


def wait_for(path, process: subprocess.Popen, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def assert_main_is_gated_and_whole(repo, where: str = "") -> None:
    """main's tip passes the gate, and the main checkout is at it: no pick in progress,
    nothing staged or changed (the index and the files are main's)."""
    found = subprocess.run(["git", "grep", "-q", "BAD", "main", "--", "src"], cwd=repo)
    assert found.returncode == 1, f"an ungated commit with BAD is on main {where}"
    assert not (repo / ".git" / "CHERRY_PICK_HEAD").exists(), where
    assert git(repo, "rev-parse", "HEAD") == git(repo, "rev-parse", "main"), where
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == "", where


def landings_of(repo, sha: str) -> int:
    return len(git(repo, "log", "--format=%H", "-F",
                   f"--grep=(cherry picked from commit {sha})", "main").splitlines())


def next_pass(run, sha: str):
    return run("mesh-pick", "--commits", sha, "--json", timeout=120)


def test_a_kill_during_the_gate_leaves_main_gated_and_the_next_pass_refuses(run, repo,
                                                                          landing):
    builder, marks = landing
    bad = commit(builder, "src/lib.txt", "BAD\n", "bad work")
    before = git(repo, "rev-parse", "main")
    picking = start_pick(bad, group=False)
    wait_for(marks / "start", picking)
    kill(picking, group=False)
    assert git(repo, "rev-parse", "main") == before
    assert_main_is_gated_and_whole(repo)
    again = next_pass(run, bad)
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert again.records[0]["status"] == "gate_failed"
    assert git(repo, "rev-parse", "main") == before
    assert_main_is_gated_and_whole(repo)


def test_a_passing_landing_killed_right_after_its_gate_lands_exactly_once(run, repo, landing):
    builder, marks = landing
    good = commit(builder, "src/lib.txt", "fine\n", "good work")
    picking = start_pick(good, group=True)
    wait_for(marks / "end", picking)
    kill(picking, group=True)
    assert_main_is_gated_and_whole(repo)
    again = next_pass(run, good)
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert landings_of(repo, good) == 1
    assert (repo / "src/lib.txt").read_text() == "fine\n"
    assert_main_is_gated_and_whole(repo)


def test_kills_at_random_instants_never_leave_an_ungated_main(run, repo, landing):
    """Rounds of a good and a bad candidate, each killed a random delay after its launch,
    its gate's start or its gate's end (mesh-pick alone, or its whole process group); after
    each kill main passes the gate and the next pass recovers: the good lands once, the bad
    is refused."""
    builder, marks = landing
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for round_no in range(6):
        good = commit(builder, f"src/good{round_no}.txt", f"{round_no}\n", f"good {round_no}")
        git(builder, "reset", "-q", "--hard", "HEAD~1")  # each candidate stands alone on main
        bad = commit(builder, f"src/bad{round_no}.txt", "BAD\n", f"bad {round_no}")
        git(builder, "reset", "-q", "--hard", "HEAD~1")
        for sha, lands in ((good, True), (bad, False)):
            group, phase = rng.random() < 0.5, PHASES[round_no % len(PHASES)]
            for name in ("start", "end"):
                (marks / name).unlink(missing_ok=True)
            picking = start_pick(sha, group)
            if phase != "launch":
                wait_for(marks / phase, picking)
            time.sleep(rng.uniform(0.0, GATE_SECONDS if phase == "start" else 0.2))
            kill(picking, group)
            where = (f"seed {seed}, round {round_no}, {'good' if lands else 'bad'}, "
                     f"killed after {phase}{' (group)' if group else ''}")
            assert_main_is_gated_and_whole(repo, where)
            again = next_pass(run, sha)
            assert again.returncode == (0 if lands else 1), (where, again.stdout, again.stderr)
            assert landings_of(repo, sha) == (1 if lands else 0), where
            assert_main_is_gated_and_whole(repo, where)


def test_a_worktree_add_killed_mid_write_does_not_stop_the_next_pass(run, repo, landing,
                                                                      mesh_home):
    """`git worktree add` killed between making the scratch's registration and filling it
    leaves an empty commondir, which every later `git worktree` command dies on (seen in
    the random rounds above). The next pass removes that registration, and only that one."""
    builder, _ = landing
    good = commit(builder, "src/lib.txt", "fine\n", "good work")
    theirs = repo.parent / "elsewhere" / "scratch"  # a user's worktree of the same name
    git(repo, "worktree", "add", "-q", "--detach", str(theirs), "main")
    half = repo / ".git" / "worktrees" / "scratch1"
    half.mkdir(parents=True)
    (half / "locked").write_text("initializing\n")
    (half / "gitdir").write_text(f"{mesh_home / 'landing' / 'scratch'}/.git\n")
    (half / "commondir").write_text("")
    again = next_pass(run, good)
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert landings_of(repo, good) == 1
    assert str(theirs) in git(repo, "worktree", "list", "--porcelain")
    assert_main_is_gated_and_whole(repo)
