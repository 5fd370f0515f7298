#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into a cache folder,
# only when they are missing. Usage: build.sh [OUTDIR] (default: bin/kube at the repo root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../bin/kube"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "kube-binaries: $out already has kube-apiserver and etcd"
  exit 0
fi
cd "$here"
start=$(date +%s)
echo "kube-binaries: building kube-apiserver and etcd into $out"
echo "kube-binaries: the first build takes about 5 minutes on 2 cores; later builds use the Go build cache"
(
  while sleep 30; do echo "kube-binaries: still building ($(( $(date +%s) - start ))s)"; done
) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
tmp=$(mktemp -d "$out/.build.XXXXXX")
go build -trimpath -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3
mv "$tmp/server" "$out/etcd"
mv "$tmp/kube-apiserver" "$out/kube-apiserver"
rmdir "$tmp"
echo "kube-binaries: done in $(( $(date +%s) - start ))s: $out/kube-apiserver, $out/etcd"
