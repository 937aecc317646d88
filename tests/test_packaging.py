"""What a new user meets first: the install script, the shims, man pages, completions, CI."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_has_an_up_to_date_shim():
    sys.path.insert(0, str(ROOT / "bin"))
    try:
        import _gen
    finally:
        sys.path.pop(0)
    shims = {p.name for p in (ROOT / "bin").iterdir() if not p.name.startswith("_")}
    assert shims == set(SCRIPTS)
    for name, target in SCRIPTS.items():
        shim = ROOT / "bin" / name
        assert os.access(shim, os.X_OK)
        assert shim.read_text() == _gen.render(name, target), f"run `make shims` ({name})"


def test_a_shim_runs_from_the_checkout(tmp_path, mesh_home):
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run([str(ROOT / "bin" / "coord-peers"), "--json"], env=env,
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    bad = subprocess.run([str(ROOT / "bin" / "coord-send"), "nobody", "x"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 65 and bad.stderr.startswith("coord-send: unknown peer")


def test_man_pages_match_the_help(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "man" / "gen.py"), str(tmp_path)], check=True)
    for name in SCRIPTS:
        committed = ROOT / "man" / f"{name}.1"
        assert committed.read_text() == (tmp_path / f"{name}.1").read_text(), \
            f"run `make man` ({name})"
    # meshtools(7) is written by hand but for its KEYS (the dash's key table) and SEE ALSO
    assert (ROOT / "man" / "meshtools.7").read_text() == (tmp_path / "meshtools.7").read_text()
    assert ".SH KEYS" in (tmp_path / "meshtools.7").read_text()


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_every_man_page_renders_clean_at_80_columns(locale):
    pages = sorted((ROOT / "man").glob("*.[1-9]"))
    assert len(pages) == len(SCRIPTS) + 1
    for page in pages:
        env = dict(os.environ, MANWIDTH="80", LANG=locale, LC_ALL=locale, MANPAGER="cat")
        done = subprocess.run(["man", "--warnings", "-l", str(page)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "", (page.name, done.stderr)
        too_wide = [line for line in done.stdout.splitlines() if len(line) > 80]
        assert not too_wide, (page.name, too_wide)


def test_completions_for_every_command():
    for name in SCRIPTS:
        assert (ROOT / "completions" / "bash" / name).read_text().strip()
        assert (ROOT / "completions" / "zsh" / f"_{name}").exists()
        assert (ROOT / "completions" / "fish" / f"{name}.fish").exists()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test " in readme and ci.rstrip().endswith("make test")


@pytest.mark.slow
def test_install_round_trip(tmp_path):
    prefix = tmp_path / "prefix"
    for _ in range(2):  # idempotent
        done = subprocess.run([str(ROOT / "install.sh"), "--prefix", str(prefix)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert re.search(rf"commands +{re.escape(str(prefix))}/bin \({len(SCRIPTS)}:", done.stdout)
    assert {p.name for p in (prefix / "bin").iterdir()} == set(SCRIPTS)
    assert (prefix / "share" / "man" / "man7" / "meshtools.7").exists()
    version = subprocess.run([str(prefix / "bin" / "meshctl"), "--version"],
                             capture_output=True, text=True)
    assert version.returncode == 0 and "meshctl" in version.stdout
    # every command by name with a minimal PATH and a clean environment, and its man page
    minimal = {"PATH": f"{prefix}/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    for name in SCRIPTS:
        helped = subprocess.run([name, "--help"], env=minimal, capture_output=True, text=True,
                                cwd=tmp_path)
        assert helped.returncode == 0 and "Usage:" in helped.stdout, (name, helped.stderr)
    if shutil.which("man"):
        where = subprocess.run(["man", "-w", "meshctl"], env=minimal, capture_output=True,
                               text=True)
        assert where.stdout.strip() == str(prefix / "share" / "man" / "man1" / "meshctl.1")
    said = done.stdout
    assert f'set -p fish_complete_path "{prefix}/share/fish/vendor_completions.d"' in said
    assert f'for f in "{prefix}/share"/bash-completion/completions/*; do . "$f"; done' in said
    gone = subprocess.run([str(ROOT / "install.sh"), "--prefix", str(prefix), "--uninstall"],
                          capture_output=True, text=True)
    assert gone.returncode == 0
    assert list(prefix.rglob("*")) == []  # the folders it made go too


def test_install_never_overwrites_a_file_it_did_not_place(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    theirs = prefix / "bin" / "meshctl"
    theirs.write_text("#!/bin/sh\necho someone else's\n")
    done = subprocess.run([str(ROOT / "install.sh"), "--prefix", str(prefix)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 73 and "was not installed by this script" in done.stderr
    assert theirs.read_text() == "#!/bin/sh\necho someone else's\n"


def test_install_refuses_bad_options(tmp_path):
    result = subprocess.run([str(ROOT / "install.sh"), "--frobnicate"], capture_output=True,
                            text=True)
    assert result.returncode == 64 and "unknown argument" in result.stderr


@pytest.mark.slow
def test_install_defaults_to_the_xdg_places_and_says_what_to_add(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "SHELL": "/bin/bash", "PATH": "/usr/bin:/bin"}
    env.pop("XDG_DATA_HOME", None)
    env.pop("BASH_COMPLETION_USER_DIR", None)
    done = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    data = home / ".local" / "share"
    assert (home / ".local" / "bin" / "meshctl").exists()
    assert (data / "bash-completion" / "completions" / "meshctl").exists()
    assert (data / "fish" / "vendor_completions.d" / "meshctl.fish").exists()
    assert (data / "man" / "man1" / "meshctl.1").exists()
    assert f"echo 'export PATH=\"{home}/.local/bin:$PATH\"' >> ~/.bashrc" in done.stderr
    assert "loaded on demand by bash-completion" in done.stdout
    assert f'fpath=("{data}/zsh/site-functions" $fpath)' in done.stdout
    uninstall = [str(ROOT / "install.sh"), "--uninstall"]
    assert subprocess.run(uninstall, env=env, capture_output=True).returncode == 0
    assert not (home / ".local").exists()
    # XDG_DATA_HOME moves the data, not the commands; then man needs telling
    custom = tmp_path / "data"
    env = {**env, "XDG_DATA_HOME": str(custom), "SHELL": "/usr/bin/fish"}
    moved = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert moved.returncode == 0, moved.stderr
    assert (custom / "man" / "man1" / "meshctl.1").exists()
    assert f'export MANPATH="{custom}/man:"' in moved.stdout
    assert "fish reads it by itself" in moved.stdout  # fish follows XDG_DATA_HOME
    assert f"fish_add_path '{home}/.local/bin'" in moved.stderr
    assert subprocess.run(uninstall, env=env, capture_output=True).returncode == 0
    assert not (home / ".local").exists() and not custom.exists()


def test_the_licence_is_declared_as_setuptools_wants_it():
    """`make release` builds without deprecation warnings: an SPDX string and the file."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert all((ROOT / f).is_file() for f in project["project"]["license-files"])
    assert "setuptools>=77" in project["build-system"]["requires"][0]


def test_the_lists_kept_by_hand_match_the_entry_points():
    """meshctl's SUBCOMMANDS and the package's _is_command are written by hand: every
    [project.scripts] entry must be behind a meshctl subcommand and be a command to the ^C
    guard, and every subcommand must resolve to a click command."""
    import importlib

    import click

    from meshtools import _is_command
    from meshtools.commands.meshctl import SUBCOMMANDS

    assert {name for name in SCRIPTS if not _is_command(name)} == set()
    assert not any(_is_command(name) for name in ("python3", "pytest", "bash", "meshtools"))
    umbrella = SCRIPTS["meshctl"]
    missing = {name: target for name, target in SCRIPTS.items()
               if target != umbrella and target not in SUBCOMMANDS.values()}
    assert missing == {}, "add them to SUBCOMMANDS in meshtools/commands/meshctl.py"
    for name, target in SUBCOMMANDS.items():
        module, attr = target.split(":")
        assert isinstance(getattr(importlib.import_module(module), attr), click.Command), name


def test_the_readme_commands_table_names_every_command():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## The commands\n", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([a-z][a-z-]*)", cell)}
    assert set(SCRIPTS) - {"coord"} <= named, set(SCRIPTS) - named  # coord: its coord-* ones
