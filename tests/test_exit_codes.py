"""Every entry point keeps meshtools(7)'s exit codes when its reader goes away (141) and on
^C (130): each one writing real output into a pipe nobody reads, and each one stopped while
it waits (a follow, a lock, stdin, a child). pyproject's [project.scripts] is the list."""

import fcntl
import os
import signal
import subprocess
import time
import tomllib

import psutil
import pytest

from .helpers import commit, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    SCRIPTS = sorted(tomllib.load(_f)["project"]["scripts"])

# The kernel's names for "asleep, waiting for something" (/proc/PID/wchan): start-up only
# reads files, so a process seen here twice is running the command's own code.
WAITS = ("locks_lock_inode_wait", "hrtimer_nanosleep", "poll_schedule_timeout", "do_select",
         "do_sys_poll", "do_wait", "anon_pipe_read", "pipe_read", "wait_for_partner",
         "fifo_open", "unix_stream_read_generic", "ep_poll")


class Mesh:
    """The state a case needs, made with the real commands."""

    def __init__(self, run, home, anchor):
        self.run, self.home, self.anchor = run, home, anchor
        self._held = []

    def session(self, sid="b1"):
        self.run("coord-register", "--role", "builder", "--id", sid, "--pid",
                 str(self.anchor.pid), check=0)

    def message(self):
        self.session()
        self.run("coord-send", "b1", "hello", check=0)

    def tasks(self, n=2, *extra):
        for i in range(n):
            self.run("queue-push", *extra, f"echo {i}", check=0)

    def finished(self):
        self.tasks(2)
        self.run("queue-drain", "--burst", check=0)

    def dead_letter(self):
        self.run("queue-push", "--max-attempts", "1", "false", check=0)
        self.run("queue-push", "--max-attempts", "1", "false", check=0)
        self.run("queue-drain", "--burst", check=0)

    def landable(self):
        """mesh/builder one commit ahead of main."""
        tree = self.run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
        commit(tree, "docs/new.md", "new\n", "add a doc")

    def held(self, *parts):
        """Hold the flock a command takes on MESH_HOME/parts, so that it waits there."""
        path = os.path.join(self.home, *parts)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._held.append(fd)

    def fifo(self, name):
        """A file the command reads, as a FIFO nobody writes: it waits in open()."""
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        os.mkfifo(os.path.join(self.home, name), 0o600)

    def close(self):
        for fd in self._held:
            os.close(fd)
        for record in self.run("coord-peers", "--json").records:
            if record["id"].startswith("builder-"):  # a detached spawn: stop its supervisor
                try:
                    os.kill(record["pid"], signal.SIGTERM)
                    psutil.wait_procs([psutil.Process(record["pid"])], timeout=30)
                except (ProcessLookupError, psutil.NoSuchProcess):
                    pass


REGISTRY = ("sessions", ".registry.lock")
REDIS_START = ("redis", "start.lock")  # the embedded Redis is not running yet: they wait

# entry point -> (setup, argv): real output, more than a closed pipe takes.
WRITES = {
    "meshctl": (Mesh.session, ["meshctl", "peers"]),
    "coord": (Mesh.session, ["coord", "peers"]),
    "coord-register": (None, ["coord-register", "--role", "builder", "--id", "b1", "--pid",
                              "{anchor}"]),
    "coord-peers": (Mesh.session, ["coord-peers"]),
    "coord-heartbeat": (Mesh.session, ["coord-heartbeat", "--as", "b1"]),
    "coord-unregister": (Mesh.session, ["coord-unregister", "--as", "b1"]),
    "coord-send": (Mesh.session, ["coord-send", "b1", "hello"]),
    "coord-recv": (Mesh.message, ["coord-recv", "--as", "b1", "--peek"]),
    "file-lock": (Mesh.session, ["file-lock", "acquire", "--as", "b1", "docs"]),
    "queue-push": (None, ["queue-push", "echo hello"]),
    "queue-drain": (Mesh.tasks, ["queue-drain", "--burst"]),
    "queue-results": (Mesh.finished, ["queue-results"]),
    "queue-stat": (Mesh.tasks, ["queue-stat"]),
    "queue-dead": (Mesh.dead_letter, ["queue-dead", "list"]),
    "queue-pause": (None, ["queue-pause", "--for", "1s"]),
    "queue-resume": (None, ["queue-resume"]),
    "mesh-redis": (None, ["mesh-redis", "status"]),
    "mesh-events": (Mesh.message, ["mesh-events"]),
    "mesh-roles": (None, ["mesh-roles", "list"]),
    "mesh-agent": (None, ["mesh-agent", "builder", "hello"]),
    "mesh-worktree": (None, ["mesh-worktree", "ensure", "builder"]),
    "mesh-supervise": (None, ["mesh-supervise", "--json", "--restart", "on-failure", "--",
                              "true"]),
    "mesh-spawn": (None, ["mesh-spawn", "builder", "--queue", "--agent", "shell", "--detach",
                          "--json"]),
    "mesh-pick": (Mesh.landable, ["mesh-pick", "--role", "builder", "--no-gate"]),
    "mesh-anchor": (None, ["mesh-anchor", "--once"]),
    "mesh-top": (Mesh.session, ["mesh-top"]),
}

# entry point -> (setup, argv, stdin left open): waiting when ^C comes.
WAITING = {
    "meshctl": (None, ["meshctl", "events", "--follow"], False),
    "coord": (Mesh.session, ["coord", "recv", "--as", "b1", "--follow"], False),
    "coord-register": (lambda m: m.held(*REGISTRY),
                       ["coord-register", "--role", "builder", "--pid", "{anchor}"], False),
    "coord-peers": (lambda m: m.held(*REGISTRY), ["coord-peers", "--prune"], False),
    "coord-heartbeat": (lambda m: (m.session(), m.held(*REGISTRY)),
                        ["coord-heartbeat", "--as", "b1"], False),
    "coord-unregister": (lambda m: (m.session(), m.held(*REGISTRY)),
                         ["coord-unregister", "--as", "b1"], False),
    "coord-send": (Mesh.session, ["coord-send", "-", "hello"], True),
    "coord-recv": (Mesh.session, ["coord-recv", "--as", "b1", "--follow"], False),
    "file-lock": (lambda m: (m.session(), m.session("b2"),
                             m.run("file-lock", "acquire", "--as", "b1", "docs", check=0)),
                  ["file-lock", "acquire", "--as", "b2", "--wait", "120", "docs"], False),
    "queue-push": (None, ["queue-push", "-"], True),
    "queue-drain": (None, ["queue-drain"], False),
    "queue-results": (None, ["queue-results", "--follow"], False),
    "queue-stat": (lambda m: m.held(*REDIS_START), ["queue-stat"], False),
    "queue-dead": (lambda m: m.held(*REDIS_START), ["queue-dead", "list"], False),
    "queue-pause": (lambda m: m.held(*REDIS_START), ["queue-pause", "--for", "1s"], False),
    "queue-resume": (lambda m: m.held(*REDIS_START), ["queue-resume"], False),
    "mesh-redis": (lambda m: m.held(*REDIS_START), ["mesh-redis", "start"], False),
    "mesh-events": (None, ["mesh-events", "--follow"], False),
    "mesh-roles": (lambda m: m.fifo("roles.toml"), ["mesh-roles", "list"], False),
    "mesh-agent": (None, ["mesh-agent", "builder", "-"], True),
    "mesh-worktree": (lambda m: m.held("worktree.lock"),
                      ["mesh-worktree", "ensure", "builder"], False),
    "mesh-supervise": (None, ["mesh-supervise", "--", "sleep", "120"], False),
    "mesh-spawn": (lambda m: m.held("worktree.lock"),
                   ["mesh-spawn", "builder", "--queue", "--agent", "shell", "--detach"], False),
    "mesh-pick": (lambda m: (m.landable(), m.held("pick.lock")),
                  ["mesh-pick", "--role", "builder", "--no-gate"], False),
    "mesh-anchor": (None, ["mesh-anchor"], False),
    "mesh-top": (None, ["mesh-top", "--interval", "120"], False),
}


def test_every_entry_point_has_its_cases():
    assert sorted(WRITES) == sorted(WAITING) == SCRIPTS


@pytest.fixture
def mesh(run, repo, mesh_home, anchor_process, claude_cli):
    m = Mesh(run, str(mesh_home), anchor_process())
    yield m
    m.close()


def argv_of(template, mesh):
    return [a.format(anchor=mesh.anchor.pid) for a in template]


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_reader_that_went_away_is_141(mesh, name):
    setup, argv = WRITES[name]
    if setup:
        setup(mesh)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: `| head -0`, deterministically
    try:
        done = subprocess.run(argv_of(argv, mesh), stdout=write, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 141, (argv, done.returncode, done.stderr)
    assert done.stderr == "", done.stderr


def waiting(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().startswith(WAITS)
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("name", SCRIPTS)
def test_ctrl_c_while_waiting_is_130(mesh, name):
    setup, argv, stdin = WAITING[name]
    if setup:
        setup(mesh)
    proc = subprocess.Popen(argv_of(argv, mesh), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: waiting(proc.pid) and not time.sleep(0.1) and waiting(proc.pid),
                   timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, (argv, proc.returncode, err)
    assert "Traceback" not in err, err


INTERRUPT_ON_IMPORT = """
import os, signal, sys


class Interrupt:
    \"\"\"^C while the entry point is still importing (deterministically: as it reaches cli).\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "meshtools.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, Interrupt())
"""


@pytest.mark.parametrize("name", SCRIPTS)
def test_ctrl_c_during_start_up_is_130_without_a_traceback(mesh_home, tmp_path, name):
    """A ^C before cli's contract ran escaped it: a KeyboardInterrupt traceback, killed by
    SIGINT instead of exit 130."""
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_ON_IMPORT)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    done = subprocess.run([name, "--help"], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", ""), name


def test_importing_the_package_leaves_sigint_alone():
    """Only a command guards its start-up: a library importer keeps its own ^C."""
    import sys

    check = ("import signal, meshtools; "
             "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler")
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
