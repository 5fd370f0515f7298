#!/usr/bin/env bash
# Builds the relaytls images (relay-issuer, relay-sidecar, relayctl, relayapp)
# from the Dockerfile with no registry: the binaries are built static on the
# host and handed to `docker build` in a small context with a passwd/group, the
# CA bundle and /tmp, so the default FROM scratch needs nothing pulled.
# Usage: hack/images.sh [name ...]   (default: the four relaytls images; also cert-manager-controller)
# Env:   IMAGE_REGISTRY (ghcr.io/relaytls), IMAGE_TAG (git describe),
#        IMAGE_BASE (scratch; e.g. gcr.io/distroless/static-debian12:nonroot),
#        GOARCH (the host's), CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
registry=${IMAGE_REGISTRY:-ghcr.io/relaytls}
tag=${IMAGE_TAG:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
base=${IMAGE_BASE:-scratch}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
arch=${GOARCH:-$(go env GOARCH)}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(relay-issuer relay-sidecar relayctl relayapp)

die() { echo "images: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || die "Docker is not reachable (docker info failed). Install it (Debian: apt-get install docker.io) and start the daemon (dockerd &, or systemctl start docker)."
[[ -s $ca ]] || die "no CA bundle at $ca (Debian: apt-get install ca-certificates), or set CA_BUNDLE"

pkg_of() {
  case $1 in
    relay-issuer) echo ./issuer ;;
    relay-sidecar) echo ./relay-sidecar ;;
    relayctl) echo ./relayctl ;;
    relayapp) echo ./e2e/relayapp/cmd/relayapp ;;
    cert-manager-controller) echo ./hack/images/cert-manager/controller ;;
    *) die "unknown image $1 (images: relay-issuer relay-sidecar relayctl relayapp cert-manager-controller)" ;;
  esac
}

ctx=$(mktemp -d "${TMPDIR:-/tmp}/relaytls-images.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
install -m0644 "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
cp Dockerfile "$ctx/Dockerfile"

t0=$(date +%s)
for n in "${names[@]}"; do
  echo "images: go build $n (linux/$arch, static)"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false -ldflags="-s -w" -o "$ctx/bin/$n" "$(pkg_of "$n")"
done
# the legacy builder builds every stage before --target: binaries not asked for
# get an empty placeholder so those stages build (they are never tagged)
for b in $(sed -n 's#^COPY bin/\([^ ]*\) .*#\1#p' Dockerfile); do
  [[ -e $ctx/bin/$b ]] || : >"$ctx/bin/$b"
done
for n in "${names[@]}"; do
  t=$tag
  # cert-manager's controller is tagged with the cert-manager version it is built from
  [[ $n == cert-manager-* ]] && t=$(go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
  echo "images: docker build $registry/$n:$t (FROM $base)"
  # the legacy builder works offline; BuildKit may try to reach a registry for metadata
  # (its deprecation notice is dropped; any other output is shown when the build fails)
  if ! DOCKER_BUILDKIT=0 docker build -q --target "$n" --build-arg "BASE=$base" \
    --build-arg "VERSION=$t" --build-arg "REVISION=$revision" \
    -t "$registry/$n:$t" "$ctx" >"$ctx/build.log" 2>&1; then
    grep -v 'DEPRECATED\|BuildKit is currently disabled\|environment-variable\|^ *$' "$ctx/build.log" >&2
    die "docker build of $n failed"
  fi
done
echo "images: built ${names[*]} in $(($(date +%s) - t0))s (relaytls images tagged $tag)"
