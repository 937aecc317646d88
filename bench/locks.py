"""Lock throughput under contention, and how fast a deadlock is caught.

  throughput: acquire+release pairs/s on ONE scope, 4 processes contending, library calls
  detection:  a waits-for cycle A->B->A; time from the closing acquire call to its refusal,
              median and max of TRIALS (target < 100 ms), in-process and as a CLI process

    python bench/locks.py [PAIRS_PER_PROCESS] [TRIALS]
"""

import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from _common import median_ms, scratch_mesh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from meshtools.core.home import MeshHome  # noqa: E402
from meshtools.locks.service import Deadlock, LockService  # noqa: E402

PROCESSES = 4


def _contend(home: str, pairs: int, ready, go) -> None:
    service = LockService(MeshHome(home))
    me = service.claimant(f"bench-{os.getpid()}", anchor_pid=os.getpid())
    ready.wait()
    go.wait()
    for _ in range(pairs):
        service.acquire(me, ["crates/core"])
        service.release(me.id, ["crates/core"])


def throughput(home: str, pairs: int) -> float:
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Barrier(PROCESSES + 1), ctx.Event()
    procs = [ctx.Process(target=_contend, args=(home, pairs, ready, go)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    ready.wait()
    start = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    return PROCESSES * pairs / (time.perf_counter() - start)


def detection(home: str, repo: str, env: dict, trials: int) -> tuple[list[float], list[float]]:
    service = LockService(MeshHome(home))
    anchors = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
    a, b = (service.claimant(n, anchor_pid=p.pid) for n, p in zip("AB", anchors))
    in_process, as_cli = [], []
    try:
        for trial in range(trials):
            service.acquire(a, ["docs"])
            service.acquire(b, ["web"])
            waiter = subprocess.Popen(["file-lock", "acquire", "--as", "A", "--pid",
                                       str(anchors[0].pid), "web"], cwd=repo, env=env)
            while not service.snapshot()["waits"]:
                time.sleep(0.005)
            if trial % 2 == 0:
                start = time.perf_counter()
                try:
                    service.acquire(b, ["docs"])
                except Deadlock:
                    in_process.append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                rc = subprocess.run(["file-lock", "acquire", "--as", "B", "--pid",
                                     str(anchors[1].pid), "docs"], cwd=repo, env=env,
                                    stderr=subprocess.DEVNULL).returncode
                assert rc == 75, rc
                as_cli.append(time.perf_counter() - start)
            waiter.kill()
            waiter.wait()
            service.release("A", None)
            service.release("B", None)
    finally:
        for p in anchors:
            p.kill()
            p.wait()
    return in_process, as_cli


def main(pairs: int = 500, trials: int = 20) -> int:
    repo, env = scratch_mesh()
    home = env["MESH_HOME"]
    os.environ.update(env)
    os.chdir(repo)
    rates = [throughput(home, pairs) for _ in range(3)]
    print(f"lock throughput, one scope, {PROCESSES} contending processes, "
          f"{pairs} pairs each: median {statistics.median(rates):,.0f} acquire+release pairs/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    in_process, as_cli = detection(home, repo, env, trials)
    print(f"deadlock detection, {len(in_process)} trials in-process: median "
          f"{median_ms(in_process):.2f} ms, max {max(in_process) * 1000:.2f} ms (target < 100 ms)")
    print(f"deadlock detection, {len(as_cli)} trials as a whole `file-lock acquire` process: "
          f"median {median_ms(as_cli):.1f} ms, max {max(as_cli) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    sys.exit(main(*args))
