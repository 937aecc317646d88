#!/usr/bin/env python3
"""Re-record tests/fakes/recorded/: what the real Claude Code CLI prints, run with
meshtools' own command line (executors.claude.claude_argv, the builder role) against the
local Messages API stand-in (tests/anthropic_api.py), one scripted case each.

    .venv/bin/python tests/fakes/record.py            # every case (about a minute)
    .venv/bin/python tests/fakes/record.py max_turns  # just these

Each case's stdout is kept verbatim as NAME.jsonl (its scratch folder written as
/tmp/realcli so a re-recording diffs only where the CLI changed); index.json has each case's
exit code, its command line (after `claude`), the CLI version and what the case is. The fast tests read these files
(tests/test_recorded.py) and the stand-in CLI replays them (`@replay NAME`, tests/fakes/claude).
Needs the real CLI (see tests/realcli.py: `.ci/run` installs it).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from meshtools.core import roles  # noqa: E402
from meshtools.executors.claude import claude_argv  # noqa: E402
from tests import anthropic_api as api  # noqa: E402
from tests import realcli  # noqa: E402

SCRATCH = "/tmp/realcli"  # what the scratch folder is written as in the recordings
RESETS_AT = 1796680800  # a fixed window end, so the recorded text does not move
DENY_HOOK = ("echo 'file-lock: crates/cli is not locked by you; run file-lock acquire "
             "crates/cli' >&2; exit 2")


def _subagent(body):
    """The parent launches one background subagent; it writes a file; both end in text."""
    if "SUBTASK" in api.said(body):
        return (api.tool("Write", file_path=os.path.join(_cwd(body), "from-sub.txt"),
                         content="sub\n") if api.turn(body) == 1 else api.text("sub done"))
    if api.turn(body) == 1:
        return api.tool("Agent", description="helper", prompt="SUBTASK: write from-sub.txt",
                        subagent_type="general-purpose", run_in_background=True)
    return api.text("main done")


def _cwd(body) -> str:
    """The run's working directory, which the CLI tells the model in a system message."""
    found = re.search(r"Primary working directory: ([^\\\n\"]+)", json.dumps(body))
    assert found, "no working directory in the request"
    return found.group(1).strip()


def cases():
    """name -> (what it is, replies, default reply, login, extra env, role changes, argv
    additions, a PreToolUse hook or None). Paths in replies are relative to the case's cwd
    ('{cwd}' is filled in)."""
    bash = [api.tool("Bash", command=f"echo turn {n}", description=f"turn {n}")
            for n in range(1, 6)]
    return {
        "success_tools": ("a Write and a Bash call, then text: exit 0",
                          [api.tools(("Write", {"file_path": "{cwd}/notes.txt",
                                                "content": "hello\n"}),
                                     preface="Writing the notes."),
                           api.tool("Bash", command="cat notes.txt", description="show"),
                           api.text("Wrote notes.txt.")],
                          None, "api_key", {}, {}, [], None),
        "hook_denied": ("a PreToolUse hook exits 2 on the Write: denied, run goes on, exit 0",
                        [api.tool("Write", file_path="{cwd}/crates/cli/x.rs", content="x\n"),
                         api.text("The lock gate refused crates/cli.")],
                        None, "api_key", {}, {}, [], DENY_HOOK),
        "auth_401": ("the API refuses the key (401)", [],
                     api.error(401, "authentication_error", "invalid x-api-key"),
                     "api_key", {"CLAUDE_CODE_MAX_RETRIES": "1"}, {}, [], None),
        "api_key_429": ("API key, a 429 without unified headers, retried (2 retries here)",
                        [], api.rate_limited(False), "api_key",
                        {"CLAUDE_CODE_MAX_RETRIES": "2"}, {}, [], None),
        "api_key_429_unified": ("API key, a 429 with the subscription headers: they never "
                                "reach the stream", [], api.rate_limited(True, RESETS_AT),
                                "api_key", {"CLAUDE_CODE_MAX_RETRIES": "2"}, {}, [], None),
        "subscription_429_rejected": ("OAuth login, a 429 with unified headers: the 5-hour "
                                      "window is spent (resetsAt), no retry",
                                      [], api.rate_limited(True, RESETS_AT), "subscription",
                                      {}, {}, [], None),
        "subscription_429_plain": ("OAuth login, a 429 without unified headers: not the "
                                   "usage limit (1 retry here)", [], api.rate_limited(False),
                                   "subscription", {"CLAUDE_CODE_MAX_RETRIES": "1"}, {}, [],
                                   None),
        "overloaded_529": ("529 on every request until the retries run out (2 here)", [],
                           api.overloaded(), "api_key", {"CLAUDE_CODE_MAX_RETRIES": "2"}, {},
                           [], None),
        "max_turns": ("--max-turns=2 with a model that keeps calling tools", bash, None,
                      "api_key", {}, {}, ["--max-turns=2"], None),
        "max_budget": ("the role's max_budget_usd (0.001) spent after the first turn", bash,
                       None, "api_key", {}, {"max_budget_usd": 0.001}, [], None),
        "async_subagent": ("a background subagent: two system/init and two result lines",
                           [], _subagent, "api_key", {}, {}, [], None),
    }


def record(claude: str, name: str, case, out_dir: str) -> dict:
    about, replies, default, login, env_extra, role_changes, extra, hook = case
    scratch = tempfile.mkdtemp(prefix="realcli-")
    try:
        cwd = os.path.join(scratch, "project")
        os.makedirs(os.path.join(cwd, "crates", "cli"))
        if hook:
            os.makedirs(os.path.join(cwd, ".claude"))
            with open(os.path.join(cwd, ".claude", "settings.local.json"), "w") as f:
                json.dump({"hooks": {"PreToolUse": [{"matcher": ".*", "hooks": [
                    {"type": "command", "command": hook, "timeout": 30}]}]}}, f)
        role = roles.load()["builder"]._replace(**role_changes)
        argv = claude_argv(role, command=[claude], session_id=None) + extra
        with api.Server() as server:
            server.script(*[_fill(r, cwd) for r in replies])
            if default is not None:
                server.default = default
            env = api.cli_env(server, os.path.join(scratch, "home"), login=login)
            env.update(env_extra, TZ="UTC")
            done = subprocess.run(argv, input="Do the task.", capture_output=True, text=True,
                                  env=env, cwd=cwd, timeout=300)
        text = done.stdout.replace(scratch, SCRATCH)
        with open(os.path.join(out_dir, name + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(text)
        return {"exit": done.returncode, "about": about, "argv": argv[1:]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fill(reply, cwd):
    for block in reply.blocks:
        if block.get("type") == "tool_use":
            block["input"] = {k: v.replace("{cwd}", cwd) if isinstance(v, str) else v
                              for k, v in block["input"].items()}
    return reply


def main(names: list[str]) -> int:
    claude, version = realcli.find()
    if claude is None:
        print(f"record: {version}", file=sys.stderr)
        return 69
    every = cases()
    unknown = [n for n in names if n not in every]
    if unknown:
        print(f"record: no case {', '.join(unknown)} (cases: {', '.join(every)})",
              file=sys.stderr)
        return 64
    os.makedirs(realcli.RECORDED, exist_ok=True)
    index_path = os.path.join(realcli.RECORDED, "index.json")
    index = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    for name in names or every:
        started = time.monotonic()
        index[name] = {**record(claude, name, every[name], realcli.RECORDED),
                       "claude_code_version": version}
        print(f"{name}: exit {index[name]['exit']} ({time.monotonic() - started:.1f}s)")
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(index.items())), f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
