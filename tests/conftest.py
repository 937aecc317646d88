"""Every test gets its own mesh: its own MESH_HOME, no inherited session, no colour.

Commands run as real processes through `run`; library code is called directly where a
subprocess would only add time.
"""

import json
import os
import subprocess

import pytest

from .helpers import BIN, FAKES, git


@pytest.fixture(autouse=True)
def mesh_home(tmp_path, monkeypatch):
    """Its own MESH_HOME, and so its own embedded Redis if the test starts one (stopped after)."""
    home = tmp_path / "mesh-home"
    monkeypatch.setenv("MESH_HOME", str(home))
    for var in ("MESH_SESSION", "MESH_REDIS_URL", "MESH_NAMESPACE", "CLAUDECODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    yield home
    if (home / "redis" / "redis.pid").exists():
        from meshtools.core.home import MeshHome
        from meshtools.queue.server import EmbeddedRedis

        EmbeddedRedis(MeshHome(str(home))).stop()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A real git repository shaped like a small workspace, and the cwd of the test."""
    root = tmp_path / "project"
    files = {
        "Cargo.toml": "[workspace]\n",
        "README.md": "hello\n",
        "crates/core/Cargo.toml": "[package]\nname='core'\n",
        "crates/core/src/lib.rs": "pub fn f() {}\n",
        "crates/cli/Cargo.toml": "[package]\nname='cli'\n",
        "crates/cli/src/main.rs": "fn main() {}\n",
        "crates/shared.rs": "// no manifest in crates/\n",
        "docs/guide.md": "# guide\n",
        "web/package.json": "{}\n",
        "web/src/app.js": "1\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(root)
    return root


class Result(subprocess.CompletedProcess):
    @property
    def records(self):
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture
def run():
    """Run an installed command as a real process: run("coord-peers", "--role", "x")."""

    def _run(*argv, input=None, env=None, check=None, timeout=60, cwd=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=cwd)
        result = Result(proc.args, proc.returncode, proc.stdout, proc.stderr)
        if check is not None:
            assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
        return result

    return _run


@pytest.fixture
def anchor_process():
    """Long-lived processes to anchor sessions (a session lives as long as its pid)."""
    procs = []

    def _start():
        proc = subprocess.Popen(["sleep", "600"])
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def claude_cli(tmp_path, monkeypatch):
    """The stand-in `claude` (tests/fakes/claude) first on PATH; returns the path of the log
    it appends one JSON line per invocation to ({ts, pid, argv, cwd, MESH_SESSION, prompt})."""
    log = tmp_path / "claude-calls.jsonl"
    monkeypatch.setenv("PATH", FAKES + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    monkeypatch.delenv("MESH_AGENT_COMMAND", raising=False)
    return log
