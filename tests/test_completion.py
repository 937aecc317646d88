"""TAB completion as a shell runs it: the checked-in scripts, sourced by bash (COMPREPLY),
zsh and fish, offering the commands' words and the mesh's own (roles, peers, task ids)."""

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from .helpers import redis_of

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def bash_complete(line: str) -> list[str]:
    """COMPREPLY for `line` (the cursor at its end), through the function that `complete -p`
    names for the command, as bash calls it on a TAB."""
    words = line.split(" ")
    name = words[0]
    script = f"""
source {shlex.quote(str(ROOT / "completions" / "bash" / name))}
spec=$(complete -p {name}) || exit 3
fn=${{spec##*-F }}; fn=${{fn%% *}}
COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
"$fn" {name} {shlex.quote(words[-1])} {shlex.quote(words[-2] if len(words) > 1 else "")}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_static_words():
    assert bash_complete("coord-peers --ro") == ["--role"]
    assert "peers" in bash_complete("meshctl pe")
    assert bash_complete("queue-dead re") == ["retry"]


def test_roles_for_role_options_and_arguments(mesh_home):
    assert bash_complete("mesh-spawn bu") == ["builder"]
    assert bash_complete("queue-push --role gr") == ["groomer"]
    assert "security" in bash_complete("meshctl spawn ")
    (mesh_home).mkdir(parents=True, exist_ok=True)
    (mesh_home / "roles.toml").write_text(
        '[roles.docs]\ndescription = "d"\nmodel = "haiku"\ncharter = "c"\nprompt = "p"\n')
    assert bash_complete("coord-peers --role do") == ["docs"]  # the mesh's own roles too


def test_peer_ids_from_the_registry(run, repo, tmp_path):
    run("coord-register", "--role", "builder", "--id", "builder-7", "--pid", str(os.getpid()),
        check=0)
    assert bash_complete("coord-send bui") == ["builder", "builder-7"]
    assert bash_complete("coord-heartbeat --as b") == ["builder-7"]
    assert bash_complete("meshctl send a") == ["all", "anchor"]
    # --home before the subcommand, or on it, names another mesh: none of its peers
    other = tmp_path / "other-home"
    assert bash_complete(f"meshctl --home {other} send builder-") == []
    assert bash_complete(f"coord-send --home {other} builder-") == []


def test_task_ids_and_dead_letter_ids_from_redis(run):
    run("queue-push", "--id", "groom-2026-01-02", "true", check=0)
    run("queue-push", "--id", "flaky", "--max-attempts", "1", "false", check=0)
    run("queue-drain", "--burst", check=0)
    assert bash_complete("queue-results --wait groom") == ["groom-2026-01-02"]
    assert bash_complete("meshctl results --task ") == ["flaky", "groom-2026-01-02"]
    assert bash_complete("mesh-pick gr") == ["groom-2026-01-02"]
    assert bash_complete("queue-dead retry ") == ["flaky"]


def test_queue_names_without_and_with_redis(mesh_home):
    assert "builder" in bash_complete("queue-drain --queue ")  # the roles' queues: no Redis
    # a queue no role drains, made by hand as any producer could
    redis_of(mesh_home).xadd("tasks:queue:adhoc", {"task": '{"id": "y", "prompt": "true"}'})
    assert bash_complete("queue-drain --queue ad") == ["adhoc"]


def test_redis_down_offers_nothing_quietly(mesh_home):
    # No mesh Redis runs (and a TAB never starts one): no words, no message, no traceback.
    assert bash_complete("queue-results --wait ") == []
    assert not (mesh_home / "redis" / "redis.pid").exists()


def test_repository_paths_for_file_lock():
    env = dict(os.environ, COMP_WORDS="file-lock acquire cr", COMP_CWORD="2",
               _FILE_LOCK_COMPLETE="bash_complete")
    done = subprocess.run(["file-lock"], env=env, capture_output=True, text=True)
    assert done.stdout.splitlines() == ["file,cr"]  # bash's own file completion (-o default)


def test_generated_completions_are_current(tmp_path):
    subprocess.run(["sh", str(ROOT / "completions" / "gen.sh"), str(tmp_path)], check=True,
                   capture_output=True)
    for shell, pattern in (("bash", "{}"), ("zsh", "_{}"), ("fish", "{}.fish")):
        made = sorted(p.name for p in (tmp_path / shell).iterdir())
        assert made == sorted(pattern.format(n) for n in SCRIPTS)
        for name in made:
            assert (ROOT / "completions" / shell / name).read_text() == \
                (tmp_path / shell / name).read_text(), f"run `make completions` ({name})"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (.ci/run adds it)")
def test_zsh_files_load(tmp_path):
    loads = "autoload -U compinit && compinit -u -d {}/zcompdump\n".format(tmp_path)
    loads += "".join(f"source {shlex.quote(str(p))} || exit 1\n"
                     for p in sorted((ROOT / "completions" / "zsh").iterdir()))
    loads += "(( $+functions[_meshctl_completion] )) || exit 2\n"
    done = subprocess.run(["zsh", "-f", "-c", loads], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.skipif(shutil.which("fish") is None,
                    reason="fish is not installed (.ci/run adds it)")
def test_fish_files_load_and_complete(tmp_path):
    loads = "".join(f"source {shlex.quote(str(p))}; or exit 1\n"
                    for p in sorted((ROOT / "completions" / "fish").iterdir()))
    loads += "complete -C'mesh-spawn bu'\n"
    done = subprocess.run(["fish", "--no-config", "-c", loads], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split() == ["builder"]


def test_words_from_files_never_import_redis():
    for line in ("queue-results --", "mesh-spawn b", "coord-send b"):
        words = line.split(" ")
        var = "_" + words[0].upper().replace("-", "_") + "_COMPLETE"
        env = dict(os.environ, COMP_WORDS=line, COMP_CWORD=str(len(words) - 1),
                   PYTHONPROFILEIMPORTTIME="1", **{var: "bash_complete"})
        done = subprocess.run([words[0]], env=env, capture_output=True, text=True)
        assert done.stdout and not re.search(r"\|\s+redis(\.|$)", done.stderr, re.M), line
