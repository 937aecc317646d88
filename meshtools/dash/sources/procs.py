"""CPU and memory of each peer's whole process tree: the registered process (a supervisor,
queue-drain, a shell), the agent CLI below it and everything that started.

CPU % is a delta between two samples, so a Sampler keeps the psutil.Process of each process
it saw (psutil checks a kept object's create time: a recycled pid is a new process) with
its CPU seconds then. A peer whose registered pid now names another process (its start
time differs from the record's) is not counted at all. RSS is summed over the tree (pages
shared between processes count once per process, as top shows them).
"""

import time

from ...core import proc


def cpu_percent(seconds: float, elapsed: float) -> float:
    """CPU seconds used over elapsed wall seconds, in per cent of one core (a tree busy on
    two cores reads 200)."""
    return round(100.0 * seconds / elapsed, 1) if elapsed > 0 else 0.0


def delta(before: float | None, now: float, created: float, since: float | None
          ) -> float | None:
    """CPU seconds a process used since the previous sample: against what it had then, or,
    for one first seen now, all of it if it started after that sample (a child born in
    between); None when that cannot be told (the peer's first sample)."""
    if before is not None:
        return max(0.0, now - before)
    if since is not None and created >= since:
        return now
    return None


def descendants(pid: int, by_parent: dict[int, list[int]]) -> list[int]:
    """Every pid below pid in a {parent: [children]} map, parents before their children."""
    found, todo = [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(0), ()):
            found.append(child)
            todo.append(child)
    return found


def parents(psutil) -> dict[int, list[int]]:
    """{parent pid: [child pids]} of every process: one pass over /proc per sample (psutil's
    children(recursive=True) makes one per peer, which with 50 peers was most of the
    dash's CPU)."""
    by_parent: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        by_parent.setdefault(p.info["ppid"], []).append(p.pid)
    return by_parent


def ours(record: dict) -> bool:
    """Whether the record's pid is still the process that registered, on this host."""
    return bool(proc.is_alive(record.get("pid"), record.get("pid_start"), record.get("host")))


class Sampler:
    """Each call: {peer id: {cpu, rss, procs}} for the live peers of this host (cpu None on
    a peer's first sample)."""

    def __init__(self):
        self._seen: dict[int, tuple] = {}  # pid -> (psutil.Process, CPU seconds then)
        self._when: tuple[float, float] | None = None  # (wall, monotonic) of the last call

    def __call__(self, peers: list[dict]) -> dict[str, dict]:
        import psutil

        wall, mono = time.time(), time.monotonic()
        since, elapsed = (None, 0.0) if self._when is None else (
            self._when[0], mono - self._when[1])
        seen, found, by_parent = {}, {}, None
        for record in peers:
            if not ours(record):
                continue
            by_parent = parents(psutil) if by_parent is None else by_parent
            usage = self._tree(psutil, record, since, seen, by_parent)
            if usage is not None:
                used, rss, count, known = usage
                cpu = cpu_percent(used, elapsed) if known and elapsed else None
                found[record["id"]] = {"cpu": cpu, "rss": rss, "procs": count}
        self._seen, self._when = seen, (wall, mono)
        return found

    def _tree(self, psutil, record: dict, since: float | None, seen: dict, by_parent: dict):
        """(CPU seconds since the last sample, RSS, processes, whether the CPU is known)
        of the tree under the record's pid, each process noted in seen; None if it is gone."""
        try:
            root = self._process(psutil, record["pid"])
        except psutil.Error:
            return None  # gone since the check
        used, rss, count, known = 0.0, 0, 0, True
        for pid in [root.pid, *descendants(root.pid, by_parent)]:
            try:
                p = root if pid == root.pid else self._process(psutil, pid)
                with p.oneshot():
                    times = p.cpu_times()
                    now_cpu, memory = times.user + times.system, p.memory_info().rss
                    created = p.create_time()
            except psutil.Error:
                continue  # exited meanwhile
            kept = self._seen.get(p.pid)
            step = delta(kept[1] if kept and kept[0] == p else None, now_cpu, created, since)
            seen[p.pid] = (p, now_cpu)
            if step is None:
                known = known and p.pid != root.pid  # an unseen child counts 0
            else:
                used += step
            rss += memory
            count += 1
        return used, rss, count, known

    def _process(self, psutil, pid: int):
        """The kept Process of pid while it names the same process, else a new one."""
        kept = self._seen.get(pid)
        if kept and kept[0].is_running():
            return kept[0]
        return psutil.Process(pid)
