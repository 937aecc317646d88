"""What a TAB costs: the command run as the shell's completion script runs it, whole process.

Static words (options, subcommands) must not import Redis: target <= 100 ms. Dynamic words
from files (roles, peer ids) and from Redis (task ids, dead letters): target <= 250 ms.
Median of RUNS each, interleaved.

    python bench/completion.py [RUNS]
"""

import os
import sys

from _common import median_ms, scratch_mesh, time_process

STATIC_MS, DYNAMIC_MS = 100, 250


def tab(line: str, env: dict) -> tuple[list[str], dict]:
    """argv and env that complete `line` (cursor at its end) as bash's script asks."""
    words = line.split(" ")
    name = words[0]
    var = "_" + name.upper().replace("-", "_") + "_COMPLETE"
    return [name], dict(env, COMP_WORDS=line, COMP_CWORD=str(len(words) - 1),
                        **{var: "bash_complete"})


def main(runs: int = 15) -> int:
    repo, env = scratch_mesh()
    time_process(["coord-register", "--role", "builder", "--id", "builder-1", "--pid", "1"],
                 repo, env)
    time_process(["queue-push", "--id", "groom-2026-01-01", "true"], repo, env)
    cases = {  # line: target
        "coord-peers --": STATIC_MS,
        "meshctl pe": STATIC_MS,
        "queue-results --": STATIC_MS,
        "mesh-spawn ": DYNAMIC_MS,
        "coord-send b": DYNAMIC_MS,
        "queue-results --wait ": DYNAMIC_MS,
        "queue-dead retry ": DYNAMIC_MS,
    }
    samples = {line: [] for line in cases}
    for _ in range(runs + 1):  # the first round warms byte-code and page caches
        for line in cases:
            argv, case_env = tab(line, env)
            samples[line].append(time_process(argv, repo, case_env))
    samples = {line: times[1:] for line, times in samples.items()}
    print(f"TAB completion, median of {runs} runs")
    over = 0
    for line, target in cases.items():
        ms = median_ms(samples[line])
        over += ms > target
        kind = "static" if target == STATIC_MS else "dynamic"
        print(f"  {line!r:26s} {kind:8s} {ms:7.1f} ms  (target <= {target} ms)")
    time_process(["mesh-redis", "stop"], repo, env)
    print("OK" if not over else f"{over} OVER TARGET")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
