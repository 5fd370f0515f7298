#!/usr/bin/env bash
# Fails when the committed deepcopy code, CRDs or RBAC differ from what
# controller-gen makes of the current sources. Usage: verify-generated.sh CONTROLLER_GEN
set -euo pipefail
gen=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$gen" object paths=./api/... output:object:stdout > "$tmp/deepcopy.go"
"$gen" crd paths=./api/... output:crd:dir="$tmp/crds"
"$gen" rbac:roleName=relay-issuer paths=./issuer/... output:rbac:dir="$tmp/rbac"
stale=0
diff -u api/v1alpha1/zz_generated.deepcopy.go "$tmp/deepcopy.go" || stale=1
diff -ru deploy/crds "$tmp/crds" || stale=1
diff -u deploy/rbac/role.yaml "$tmp/rbac/role.yaml" || stale=1
if [ "$stale" = 1 ]; then
  echo "generated files are stale: run 'make generate manifests' and commit the result" >&2
  exit 1
fi
echo "generated files are up to date"
