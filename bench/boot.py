"""Booting the whole mesh with `meshctl init` (--agent shell: the agent CLI is not measured).

  cold boot    from nothing (a fresh repository and MESH_HOME) to all seven sessions
               registered and ready, their workers blocking on their queues (init returns
               then): median of RUNS, each in a mesh of its own; target <= 3 s
  second init  `meshctl init` again on the live mesh, which starts nothing: median of RUNS;
               target <= 0.5 s
  where the time goes, from the steps of the last cold boot: state directory, Redis,
  worktrees, and the slowest session from its start to ready

    python bench/boot.py [RUNS]
"""

import json
import os
import signal
import subprocess
import sys
import time

from _common import BIN, median_ms, scratch_mesh

import psutil


def init(repo: str, env: dict) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    out = subprocess.run([os.path.join(BIN, "meshctl"), "init", "--agent", "shell", "--json"],
                         env=env, cwd=repo, check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - start
    return elapsed, [json.loads(line) for line in out.splitlines()]


def stop(home: str) -> None:
    """SIGTERM every supervisor of the mesh, wait for them, then stop its Redis."""
    folder = os.path.join(home, "spawns")
    procs = []
    for name in os.listdir(folder):
        if name.endswith(".json") and not name.endswith(".spawn.json"):
            with open(os.path.join(folder, name)) as f:
                pid = json.load(f).get("supervisor_pid")
            try:
                procs.append(psutil.Process(pid))
                os.kill(pid, signal.SIGTERM)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
    psutil.wait_procs(procs, timeout=60)
    subprocess.run([os.path.join(BIN, "mesh-redis"), "stop"], env=dict(os.environ, MESH_HOME=home),
                   capture_output=True)


def main(runs: int = 5) -> int:
    cold, warm, last = [], [], []
    for _ in range(runs):
        repo, env = scratch_mesh()
        try:
            elapsed, records = init(repo, env)
            ready = [r for r in records if r.get("status") == "started"]
            if len(ready) != 7:
                raise RuntimeError(f"{len(ready)} of 7 sessions started: {records[-1]}")
            cold.append(elapsed)
            last = records
            warm.append(init(repo, env)[0])
        finally:
            stop(env["MESH_HOME"])
    print(f"cold boot, nothing -> seven sessions ready ({runs} runs): median "
          f"{median_ms(cold):.0f} ms, max {max(cold) * 1000:.0f} ms (target <= 3000 ms)")
    print(f"second init on the live mesh ({runs} runs): median {median_ms(warm):.0f} ms, "
          f"max {max(warm) * 1000:.0f} ms (target <= 500 ms)")
    steps = {r["step"] if not r.get("session") else r["session"]: r["seconds"] for r in last
             if r["kind"] == "step"}
    trees = sum(r["seconds"] for r in last if r["kind"] == "step" and r["step"] == "worktree")
    sessions = {k: v for k, v in steps.items() if k.endswith("-1")}
    slowest = max(sessions, key=sessions.get)
    print(f"  last cold boot: home {steps['home'] * 1000:.0f} ms, redis "
          f"{steps['redis'] * 1000:.0f} ms, 6 worktrees {trees * 1000:.0f} ms, then all seven "
          f"supervisors started at once: the slowest ready after "
          f"{sessions[slowest] * 1000:.0f} ms ({slowest}), the fastest after "
          f"{min(sessions.values()) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:2])))
