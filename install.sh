#!/bin/sh
# Install meshtools from this checkout into a private venv and link its commands into the
# user's bin directory; copy the man pages and shell completions into the data directory
# (XDG: ~/.local/bin and ${XDG_DATA_HOME:-~/.local/share}; or PREFIX/bin and PREFIX/share).
# Idempotent (a second run upgrades in place), no sudo. Every path it creates is listed in a
# manifest, so that --uninstall removes exactly that. `./install.sh --help` for the options.
set -eu

me=install.sh
die() { code=$1; shift; echo "$me: $*" >&2; exit "$code"; }

usage() {
  cat <<USAGE
usage: ./install.sh [--prefix DIR] [--uninstall]

Install meshtools from this checkout (Python >= 3.11, no sudo; run it again to upgrade).

  --prefix DIR   install under DIR/bin and DIR/share instead of the XDG places:
                   BIN = ~/.local/bin, DATA = \${XDG_DATA_HOME:-~/.local/share}
                 BIN/                            the commands (links into the venv)
                 DATA/meshtools/venv             a private venv holding meshtools
                 DATA/man/man{1,7}               the man pages
                 DATA/bash-completion/completions, DATA/zsh/site-functions,
                 DATA/fish/vendor_completions.d  shell completion
  --uninstall    remove exactly what an earlier install (with the same --prefix) put there
  -h, --help     this text

environment:
  PYTHON         the interpreter to build the venv with (default: python3)
  XDG_DATA_HOME  DATA without --prefix (an absolute path; default ~/.local/share)

exit status: 0 done, 64 usage error, 69 Python or its venv module missing, or pip failed,
73 a file in the way that this script did not install, 77 the prefix is not writable,
78 Python older than 3.11
USAGE
}

prefix=
action=install
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die 64 "--prefix needs a directory (see --help)"
              prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die 64 "unknown argument '$1' (see --help)" ;;
  esac
done
# absolute DIR: DIR made absolute (against the cwd), without trailing slashes
absolute() {
  case $1 in
    /) echo / ;;
    /*) printf '%s\n' "$1" | sed 's:/*$::' ;;
    *) printf '%s/%s\n' "$PWD" "$(printf '%s\n' "$1" | sed 's:/*$::')" ;;
  esac
}
if [ -n "$prefix" ]; then
  prefix=$(absolute "$prefix")
  bindir=${prefix%/}/bin
  datadir=${prefix%/}/share
else  # XDG: the user's bin directory, and the data home (an absolute one; the spec's rule)
  [ -n "${HOME:-}" ] || die 78 "HOME is not set: pass --prefix DIR"
  bindir=$(absolute "$HOME")/.local/bin
  case ${XDG_DATA_HOME:-} in
    /*) datadir=$(absolute "$XDG_DATA_HOME") ;;
    *) datadir=$(absolute "$HOME")/.local/share ;;
  esac
fi

here=$(cd "$(dirname "$0")" && pwd -P)
[ -f "$here/pyproject.toml" ] || die 78 "$here has no pyproject.toml: run install.sh from a meshtools checkout"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/meshtools-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- uninstall

uninstall() {
  share=$datadir/meshtools
  manifest=$share/manifest
  legacy=$share/installed-files  # the manifest of install.sh before 0.1.0's release
  if [ ! -f "$manifest" ] && [ ! -f "$legacy" ]; then
    echo "$me: nothing installed in $datadir (no $manifest)" >&2
    return 0
  fi
  n=0
  cat "$manifest" "$legacy" 2>/dev/null > "$tmp/entries" || true
  while IFS= read -r line; do
    case $line in
      "d "*) echo "${line#d }" >> "$tmp/dirs"; continue ;;
      "f "*) path=${line#f } ;;
      *) path=$line ;;  # legacy: a bare path
    esac
    if [ -L "$path" ] || [ -f "$path" ]; then
      rm -f "$path"
      n=$((n + 1))
    fi
  done < "$tmp/entries"
  rm -rf "$share/venv"
  rm -f "$manifest" "$legacy"
  # Folders this script created, deepest first; a folder that is not empty (something else
  # put files there since) stays.
  if [ -f "$tmp/dirs" ]; then
    LC_ALL=C sort -ru "$tmp/dirs" | while IFS= read -r dir; do rmdir "$dir" 2>/dev/null || true; done
  fi
  # Before manifests recorded folders: tidy the ones only meshtools could have made.
  [ -f "$tmp/dirs" ] || rmdir "$share" 2>/dev/null || true
  echo "meshtools removed from $bindir and $datadir ($n files and links, and the venv)"
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi

# ---------------------------------------------------------------- install

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 \
  || die 69 "'$python' not found: install Python >= 3.11 or set PYTHON=/path/to/python3"
pyversion=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) \
  || die 69 "'$python' does not run"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die 78 "meshtools needs Python >= 3.11, but $python is $pyversion (set PYTHON=/path/to/python3.11 or newer)"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
  || die 69 "$python $pyversion lacks the venv module (Debian/Ubuntu: apt-get install python3-venv)"

# mkdirs DIR: create DIR and its missing parents, recording each one created in the manifest.
mkdirs() {
  [ -d "$1" ] && return 0
  mkdirs "$(dirname "$1")"
  if ! mkdir "$1" 2>/dev/null && [ ! -d "$1" ]; then
    [ -w "$(dirname "$1")" ] || die 77 "cannot create $1: permission denied (no sudo needed: choose a --prefix you own)"
    die 73 "cannot create $1"
  fi
  [ -n "${manifest:-}" ] && [ -f "$manifest" ] && echo "d $1" >> "$manifest"
  echo "$1" >> "$tmp/created"
}

share=$datadir/meshtools
venv=$share/venv
manifest=$share/manifest
mkdirs "$share"
[ -f "$manifest" ] || : > "$manifest"
mkdirs "$bindir"
legacy=$share/installed-files
if [ -f "$legacy" ]; then  # adopt an older install's list of files
  sed 's/^/f /' "$legacy" >> "$manifest"
  rm -f "$legacy"
fi
if [ -f "$tmp/created" ]; then  # the folders made before the manifest existed
  sed 's/^/d /' "$tmp/created" >> "$manifest"
fi
cp "$manifest" "$tmp/old-manifest"

# The venv: reused when it runs a Python >= 3.11 (and the one PYTHON names, if set), else
# rebuilt from scratch.
venv_fits() {
  [ -x "$venv/bin/python" ] || return 1
  have=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 11))' 2>/dev/null) || return 1
  [ -z "${PYTHON:-}" ] || [ "$have" = "${pyversion%.*}" ]
}
if ! venv_fits; then
  clear=
  [ -e "$venv" ] && clear=--clear
  "$python" -m venv $clear "$venv" || die 69 "could not create the venv $venv"
fi
# Build from a clean copy of the checkout: setuptools never prunes its build/ folder, so an
# in-tree build could ship a module since deleted; and the checkout stays untouched.
echo "installing meshtools from $here into $venv ..."
mkdir "$tmp/src"
(cd "$here" && tar -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
   --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache .) | tar -xf - -C "$tmp/src"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$tmp/src" \
  || die 69 "pip could not install meshtools (see its messages above; it needs the package index or a wheel cache)"

# The commands are the console scripts of the installed distribution, as pip made them.
"$venv/bin/python" -c '
from importlib.metadata import distribution
for ep in sorted(distribution("meshtools").entry_points, key=lambda e: e.name):
    if ep.group == "console_scripts":
        print(ep.name)' > "$tmp/commands" || die 69 "meshtools is not importable from $venv"
version=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("meshtools"))')

# The plan: one line per file to place, "KIND SOURCE DEST" (KIND: link or copy).
tab=$(printf '\t')
: > "$tmp/plan"
plan() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$tmp/plan"; }
while IFS= read -r name; do
  [ -x "$venv/bin/$name" ] || die 69 "pip did not create $venv/bin/$name"
  plan link "$venv/bin/$name" "$bindir/$name"
done < "$tmp/commands"
for page in "$here"/man/*.[1-9]; do
  [ -f "$page" ] || continue
  plan copy "$page" "$datadir/man/man${page##*.}/${page##*/}"
done
for pair in "bash:bash-completion/completions" "zsh:zsh/site-functions" "fish:fish/vendor_completions.d"; do
  for file in "$here/completions/${pair%%:*}"/*; do
    [ -f "$file" ] || continue
    plan copy "$file" "$datadir/${pair#*:}/${file##*/}"
  done
done

# Refuse before touching anything if a path is taken by something this script did not put
# there (a pip --user install, another tool's command of the same name).
ours() {  # ours KIND SOURCE DEST
  [ -e "$3" ] || [ -L "$3" ] || return 0
  grep -Fqx "f $3" "$tmp/old-manifest" && return 0
  if [ "$1" = link ]; then
    [ -L "$3" ] && [ "$(readlink "$3")" = "$2" ]
  else
    [ -f "$3" ] && [ ! -L "$3" ] && cmp -s "$2" "$3"
  fi
}
while IFS="$tab" read -r kind src dest; do
  ours "$kind" "$src" "$dest" \
    || die 73 "$dest exists and was not installed by this script: move it away and run again"
done < "$tmp/plan"

# Place the files; each goes into the manifest before it exists, so that an interrupted
# install can still be uninstalled.
while IFS="$tab" read -r kind src dest; do
  mkdirs "$(dirname "$dest")"
  grep -Fqx "f $dest" "$manifest" || echo "f $dest" >> "$manifest"
  rm -f "$dest.tmp.$$"
  if [ "$kind" = link ]; then
    ln -s "$src" "$dest.tmp.$$"
  else
    cp "$src" "$dest.tmp.$$"
    chmod 644 "$dest.tmp.$$"
  fi
  mv -f "$dest.tmp.$$" "$dest"
done < "$tmp/plan"

# What an earlier install placed and this one did not (a command since renamed) goes.
cut -f3 "$tmp/plan" | sed 's/^/f /' > "$tmp/placed"
stale=0
while IFS= read -r line; do
  case $line in
    "f "*) grep -Fqx "$line" "$tmp/placed" && continue
           path=${line#f }
           if [ -L "$path" ] || [ -f "$path" ]; then rm -f "$path"; stale=$((stale + 1)); fi ;;
  esac
done < "$tmp/old-manifest"
{ grep '^d ' "$manifest" | sort -u; cat "$tmp/placed"; } > "$tmp/manifest"
mv -f "$tmp/manifest" "$manifest"

ncommands=$(wc -l < "$tmp/commands" | tr -d ' ')
xdg_data=${XDG_DATA_HOME:-${HOME:-}/.local/share}
user_shell=$(basename "${SHELL:-sh}")
echo "meshtools $version installed:"
echo "  commands     $bindir ($ncommands: $(tr '\n' ' ' < "$tmp/commands" | sed 's/ $//'))"
if [ "$datadir" = "$(dirname "$bindir")/share" ]; then
  echo "  man pages    $datadir/man (man meshctl: man finds them while $bindir is on PATH)"
else
  echo "  man pages    $datadir/man (for man meshctl: export MANPATH=\"$datadir/man:\")"
fi
echo "  completions  (start a new shell to use them)"
if [ "$datadir" = "$xdg_data" ] && [ -z "${BASH_COMPLETION_USER_DIR:-}" ]; then
  echo "    bash       $datadir/bash-completion/completions (loaded on demand by bash-completion)"
else
  echo "    bash       $datadir/bash-completion/completions; add to ~/.bashrc:"
  echo "                 for f in \"$datadir\"/bash-completion/completions/*; do . \"\$f\"; done"
fi
echo "    zsh        $datadir/zsh/site-functions; add to ~/.zshrc before compinit:"
echo "                 fpath=(\"$datadir/zsh/site-functions\" \$fpath)"
if [ "$datadir" = "$xdg_data" ]; then
  echo "    fish       $datadir/fish/vendor_completions.d (fish reads it by itself)"
else
  echo "    fish       $datadir/fish/vendor_completions.d; add to ~/.config/fish/config.fish:"
  echo "                 set -p fish_complete_path \"$datadir/fish/vendor_completions.d\""
fi
[ "$stale" -eq 0 ] || echo "  removed $stale file(s) an earlier install placed and this one does not"
if [ -n "$prefix" ]; then
  echo "  uninstall    $here/install.sh --prefix $prefix --uninstall"
else
  echo "  uninstall    $here/install.sh --uninstall"
fi
case ":${PATH:-}:" in
  *":$bindir:"*|*":$bindir/:"*) ;;
  *) case $user_shell in
       bash) line="echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.bashrc" ;;
       zsh) line="echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.zshrc" ;;
       fish) line="fish_add_path '$bindir'" ;;
       *) line="echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.profile" ;;
     esac
     echo "$me: $bindir is not on your PATH; for $user_shell, run:" >&2
     echo "  $line" >&2 ;;
esac
