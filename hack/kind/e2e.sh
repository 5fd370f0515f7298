#!/usr/bin/env bash
# The relaytls kind suite (make e2e-kind): two kind clusters, "mgmt" and "wl",
# on one docker network; cert-manager from its own Helm chart with a
# controller image built here; relaytls from its chart (management) and a
# kustomize profile (workload); then the suite in e2e/kind (go test) runs the
# modes end to end against them.
#
# Usage: hack/kind/e2e.sh            run the suite (clusters are removed at the end, pass or fail)
#        hack/kind/e2e.sh up         only create and prepare the clusters (kept)
#        hack/kind/e2e.sh clean      remove the clusters and build containers this project made
# Env:   KIND_NODE_IMAGE=<image>     use this node image (e.g. upstream kindest/node) instead of building one
#        RELAYTLS_KIND_KEEP=1        keep the clusters after the run
#        RELAYTLS_KIND_MODES="..."   modes to run (default: every mode e2e/kind knows)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=versions.env
source "$here/versions.env"

PREFIX=relaytls-e2e
CLUSTERS=(mgmt wl)
RUN=$root/_out/kind
CACHE=${RELAYTLS_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relaytls/kind}
HELM_VERSION=$(cd "$root/deploy/render" && go list -m -f '{{.Version}}' helm.sh/helm/v4)
CM_VERSION=$(go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
IMAGE_REGISTRY=${IMAGE_REGISTRY:-ghcr.io/relaytls}
# the chart's and profiles' default image tag is the chart's appVersion: build that tag so
# both install exactly as users install them
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/charts/relaytls/Chart.yaml)
export PATH=$CACHE/bin:$(go env GOPATH)/bin:$PATH
cmd=${1:-run}

t0=$(date +%s)
say() { echo "[e2e-kind $(date -u +%T) +$(($(date +%s) - t0))s] $*"; }
die() { echo "e2e-kind: $*" >&2; exit 1; }

kind_bin() {
  if ! command -v kind >/dev/null || ! kind version 2>/dev/null | grep -q "$KIND_VERSION"; then
    say "installing kind $KIND_VERSION from the Go module proxy"
    GOBIN=$CACHE/bin go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
}

helm_bin() {
  # a helm built with go install reports only its minor version: read the module's from the binary
  if [[ ! -x $CACHE/bin/helm || $(go version -m "$CACHE/bin/helm" 2>/dev/null | awk '$1 == "mod" {print $3}') != "$HELM_VERSION" ]]; then
    say "installing helm $HELM_VERSION from the Go module proxy (a few minutes the first time)"
    GOBIN=$CACHE/bin CGO_ENABLED=0 nice -n 19 go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  fi
}

# clean removes only what this project made: kind clusters named relaytls-e2e-*
# and leftover node-image build containers.
clean() {
  if ! docker info >/dev/null 2>&1; then
    say "Docker is not reachable: nothing to clean"
    return 0
  fi
  local c
  if command -v kind >/dev/null; then
    for c in $(kind get clusters 2>/dev/null | grep "^$PREFIX-" || true); do
      say "deleting kind cluster $c"
      kind delete cluster --name "$c" >/dev/null 2>&1 || true
    done
  fi
  # containers kind would have made for our clusters (if kind itself is gone) and build leftovers
  for c in $(docker ps -a --filter "label=io.x-k8s.kind.cluster" --format '{{.Names}}' | grep "^$PREFIX-" || true) \
    $(docker ps -a --filter "name=^relaytls-node-build-" --format '{{.Names}}'); do
    say "removing container $c"
    docker rm -f "$c" >/dev/null 2>&1 || true
  done
  # keep the logs of a failed run; drop the rest of the run directory
  [[ -d $RUN ]] && find "$RUN" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  return 0
}

preflight() {
  command -v docker >/dev/null || die "docker is not installed. Install it (Debian: apt-get install docker.io; .ci/run does this) and start the daemon."
  if ! out=$(docker info 2>&1 >/dev/null); then
    die "Docker is not reachable ($(head -n1 <<<"$out")). Start the daemon: dockerd >/tmp/dockerd.log 2>&1 & (or systemctl start docker), and check that $(id -un) may use ${DOCKER_HOST:-/var/run/docker.sock}."
  fi
  local c
  for c in "${CLUSTERS[@]}"; do
    if docker ps -a --format '{{.Names}}' | grep -qx "$PREFIX-$c-control-plane"; then
      die "a container $PREFIX-$c-control-plane already exists (a previous run left it?): run make e2e-kind-clean"
    fi
  done
}

node_image() {
  if [[ -n ${KIND_NODE_IMAGE:-} ]]; then
    docker image inspect "$KIND_NODE_IMAGE" >/dev/null 2>&1 || docker pull "$KIND_NODE_IMAGE" ||
      die "KIND_NODE_IMAGE=$KIND_NODE_IMAGE is neither local nor pullable"
    NODE_IMAGE=$KIND_NODE_IMAGE
    return
  fi
  NODE_IMAGE=$("$here/node-image.sh" --print)
  if ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
    local old
    old=$(docker images --format '{{.Repository}}:{{.Tag}}' relaytls.local/kind-node | grep -vx "$NODE_IMAGE" || true)
    [[ -z $old ]] || say "cached node image(s) $(echo $old) are stale (built from other versions or inputs): building $NODE_IMAGE"
  fi
  "$here/node-image.sh"
}

# privileged decides whether kind must go through the docker shim: some hosts
# (a container without CAP_SYS_RESOURCE) refuse --privileged.
privileged() {
  local out
  if out=$(docker run --rm --privileged --entrypoint /bin/true "$NODE_IMAGE" 2>&1); then
    say "docker run --privileged works here"
    return
  fi
  if grep -q "unable to apply caps\|operation not permitted" <<<"$out"; then
    say "this host refuses docker run --privileged ($(grep -o 'unable to apply caps[^"]*' <<<"$out" | head -n1)): kind runs through hack/kind/docker-shim (every capability but CAP_SYS_RESOURCE)"
    mkdir -p "$RUN/shim"
    ln -sf "$here/docker-shim" "$RUN/shim/docker"
    RELAYTLS_REAL_DOCKER=$(command -v docker)
    export RELAYTLS_REAL_DOCKER
    export PATH=$RUN/shim:$PATH
    return
  fi
  die "docker run --privileged of $NODE_IMAGE failed: $out"
}

images() {
  say "building the images (tag $APP_VERSION, the chart's appVersion)"
  IMAGE_TAG=$APP_VERSION IMAGE_REGISTRY=$IMAGE_REGISTRY "$root/hack/images.sh" relay-issuer relay-sidecar relayctl relayapp cert-manager-controller
}

create_clusters() {
  local c pids=() fail=0
  mkdir -p "$RUN"
  for c in "${CLUSTERS[@]}"; do
    say "creating kind cluster $PREFIX-$c"
    kind create cluster --name "$PREFIX-$c" --image "$NODE_IMAGE" --config "$here/suite/kind-config.yaml" \
      --kubeconfig "$RUN/kubeconfig-$c" --wait 240s >"$RUN/create-$c.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "e2e-kind: kind create cluster $PREFIX-${CLUSTERS[$i]} failed:" >&2
      tail -n 30 "$RUN/create-${CLUSTERS[$i]}.log" >&2
      # the suite maps no fixed host port (kind picks the API server's), so this is another tool's port
      if grep -qi "address already in use\|port is already allocated" "$RUN/create-${CLUSTERS[$i]}.log"; then
        echo "e2e-kind: a host port Docker was asked to bind is in use (see above): stop what holds it (ss -ltnp), or run make e2e-kind-clean if a previous run left a cluster" >&2
      fi
      fail=1
    fi
  done
  [[ $fail == 0 ]] || die "cluster creation failed (logs in $RUN)"
  # one kubeconfig with both contexts, for relayctl --mgmt-context/--remote-context
  KUBECONFIG=$RUN/kubeconfig-mgmt:$RUN/kubeconfig-wl kubectl config view --flatten >"$RUN/kubeconfig"
  for c in "${CLUSTERS[@]}"; do
    local k=(kubectl --kubeconfig "$RUN/kubeconfig-$c")
    # the default ServiceAccount appears a few seconds after the control plane
    until "${k[@]}" get serviceaccount default >/dev/null 2>&1; do sleep 1; done
    "${k[@]}" -n kube-system rollout status ds/kube-proxy --timeout=180s >/dev/null
    say "loading images into $PREFIX-$c"
    kind load docker-image --name "$PREFIX-$c" \
      "$IMAGE_REGISTRY/relay-issuer:$APP_VERSION" "$IMAGE_REGISTRY/relay-sidecar:$APP_VERSION" \
      "$IMAGE_REGISTRY/relayctl:$APP_VERSION" "$IMAGE_REGISTRY/relayapp:$APP_VERSION" \
      "$IMAGE_REGISTRY/cert-manager-controller:$CM_VERSION" >/dev/null
  done
}

# cert-manager from its own chart (inside the pinned module), pointed at the controller image
# built here. What differs from a stock install, and why, is in the README's kind section:
# no admission webhook and no cainjector (they cannot be built from the module's public packages).
cert_manager() {
  local chart c
  chart=$(go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)/deploy/charts/cert-manager
  [[ -f $chart/Chart.yaml ]] || die "cert-manager's chart is not in the module ($chart)"
  # the module's chart says version v0.0.0 (its release tool sets it): copy it and stamp the version
  rm -rf "$RUN/cert-manager-chart"
  cp -r "$chart" "$RUN/cert-manager-chart"
  chmod -R u+w "$RUN/cert-manager-chart"
  sed -i "s/^version: .*/version: $CM_VERSION/; s/^appVersion: .*/appVersion: $CM_VERSION/" "$RUN/cert-manager-chart/Chart.yaml"
  for c in "${CLUSTERS[@]}"; do
    say "installing cert-manager $CM_VERSION in $PREFIX-$c with its Helm chart"
    helm --kubeconfig "$RUN/kubeconfig-$c" install cert-manager "$RUN/cert-manager-chart" \
      -n cert-manager --create-namespace --wait --timeout 5m \
      -f "$here/suite/cert-manager-values.yaml" \
      --set "image.repository=$IMAGE_REGISTRY/cert-manager-controller" --set "image.tag=$CM_VERSION" \
      >"$RUN/cert-manager-$c.log" 2>&1 || { tail -n 30 "$RUN/cert-manager-$c.log" >&2; die "helm install cert-manager in $PREFIX-$c failed"; }
  done
}

collect() { # logs and state for a failed run, before the clusters go
  local c d
  for c in "${CLUSTERS[@]}"; do
    d=$RUN/logs/$c
    mkdir -p "$d"
    kind export logs --name "$PREFIX-$c" "$d/kind" >/dev/null 2>&1 || true
    kubectl --kubeconfig "$RUN/kubeconfig-$c" get pods,certificates,certificaterequests,events -A -o wide >"$d/state.txt" 2>&1 || true
  done
  say "logs kept in $RUN/logs"
}

# compile the suite and relayctl while the node image and clusters are made
compile_suite() {
  mkdir -p "$RUN/bin"
  (nice -n 19 go test -c -tags e2ekind -o "$RUN/bin/kind.test" ./e2e/kind &&
    nice -n 19 go build -o "$RUN/bin/relayctl" ./relayctl) >"$RUN/compile.log" 2>&1 &
  compile_pid=$!
}

suite() {
  say "running the kind suite (e2e/kind)"
  wait "$compile_pid" || { cat "$RUN/compile.log" >&2; die "compiling the kind suite failed"; }
  RELAYTLS_KIND_KUBECONFIG=$RUN/kubeconfig RELAYTLS_KIND_PREFIX=$PREFIX \
    RELAYTLS_KIND_IMAGE_REGISTRY=$IMAGE_REGISTRY RELAYTLS_KIND_IMAGE_TAG=$APP_VERSION \
    RELAYTLS_KIND_KUBECTL=$KUBECTL RELAYTLS_KIND_HELM=$CACHE/bin/helm \
    RELAYTLS_KIND_RELAYCTL=$RUN/bin/relayctl \
    bash -c 'cd e2e/kind && exec "$0" -test.count=1 -test.timeout=40m -test.v' "$RUN/bin/kind.test" 2>&1 | tee "$RUN/suite.log"
}

case $cmd in
  clean)
    kind_bin || true
    clean
    exit 0 ;;
  up | run) ;;
  *) die "unknown command $cmd (run, up, clean)" ;;
esac

preflight
mkdir -p "$RUN"
compile_suite
kind_bin
helm_bin
node_image
privileged
images
# kubectl of the node's Kubernetes version (built with the node image), else the host's
KUBECTL=$("$here/node-image.sh" --print-kubectl)
[[ -x $KUBECTL && -z ${KIND_NODE_IMAGE:-} ]] || KUBECTL=$(command -v kubectl || true)
[[ -n $KUBECTL ]] || die "no kubectl: install one, or build the node image (it builds kubectl)"
kubectl() { "$KUBECTL" "$@"; }
# from here on a failure removes everything the run made (RELAYTLS_KIND_KEEP=1 keeps it)
if [[ $cmd == up ]]; then
  trap 'rc=$?; if [[ $rc != 0 ]]; then collect; clean; fi; exit $rc' EXIT
elif [[ -z ${RELAYTLS_KIND_KEEP:-} ]]; then
  trap 'rc=$?; [[ $rc == 0 ]] || collect; clean; exit $rc' EXIT
fi
rm -rf "$RUN/logs"
create_clusters
cert_manager
say "clusters ready: KUBECONFIG=$RUN/kubeconfig (contexts kind-$PREFIX-mgmt, kind-$PREFIX-wl)"
[[ $cmd == up ]] && exit 0
suite
say "kind suite passed in $(($(date +%s) - t0))s"
