#!/usr/bin/env bash
# Fails when the committed deepcopy code, CRDs, RBAC or protobuf/gRPC Go code
# differ from what controller-gen and buf (with the pinned protoc plugins in
# PLUGIN_DIR) make of the current sources, or when the files deploy/render's
# generator derives from them (the chart's CRD copies and CRD templates, its
# RBAC copies, the chart README's values table, the profiles) are stale.
# Usage: verify-generated.sh CONTROLLER_GEN BUF PLUGIN_DIR
set -euo pipefail
gen=$1
buf=$2
plugins=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$gen" object paths=./api/... output:object:stdout > "$tmp/deepcopy.go"
"$gen" crd paths=./api/... output:crd:dir="$tmp/crds"
"$gen" rbac:roleName=relay-issuer paths=./issuer/... output:rbac:dir="$tmp/rbac"
PATH="$plugins:$PATH" "$buf" generate -o "$tmp/proto"
stale=0
diff -u api/v1alpha1/zz_generated.deepcopy.go "$tmp/deepcopy.go" || stale=1
diff -ru deploy/crds "$tmp/crds" || stale=1
diff -u deploy/rbac/role.yaml "$tmp/rbac/role.yaml" || stale=1
# Every file buf makes must be committed as made, and every committed
# .pb.go must still be made (its .proto may have gone).
proto_stale=0
while IFS= read -r f; do
  f=${f#"$tmp/proto/"}
  if [[ ! -f $f ]]; then
    echo "$f: generated but missing"; proto_stale=1
  else
    diff -u "$f" "$tmp/proto/$f" || proto_stale=1
  fi
done < <(find "$tmp/proto" -type f -name '*.go' | sort)
while IFS= read -r f; do
  [[ -f $tmp/proto/$f ]] || { echo "$f: committed but no longer generated"; proto_stale=1; }
done < <(git ls-files '*.pb.go')
# The generator reads the committed deploy/crds and deploy/rbac, so it is
# checked against them; a stale deploy/crds is reported above.
(cd deploy/render && go run ./cmd/gen -check) || stale=1
if [ "$stale" = 1 ]; then
  echo "generated files are stale: run 'make generate manifests' and commit the result" >&2
fi
if [ "$proto_stale" = 1 ]; then
  echo "generated protobuf/gRPC code is stale: run 'make generate-proto' and commit the result" >&2
fi
if [ "$stale" = 1 ] || [ "$proto_stale" = 1 ]; then
  exit 1
fi
echo "generated files are up to date"
