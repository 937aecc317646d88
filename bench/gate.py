"""How long the lock gate (`file-lock check --hook`) takes to decide, worst inputs included.

A hook that outlives its timeout (30 s) lets the call through, so every input must be
decided in well under a second. Each case is one whole `file-lock check --hook` process:

  a 10 MB MultiEdit repeating a held path (denied: over the input cap)
  a MultiEdit just under the caps repeating a held path (allowed: one path resolved)
  an MCP call with a 10 MB `paths` list (denied: over the cap)
  an MCP call naming the most distinct paths the gate checks, in a held scope (allowed)
  an MCP call with nearly the most values the gate walks, all distinct words (allowed)
  a plain Edit in a held scope (allowed), and a read-only role's Bash line (allowed)

    python bench/gate.py [TRIALS]
"""

import json
import os
import subprocess
import sys
import time

from _common import median_ms, run, scratch_mesh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from meshtools.core.errors import BadInput  # noqa: E402
from meshtools.locks import gate  # noqa: E402


def hook_input(tool: str, tool_input: dict, cwd: str) -> str:
    return json.dumps({"hook_event_name": "PreToolUse", "tool_name": tool, "cwd": cwd,
                       "tool_input": tool_input})


def cases(repo: str) -> list[tuple[str, str, str, int]]:
    held = os.path.join(repo, "crates/core/src/lib.rs")
    edit = {"file_path": held, "old_string": "x", "new_string": "y"}
    per_edit = len(json.dumps(edit)) + 2
    under_cap = min((gate.MAX_INPUT_BYTES - 1000) // per_edit,
                    (gate.MAX_VALUES - 10) // (len(edit) + 1))  # its values and itself
    return [
        ("10 MB MultiEdit, one held path repeated", "b1",
         hook_input("MultiEdit", {"file_path": held,
                                  "edits": [edit] * (10_000_000 // per_edit)}, repo), 2),
        (f"MultiEdit just under the caps, {under_cap:,} repeats", "b1",
         hook_input("MultiEdit", {"file_path": held, "edits": [edit] * under_cap}, repo), 0),
        ("MCP call, 10 MB paths list", "b1",
         hook_input("mcp__fs__write", {"paths": [held] * (10_000_000 // len(held))}, repo), 2),
        (f"MCP call, {gate.MAX_PATHS} distinct held paths", "b1",
         hook_input("mcp__fs__write", {"paths": [os.path.join(repo, f"crates/core/src/{n}.rs")
                                                 for n in range(gate.MAX_PATHS)]}, repo), 0),
        (f"MCP call, {gate.MAX_VALUES - 10:,} distinct words", "b1",
         hook_input("mcp__db__query", {"words": [f"w{n}" for n in range(gate.MAX_VALUES - 10)]},
                    repo), 0),
        ("Edit in a held scope", "b1", hook_input("Edit", edit, repo), 0),
        ("read-only Bash line", "s1",
         hook_input("Bash", {"command": "git log --oneline | head -5; grep -rn x src"}, repo),
         0),
    ]


def pure(stdin: str, repo: str, trials: int) -> list[float]:
    """The pure half alone (parse, walk, distinct paths): the process start-up and the
    path resolutions are the rest."""
    samples, names = [], set(os.listdir(repo))
    for _ in range(trials):
        start = time.perf_counter()
        try:
            gate.write_paths(gate.parse_call(stdin.encode()), exists=names.__contains__)
        except BadInput:
            pass
        samples.append(time.perf_counter() - start)
    return samples


def main(trials: int = 5) -> int:
    repo, env = scratch_mesh()
    keeper = subprocess.Popen(["sleep", "600"])
    try:
        for role, peer in (("builder", "b1"), ("security", "s1")):
            run(["coord-register", "--role", role, "--id", peer, "--pid", str(keeper.pid)],
                env, repo)
        run(["file-lock", "acquire", "-n", "--as", "b1", "--pid", str(keeper.pid),
             "crates/core"], env, repo)
        for name, peer, stdin, expected in cases(repo):
            samples = []
            for _ in range(trials):
                start = time.perf_counter()
                done = subprocess.run(["file-lock", "check", "--hook"], cwd=repo, input=stdin,
                                      env=dict(env, MESH_SESSION=peer), text=True,
                                      capture_output=True)
                samples.append(time.perf_counter() - start)
                assert done.returncode == expected, (name, done.returncode, done.stderr)
            verdict = "denied" if expected else "allowed"
            print(f"{name} ({len(stdin) / 1e6:.1f} MB, {verdict}): whole process median "
                  f"{median_ms(samples):.0f} ms, max {max(samples) * 1000:.0f} ms; "
                  f"reading it in-process {median_ms(pure(stdin, repo, trials)):.1f} ms "
                  "(target well under 1000 ms; the hook's timeout is 30 s)")
    finally:
        keeper.kill()
        keeper.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(*[int(a) for a in sys.argv[1:2]]))
