"""Where the real Claude Code CLI is, for the tier that runs it (tests/test_real_cli.py) and
for re-recording the stand-in's fixtures (tests/fakes/record.py).

`.ci/run` installs the pinned npm package into PREFIX (a private npm prefix, kept between
runs); $MESHTOOLS_CLAUDE names another executable. Nothing here installs anything.
"""

import os
import subprocess

ENV = "MESHTOOLS_CLAUDE"
PREFIX = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                      "meshtools-claude")
RECORDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes", "recorded")


def find() -> tuple[str | None, str]:
    """(the real claude's path, its version) or (None, why it is not there)."""
    path = os.environ.get(ENV) or os.path.join(PREFIX, "node_modules", ".bin", "claude")
    if not os.access(path, os.X_OK):
        how = f"${ENV}" if os.environ.get(ENV) else "the .ci/run prefix"
        return None, (f"the real claude CLI is not installed ({how}: {path}); "
                      f"`.ci/run` installs it, or set ${ENV}")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{path} --version failed: {e}"
    if done.returncode != 0 or "Claude Code" not in done.stdout:
        return None, f"{path} --version said {done.stdout.strip() or done.stderr.strip()!r}"
    return path, done.stdout.split()[0]
