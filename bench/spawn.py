"""A supervised queue worker: how fast it is ready, and what it costs idle.

  spawn-to-ready  `mesh-spawn builder --queue --detach` started -> the session is registered
                  and its queue-drain worker has announced itself (it beats once, just before
                  its first XREADGROUP BLOCK): median and max of RUNS, the worktree made
                  beforehand (its creation is a one-off, measured apart)
  idle memory     RSS of the supervisor + its queue-drain worker, idle for a few seconds
                  (target <= 40 MB together); PSS and USS (memory only they use) beside it,
                  and the floor: the same figures for a do-nothing supervisor over a worker
                  that only imports redis-py and blocks on XREADGROUP

    python bench/spawn.py [RUNS]
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

from _common import BIN, median_ms, run, scratch_mesh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import psutil  # noqa: E402

from meshtools.core.home import MeshHome  # noqa: E402
from meshtools.queue.broker import Broker  # noqa: E402
from meshtools.queue.connection import connect  # noqa: E402
from meshtools.queue.names import Names  # noqa: E402
from meshtools.queue.server import EmbeddedRedis  # noqa: E402


def spawn_once(repo: str, env: dict, broker: Broker) -> tuple[float, int]:
    start = time.perf_counter()
    out = run([os.path.join(BIN, "mesh-spawn"), "builder", "--queue", "--agent", "shell",
               "--detach", "--json"], env, repo).stdout
    record = json.loads(out.splitlines()[-1])
    while record["session"] not in broker.redis.hkeys(broker.names.workers):
        if time.perf_counter() - start > 60:
            raise RuntimeError("the worker never announced itself")
        time.sleep(0.002)
    return time.perf_counter() - start, record["pid"]


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=30)
    except psutil.NoSuchProcess:
        pass


def memory(pid: int) -> dict[str, float]:
    """MB of the supervisor and of everything under it: RSS each, and the pair's RSS, PSS
    (shared pages split between their users) and USS (pages only they use)."""
    top = psutil.Process(pid)
    procs = [top, *top.children(recursive=True)]
    infos = [p.memory_full_info() for p in procs]
    mb = 2**20
    return {"supervisor": infos[0].rss / mb, "worker": sum(i.rss for i in infos[1:]) / mb,
            "rss": sum(i.rss for i in infos) / mb, "pss": sum(i.pss for i in infos) / mb,
            "uss": sum(i.uss for i in infos) / mb}


def baseline_rss(code: str) -> float:
    """RSS (MB) of a bare interpreter that runs code, for scale."""
    probe = ("\nwith open('/proc/self/status') as f:\n"
             "    print(next(l.split()[1] for l in f if l.startswith('VmRSS')))")
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True,
                         check=True).stdout
    return int(out) / 1024


FLOOR_WORKER = """
import redis
r = redis.Redis.from_url(URL, decode_responses=True, socket_timeout=None, client_name="floor")
try:
    r.xgroup_create("floor", "floor", id="0", mkstream=True)
except redis.ResponseError:
    pass
r.xreadgroup("floor", "floor", {"floor": ">"}, block=0)
"""
FLOOR_SUPERVISOR = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", WORKER]).wait()
"""


def floor_pair(client, url: str) -> dict[str, float]:
    """The least any supervised redis-py worker can cost: a supervisor that only starts its
    child and waits, over a worker that only imports redis-py and blocks on XREADGROUP."""
    def blocked() -> bool:
        return any(c.get("name") == "floor" and c.get("cmd") == "xreadgroup"
                   for c in client.client_list())

    worker = FLOOR_WORKER.replace("URL", repr(url))
    top = subprocess.Popen([sys.executable, "-c",
                            FLOOR_SUPERVISOR.replace("WORKER", repr(worker))])
    try:
        deadline = time.monotonic() + 30
        while not blocked():
            if time.monotonic() > deadline:
                raise RuntimeError("the floor worker never blocked")
            time.sleep(0.05)
        time.sleep(1)
        return memory(top.pid)
    finally:
        for p in reversed([psutil.Process(top.pid), *psutil.Process(top.pid).children()]):
            p.kill()
        top.wait()


def main(runs: int = 7) -> int:
    repo, env = scratch_mesh()
    home = MeshHome(env["MESH_HOME"])
    run([os.path.join(BIN, "meshctl"), "init", "--no-agents"], env, repo)
    started = time.perf_counter()
    run([os.path.join(BIN, "mesh-worktree"), "ensure", "builder"], env, repo)
    worktree_s = time.perf_counter() - started
    broker = Broker(connect(home), Names())
    times, samples, floors = [], [], []
    try:
        for _ in range(runs):
            elapsed, pid = spawn_once(repo, env, broker)
            times.append(elapsed)
            time.sleep(3)  # idle: blocked on XREADGROUP, heartbeats only
            samples.append(memory(pid))
            stop(pid)
            floors.append(floor_pair(broker.redis, EmbeddedRedis(home).authed_url()))
    finally:
        run([os.path.join(BIN, "mesh-redis"), "stop"], env, repo)
    print(f"spawn-to-ready, supervised queue worker ({runs} runs): median "
          f"{median_ms(times):.0f} ms, max {max(times) * 1000:.0f} ms "
          f"(worktree created once beforehand in {worktree_s * 1000:.0f} ms)")
    med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    print(f"idle memory, supervisor + queue-drain (median of {runs}): RSS {med['rss']:.1f} MB "
          f"(target <= 40 MB) = supervisor {med['supervisor']:.1f} + worker "
          f"{med['worker']:.1f}; PSS {med['pss']:.1f} MB, USS {med['uss']:.1f} MB")
    floor = {k: statistics.median(s[k] for s in floors) for k in floors[0]}
    print(f"  the floor, measured the same way: a supervisor that only starts and waits "
          f"({floor['supervisor']:.1f} MB) + a worker that only imports redis-py and blocks on "
          f"XREADGROUP ({floor['worker']:.1f} MB) = RSS {floor['rss']:.1f} MB, "
          f"USS {floor['uss']:.1f} MB")
    print(f"  for scale, bare interpreters in this run: python {baseline_rss(''):.1f} MB, "
          f"python + import redis {baseline_rss('import redis'):.1f} MB, "
          f"python + import click {baseline_rss('import click'):.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:2])))
