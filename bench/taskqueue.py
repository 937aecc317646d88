"""Queue benchmarks, all against one real redis-server started for the run.

  dispatch   library push of a no-op task -> the idle drain worker has started its
             subprocess: p50 and p99 over N tasks, one at a time (target p50 <= 10 ms)
  throughput 5,000 no-op tasks (`sh -c true`) through 4 workers, tasks/s, for: queue-drain
             (as the real command), RQ's default worker (forks a work horse per job; each
             job runs the same command), and a bare 30-line XREADGROUP -> subprocess ->
             XADD + XACK loop (bench/_bare_worker.py), the floor process spawning sets.
             Every worker is a process of its own, started when the clock starts, on a
             queue filled beforehand (targets: >= 3x RQ, >= 0.7x bare)
  overhead   queue path per task without the subprocess: one worker, an executor that
             returns at once (target <= 1 ms)
  durability what an acknowledged push being on disk costs: the embedded server's
             `appendfsync always` (Redis answers once the write is fsynced) against Redis's
             `everysec` (a second of acknowledged writes lost in a crash or a full disk),
             switched on the same server and measured in turn: per push (one task a push,
             as queue-push does) and per task on the queue path (`overhead`)

    python bench/taskqueue.py [TASKS] [DISPATCH_TASKS]      (needs `pip install rq`)
"""

import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import BIN, percentile_ms

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from meshtools.core.home import MeshHome  # noqa: E402
from meshtools.queue.broker import Broker  # noqa: E402
from meshtools.queue.connection import connect  # noqa: E402
from meshtools.executors.process import ShellExecutor  # noqa: E402
from meshtools.queue.outcome import Outcome  # noqa: E402
from meshtools.queue.names import Names  # noqa: E402
from meshtools.queue.server import APPENDFSYNC, EmbeddedRedis  # noqa: E402
from meshtools.queue.worker import Worker  # noqa: E402

WORKERS = 4
NOOP = "true"
CTX = multiprocessing.get_context("fork")


def fresh(home: MeshHome, names: Names) -> Broker:
    broker = Broker(connect(home), names)
    broker.redis.flushall()
    return broker


def push_all(broker: Broker, count: int, queue: str = "default") -> None:
    for start in range(0, count, 500):
        broker.push([({"id": f"n{i}", "prompt": NOOP}, queue)
                     for i in range(start, min(count, start + 500))])


def wait_results(broker: Broker, count: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while broker.redis.xlen(broker.names.results) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("results never arrived")
        time.sleep(0.005)
    return time.perf_counter()


# --- dispatch latency ---------------------------------------------------------------------

class StampingExecutor(ShellExecutor):
    def __init__(self, stamps):
        super().__init__()
        self.stamps = stamps

    def run(self, task, workdir, timeout, on_start=None):
        return super().run(task, workdir, timeout,
                           on_start=lambda pid: self.stamps.put(time.time() - task["t0"]))


def _dispatch_worker(url_home, stamps, count):
    home = MeshHome(url_home)
    worker = Worker(Broker(connect(home, blocking=True), Names()), Broker(connect(home), Names()),
                    StampingExecutor(stamps), "dispatch", ["default"], "/", max_tasks=count)
    worker.run()


def dispatch(home: MeshHome, count: int) -> list[float]:
    broker = fresh(home, Names())
    broker.ensure_group("default")
    stamps = CTX.Queue()
    proc = CTX.Process(target=_dispatch_worker, args=(home.path, stamps, count))
    proc.start()
    latencies = []
    time.sleep(0.5)  # let the worker block on XREADGROUP
    for n in range(count):
        broker.push([({"id": f"d{n}", "prompt": NOOP, "t0": time.time()}, "default")])
        latencies.append(stamps.get(timeout=30))
        wait_results(broker, n + 1)
        time.sleep(0.002)  # the worker is idle again, blocking, when the next task comes
    proc.join(timeout=30)
    return latencies


# --- throughput ---------------------------------------------------------------------------

def meshtools_throughput(home: MeshHome, count: int) -> float:
    broker = fresh(home, Names())
    push_all(broker, count)
    env = dict(os.environ, MESH_HOME=home.path)
    start = time.perf_counter()
    workers = [subprocess.Popen([os.path.join(BIN, "queue-drain"), "--burst", "--consumer",
                                 f"w{n}"], env=env, stdout=subprocess.DEVNULL)
               for n in range(WORKERS)]
    end = wait_results(broker, count)
    for w in workers:
        w.wait()
    return count / (end - start)


def bare_throughput(home: MeshHome, url: str, count: int) -> float:
    broker = fresh(home, Names())
    push_all(broker, count)
    broker.redis.xgroup_create("tasks:queue:default", "bare", id="0")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bare_worker.py")
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, script, url, f"bare{n}"])
             for n in range(WORKERS)]
    end = wait_results(broker, count)
    for p in procs:
        p.wait()
    return count / (end - start)


def run_noop_job(command):
    return subprocess.run(["/bin/sh", "-c", command]).returncode


def _rq_worker(url: str) -> None:
    from redis import Redis
    from rq import Queue, Worker as RQWorker

    connection = Redis.from_url(url)
    RQWorker([Queue("bench", connection=connection)], connection=connection).work(
        burst=True, logging_level="ERROR")


def rq_throughput(home: MeshHome, url: str, count: int) -> float | None:
    try:
        from redis import Redis
        from rq import Queue
    except ImportError:
        return None
    fresh(home, Names())
    queue = Queue("bench", connection=Redis.from_url(url))
    for start in range(0, count, 500):
        queue.enqueue_many([Queue.prepare_data(run_noop_job, args=(NOOP,))
                            for _ in range(start, min(count, start + 500))])
    procs = [CTX.Process(target=_rq_worker, args=(url,)) for _ in range(WORKERS)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    end = time.perf_counter()
    done = queue.finished_job_registry.count
    return done / (end - start)


# --- queue-path overhead ------------------------------------------------------------------

class InstantExecutor:
    def run(self, task, workdir, timeout, on_start=None):
        return Outcome("ok", 0, "", 0.0)

    def interrupt(self):
        pass


def overhead(home: MeshHome, count: int) -> float:
    broker = fresh(home, Names())
    push_all(broker, count)
    worker = Worker(Broker(connect(home, blocking=True), Names()), Broker(connect(home), Names()),
                    InstantExecutor(), "overhead", ["default"], "/", burst=True, block_ms=50)
    start = time.perf_counter()
    worker.run()
    return (time.perf_counter() - start - 0.05) / count


# --- durability ---------------------------------------------------------------------------

def push_cost(home: MeshHome, count: int) -> float:
    """Seconds per push of one task: each one acknowledged, so each its own fsync."""
    broker = fresh(home, Names())
    start = time.perf_counter()
    for n in range(count):
        broker.push([({"id": f"p{n}", "prompt": NOOP}, "default")])
    return (time.perf_counter() - start) / count


def durability(home: MeshHome, count: int, runs: int = 5) -> None:
    """The embedded server's appendfsync against everysec, taken in turn on one server."""
    client = fresh(home, Names()).redis
    settings = (APPENDFSYNC, "everysec")
    costs = {(s, what): [] for s in settings for what in ("push", "path")}
    try:
        for _ in range(runs):
            for setting in settings:
                client.config_set("appendfsync", setting)
                costs[setting, "push"].append(push_cost(home, count))
                costs[setting, "path"].append(overhead(home, count))
    finally:
        client.config_set("appendfsync", APPENDFSYNC)
    print(f"durability: appendfsync {APPENDFSYNC} (an acknowledged push is on disk) vs everysec, "
          f"median of {runs} runs of {count:,}, on the disk of {home.path}:")
    for what, label in (("push", "per push, one task each"), ("path", "queue path per task")):
        ours, old = (statistics.median(costs[s, what]) for s in settings)
        print(f"  {label:24s} {ours * 1000:7.3f} ms vs {old * 1000:7.3f} ms: "
              f"{ours / old:.2f}x the cost")


def main(tasks: int = 5000, dispatch_tasks: int = 1000) -> int:
    home = MeshHome(tempfile.mkdtemp(prefix="meshbench-q-"))
    server = EmbeddedRedis(home)
    server.start()
    try:
        latencies = dispatch(home, dispatch_tasks)
        print(f"dispatch latency (push -> subprocess started, idle worker, {len(latencies)} "
              f"tasks): p50 {percentile_ms(latencies, 0.5):.2f} ms, "
              f"p99 {percentile_ms(latencies, 0.99):.2f} ms (target p50 <= 10 ms)")
        per_task = statistics.median(overhead(home, 2000) for _ in range(3))
        print(f"queue-path overhead per task, no subprocess: {per_task * 1000:.3f} ms "
              "(median of 3 runs of 2,000; target <= 1 ms)")
        durability(home, 500)
        runs = {"meshtools queue-drain": [], "bare XREADGROUP loop": [], "RQ default worker": []}
        url = server.authed_url()
        for _ in range(3):
            runs["meshtools queue-drain"].append(meshtools_throughput(home, tasks))
            runs["bare XREADGROUP loop"].append(bare_throughput(home, url, tasks))
            rq = rq_throughput(home, url, tasks)
            if rq is not None:
                runs["RQ default worker"].append(rq)
        medians = {k: statistics.median(v) for k, v in runs.items() if v}
        print(f"throughput, {tasks:,} no-op tasks (sh -c true), {WORKERS} workers, median of 3:")
        for name, rate in medians.items():
            print(f"  {name:24s} {rate:8,.0f} tasks/s")
        ours = medians["meshtools queue-drain"]
        print(f"  vs bare loop: {ours / medians['bare XREADGROUP loop']:.2f}x (target >= 0.7x)")
        if "RQ default worker" in medians:
            print(f"  vs RQ:        {ours / medians['RQ default worker']:.2f}x (target >= 3x)")
        else:
            print("  RQ not installed (pip install rq): no RQ baseline")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
