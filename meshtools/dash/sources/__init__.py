"""The dash's data sources: procs (CPU and memory of each peer's process tree), gitstate
(unpicked commits and a conflict forecast per role), gpu (NVML samples and history),
services (configured health checks and the mesh's Redis), offload (LLM endpoints).
Each returns plain, JSON-serialisable data; the collector runs them."""


def parallel(fn, items: list) -> list:
    """[fn(item) ...] run side by side, in order: checks that each wait out their own
    timeout take as long as the slowest, not the sum."""
    if len(items) < 2:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(items), 16)) as pool:
        return list(pool.map(fn, items))
