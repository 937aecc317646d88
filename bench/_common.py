"""What the benchmarks share: a throwaway repository and mesh, and timing helpers."""

import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)


def scratch_mesh() -> tuple[str, dict]:
    """A real git repository with one crate, its own MESH_HOME, and the env to use them."""
    root = tempfile.mkdtemp(prefix="meshbench-")
    repo = os.path.join(root, "repo")
    for folder in ("crates/core/src", "docs", "web"):
        os.makedirs(os.path.join(repo, folder))
    for rel in ("crates/core/Cargo.toml", "crates/core/src/lib.rs", "README.md",
                "docs/guide.md", "web/app.js"):
        with open(os.path.join(repo, rel), "w") as f:
            f.write("x\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=repo, check=True)
    env = dict(os.environ, MESH_HOME=os.path.join(root, "mesh"),
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.pop("MESH_SESSION", None)
    # Measure what an installed copy costs: byte-code cached, as pip leaves a wheel.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return repo, env


def time_process(argv, cwd, env, stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, input=stdin,
                   text=True)
    return time.perf_counter() - start


def median_ms(samples) -> float:
    return statistics.median(samples) * 1000


def percentile_ms(samples, q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# A role of the scratch mesh (coord-register refuses any other) that many sessions may hold
# at once: the benches register as many as they need under it.
BENCH_ROLE = """[roles.bench]
description = "the benchmarks' sessions"
model = "haiku"
charter = "none"
prompt = "none"
concurrency = 100000
"""


def run(argv: list[str], env: dict, cwd: str) -> subprocess.CompletedProcess:
    """A command of the scratch mesh, to its end; a failure stops the benchmark."""
    return subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True, text=True)
