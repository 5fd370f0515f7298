#!/usr/bin/env bash
# Builds the ghostunnel pinned in go.mod here, once, into a cache outside
# the repository, and prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(cd "$here" && go list -m -f "{{.Version}}" github.com/ghostunnel/ghostunnel)
cache=${RELAYTLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relaytls}
out=$cache/ghostunnel-$version/ghostunnel
if [ ! -x "$out" ]; then
  echo "building ghostunnel $version with cgo into $out (once; a few minutes)" >&2
  mkdir -p "$(dirname "$out")"
  (cd "$here" && CGO_ENABLED=1 go build -trimpath -o "$out.tmp" github.com/ghostunnel/ghostunnel)
  mv "$out.tmp" "$out"
fi
echo "$out"
