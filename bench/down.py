"""meshctl down of a live idle mesh: how long until every process of it is gone.

  down    the mesh `meshctl init --agent shell` boots (seven sessions: six queue workers
          and the anchor's loop with its worker), idle (blocked on XREADGROUP), then
          `meshctl down` timed from its start to its exit (it exits once every one of them
          is gone): median and max of RUNS (target <= 2 s)

    python bench/down.py [RUNS]
"""

import json
import os
import sys
import time

from _common import BIN, median_ms, run, scratch_mesh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from meshtools.coord import registry  # noqa: E402
from meshtools.core.home import MeshHome  # noqa: E402

ROLES = ("anchor", "builder", "memory", "triage", "research", "security", "groomer")


def idle_mesh(repo: str, env: dict, home: MeshHome) -> None:
    """The seven sessions, each registered and blocked on its queue."""
    run([os.path.join(BIN, "meshctl"), "init", "--agent", "shell", "--json"], env, repo)
    deadline = time.monotonic() + 60
    while sum(r.get("phase") == "waiting" for r in registry.all_sessions(home)) < len(ROLES):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers never all waited on their queues")
        time.sleep(0.05)
    time.sleep(1)  # idle a while: heartbeats only


def main(runs: int = 5) -> int:
    repo, env = scratch_mesh()
    home = MeshHome(env["MESH_HOME"])
    times = []
    try:
        for _ in range(runs):
            idle_mesh(repo, env, home)
            started = time.perf_counter()
            out = run([os.path.join(BIN, "meshctl"), "down", "--json"], env, repo).stdout
            times.append(time.perf_counter() - started)
            summary = json.loads(out.splitlines()[-1])
            if summary["stopped"] != len(ROLES) or summary["not_stopped"]:
                raise RuntimeError(f"down did not stop the mesh: {summary}")
    finally:
        run([os.path.join(BIN, "meshctl"), "down", "--all", "--timeout", "0"], env, repo)
    print(f"meshctl down, the live idle mesh meshctl init boots ({len(ROLES)} sessions) "
          f"({runs} runs): median {median_ms(times):.0f} ms, max {max(times) * 1000:.0f} ms "
          f"(target <= 2000 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:2])))
