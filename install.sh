#!/bin/sh
# Install meshtools from this checkout into a private venv under PREFIX, with its commands
# linked into PREFIX/bin. Idempotent; no sudo. `./install.sh --help` for the options.
set -eu

usage() {
  cat <<USAGE
usage: ./install.sh [--prefix DIR] [--uninstall]

  --prefix DIR   install under DIR (default: ~/.local): commands in DIR/bin, the venv in
                 DIR/share/meshtools/venv, man pages in DIR/share/man, shell completions
                 in DIR/share/{bash-completion,zsh,fish}
  --uninstall    remove exactly what an earlier install put there
  PYTHON=...     the interpreter to build the venv with (default: python3, >= 3.11)
USAGE
}

prefix="${HOME}/.local"
action=install
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 64; }
              prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
share="$prefix/share/meshtools"
venv="$share/venv"
manifest="$share/installed-files"

uninstall() {
  if [ ! -f "$manifest" ]; then
    echo "install.sh: nothing installed under $prefix" >&2
    exit 0
  fi
  while IFS= read -r path; do
    if [ -L "$path" ] || [ -f "$path" ]; then
      rm -f "$path"
      dir=$(dirname "$path")  # remove the folders left empty, never above the prefix
      while [ "$dir" != "$prefix" ] && rmdir "$dir" 2>/dev/null; do dir=$(dirname "$dir"); done
    fi
  done < "$manifest"
  rm -rf "$share"
  rmdir "$prefix/share" 2>/dev/null || true
  echo "meshtools removed from $prefix"
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || { echo "install.sh: $python not found" >&2; exit 69; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install.sh: meshtools needs Python >= 3.11 ($python is older)" >&2; exit 78; }

mkdir -p "$share" "$prefix/bin"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$here"

: > "$manifest.new"
link() {  # link TARGET LINK, recording LINK in the manifest
  mkdir -p "$(dirname "$2")"
  ln -sf "$1" "$2"
  echo "$2" >> "$manifest.new"
}

commands=$("$venv/bin/python" - "$here/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["scripts"]))
PY
)
for name in $commands; do
  link "$venv/bin/$name" "$prefix/bin/$name"
done
for page in "$here"/man/*.[1-8]; do
  [ -e "$page" ] || continue
  link "$page" "$prefix/share/man/man${page##*.}/$(basename "$page")"
done
for file in "$here"/completions/bash/*; do
  [ -e "$file" ] && link "$file" "$prefix/share/bash-completion/completions/$(basename "$file")"
done
for file in "$here"/completions/zsh/*; do
  [ -e "$file" ] && link "$file" "$prefix/share/zsh/site-functions/$(basename "$file")"
done
for file in "$here"/completions/fish/*; do
  [ -e "$file" ] && link "$file" "$prefix/share/fish/vendor_completions.d/$(basename "$file")"
done
mv "$manifest.new" "$manifest"

echo "meshtools installed: commands in $prefix/bin ($(echo $commands | wc -w) of them), venv in $venv"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add: export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
