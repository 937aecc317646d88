#!/bin/sh
# Generate bash, zsh and fish completion for every command with click's own completion
# support (`make completions`). The commands must be on PATH.
set -eu
out=${1:-$(dirname "$0")}
here=$(cd "$(dirname "$0")/.." && pwd)
commands=$(python3 - "$here/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["scripts"]))
PY
)
mkdir -p "$out/bash" "$out/zsh" "$out/fish"
for name in $commands; do
  var="_$(echo "$name" | tr 'a-z-' 'A-Z_')_COMPLETE"
  env "$var=bash_source" "$name" > "$out/bash/$name"
  env "$var=zsh_source" "$name" > "$out/zsh/_$name"
  env "$var=fish_source" "$name" > "$out/fish/$name.fish"
done
echo "completions for $(echo $commands | wc -w) commands in $out/{bash,zsh,fish}"
