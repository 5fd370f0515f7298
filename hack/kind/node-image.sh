#!/usr/bin/env bash
# Builds the kind node image the relaytls kind suite runs on, with no container
# registry: Kubernetes, etcd, CNI plugins, crictl and CoreDNS are built from the
# Go module proxy, the node's root file system from Debian's packages
# (debootstrap), and everything is assembled with the local Docker daemon.
#
# Usage: hack/kind/node-image.sh [--print] [step ...]
#   --print   print the node image's name and exit (nothing is built)
#   --print-kubectl  print the path of the kubectl built with it
#   steps     kind files kbin addons rootfs baseimage compimages nodeimage
#             (default: all; kbin, addons and rootfs run at the same time)
# Every step prints its progress and is skipped when its output is current.
# Results live outside the repository, keyed by every version and input:
#   ${RELAYTLS_KIND_CACHE:-~/.cache/relaytls/kind}/node-<kube>-<key>/
# and the image is relaytls.local/kind-node:<kube>-<key>.
# KIND_NODE_IMAGE=<image> (e.g. the upstream kindest/node) skips all of this.
# Cold on 2 shared cores: 35-55 minutes; warm: seconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
KUBE_VERSION=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/node/go.mod")
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/node/go.mod")
[[ -n $KUBE_VERSION && -n $ETCD_VERSION ]] || { echo "node-image: cannot read the Kubernetes/etcd versions from $here/node/go.mod" >&2; exit 1; }

# RECIPE names this script's way of building: raise it when a change here changes the image.
RECIPE=1
# The cache key covers every input: the versions, the recipe, the node module and the files baked in.
key=$( (cd "$here" && echo "recipe $RECIPE" && cat versions.env node/go.mod node/go.sum files/* pause/*) | sha256sum | cut -c1-12)
IMAGE_REPO=relaytls.local/kind-node
NODE_IMAGE=$IMAGE_REPO:$KUBE_VERSION-$key
CACHE=${RELAYTLS_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relaytls/kind}
W=$CACHE/node-$KUBE_VERSION-$key
# the rootfs only depends on the Debian suite, the package list and kind's base files
ROOTFS_PKGS=systemd,systemd-sysv,dbus,containerd,runc,iptables,nftables,iproute2,ethtool,conntrack,ebtables,kmod,socat,util-linux,mount,ca-certificates,libseccomp2,pigz,procps,findutils,bash,jq,e2fsprogs
rootfs_key=$(printf '%s\n' "$DEBIAN_SUITE" "$ROOTFS_PKGS" "$KIND_VERSION" | sha256sum | cut -c1-12)
R=$CACHE/rootfs-$DEBIAN_SUITE-$rootfs_key

case ${1:-} in
  --print) echo "$NODE_IMAGE"; exit 0 ;;
  --print-kubectl) echo "$CACHE/bin/kubectl-$KUBE_VERSION"; exit 0 ;;
esac

t0=$(date +%s)
say() { echo "[node-image $(date -u +%T) +$(($(date +%s) - t0))s] $*"; }
die() { echo "node-image: $*" >&2; exit 1; }
done_mark() { mkdir -p "$W/stamps" && : >"$W/stamps/$1"; }
is_done() { [[ -f $W/stamps/$1 ]]; }
image_current() { docker image inspect "$1" >/dev/null 2>&1; }
# node_current: the node image exists and carries this build's key (a retagged
# or half-built image under the same name is stale and rebuilt)
node_current() {
  local got
  got=$(docker image inspect -f '{{index .Config.Labels "io.relaytls.kind-node.key"}}' "$NODE_IMAGE" 2>/dev/null) || return 1
  [[ $got == "$key" ]] && return 0
  say "$NODE_IMAGE is stale (its key label is '${got:-none}', this build's is $key): rebuilding it"
  return 1
}

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
GOBIN_DIR=$(go env GOPATH)/bin
KIND=${RELAYTLS_KIND:-$GOBIN_DIR/kind}
OUT=$W/out

preflight() {
  command -v go >/dev/null || die "go is not on PATH"
  if ! docker info >/dev/null 2>&1; then
    die "Docker is not reachable (docker info failed). Install it (Debian: apt-get install docker.io) and start the daemon (dockerd &, or systemctl start docker)."
  fi
}

step_kind() { # kind itself, from the Go module proxy
  if [[ -x $KIND ]] && "$KIND" version 2>/dev/null | grep -q "$KIND_VERSION"; then return 0; fi
  go install "sigs.k8s.io/kind@$KIND_VERSION"
}

step_files() { # nothing to generate: files/ is in the repository; record where kind's base files are
  KINDSRC=$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION
  [[ -d $KINDSRC/images/base/files ]] || go mod download "sigs.k8s.io/kind@$KIND_VERSION"
}

step_kbin() { # the Kubernetes binaries and etcd: about 21 minutes cold on 2 shared cores, 1 minute warm
  is_done kbin && return 0
  local minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  mkdir -p "$OUT"
  # version ldflags: without them kubeadm and kubelet report v0.0.0-master
  (cd "$here/node" && nice -n 19 go build -trimpath \
    -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
    -o "$OUT/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3)
  mv -f "$OUT/server" "$OUT/etcd"
  # the same kubectl for the kind suite
  mkdir -p "$CACHE/bin"
  install -m0755 "$OUT/kubectl" "$CACHE/bin/kubectl-$KUBE_VERSION"
  [[ $("$OUT/kubeadm" version -o short) == "$KUBE_VERSION" ]] || die "kubeadm reports $("$OUT/kubeadm" version -o short), want $KUBE_VERSION"
  done_mark kbin
}

step_addons() { # CNI plugins, crictl, pause and CoreDNS: about 10-15 minutes cold
  is_done addons && return 0
  mkdir -p "$OUT/addons"
  local p=github.com/containernetworking/plugins/plugins
  GOBIN=$OUT/addons nice -n 19 go install -trimpath -ldflags="-s -w" "$p/main/ptp@$CNI_PLUGINS_VERSION" \
    "$p/main/bridge@$CNI_PLUGINS_VERSION" "$p/ipam/host-local@$CNI_PLUGINS_VERSION" \
    "$p/main/loopback@$CNI_PLUGINS_VERSION" "$p/meta/portmap@$CNI_PLUGINS_VERSION"
  GOBIN=$OUT/addons nice -n 19 go install -trimpath -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  (cd "$here/pause" && go build -trimpath -ldflags="-s -w" -o "$OUT/addons/pause" .)
  GOBIN=$OUT/addons nice -n 19 go install -trimpath -ldflags="-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  done_mark addons
}

step_rootfs() { # Debian root file system with systemd, containerd and runc: about 10 minutes cold (download-bound)
  [[ -f $R/.relaytls-done ]] && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing (Debian: apt-get install debootstrap)"
  local mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
  [[ -n $mirror ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $mirror ]] || die "no Debian mirror found in apt's sources: set DEBIAN_MIRROR"
  rm -rf "$R.tmp"
  mkdir -p "$CACHE"
  nice -n 19 debootstrap --variant=minbase --include="$ROOTFS_PKGS" "$DEBIAN_SUITE" "$R.tmp" "$mirror"
  local T=$R.tmp F
  F=$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files
  chroot "$T" apt-get clean
  rm -rf "$T"/var/lib/apt/lists/* "$T"/usr/share/doc/* "$T"/usr/share/man/* "$T"/var/log/*.log
  # kind's base image files (its images/base/files), then its Dockerfile's RUN steps
  install -m0755 "$F"/usr/local/bin/* "$T"/usr/local/bin/
  mv -f "$T"/usr/local/bin/entrypoint "$T"/usr/local/bin/entrypoint.kind
  mkdir -p "$T"/kind/bin "$T"/kind/manifests "$T"/etc/containerd "$T"/etc/systemd/system/kubelet.service.d \
    "$T"/etc/kubernetes/manifests "$T"/opt/cni/bin "$T"/etc/cni/net.d
  install -m0644 "$F"/kind/README.txt "$T"/kind/
  install -m0755 "$F"/kind/bin/* "$T"/kind/bin/
  install -m0644 "$F"/etc/crictl.yaml "$T"/etc/
  install -m0644 "$F"/etc/containerd/config.toml "$T"/etc/containerd/
  install -m0644 "$F"/etc/default/kubelet "$T"/etc/default/
  install -m0644 "$F"/etc/sysctl.d/* "$T"/etc/sysctl.d/
  for f in "$F"/etc/systemd/system/*; do [[ -f $f ]] && install -m0644 "$f" "$T"/etc/systemd/system/; done
  install -m0644 "$F"/etc/systemd/system/kubelet.service.d/* "$T"/etc/systemd/system/kubelet.service.d/
  find "$T"/lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
  rm -f "$T"/lib/systemd/system/multi-user.target.wants/* "$T"/etc/systemd/system/*.wants/* \
    "$T"/lib/systemd/system/local-fs.target.wants/* "$T"/lib/systemd/system/sockets.target.wants/*udev* \
    "$T"/lib/systemd/system/sockets.target.wants/*initctl* "$T"/lib/systemd/system/basic.target.wants/*
  grep -q '^ReadKMsg=no' "$T"/etc/systemd/journald.conf || echo ReadKMsg=no >>"$T"/etc/systemd/journald.conf
  ln -sf /usr/lib/systemd/systemd "$T"/sbin/init
  ln -sf /usr/bin/containerd "$T"/usr/local/bin/containerd # kind's unit runs /usr/local/bin/containerd
  chroot "$T" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
  chroot "$T" systemctl mask systemd-binfmt.service
  chroot "$T" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
  : >"$T"/etc/machine-id
  : >"$T"/.relaytls-done
  rm -rf "$R"
  mv "$T" "$R"
}

step_baseimage() { # the rootfs plus this project's node files, as a Docker image: under a minute
  local img=relaytls.local/kind-base:$KUBE_VERSION-$key
  image_current "$img" && return 0
  local d
  d=$(mktemp -d "$W/ctx.XXXXXX")
  mkdir -p "$d/root/usr/bin" "$d/root/usr/local/bin" "$d/root/opt/cni/bin" "$d/root/etc/cni/net.d" "$d/root/kind/manifests"
  install -m0755 "$OUT"/kubelet "$OUT"/kubeadm "$OUT"/kubectl "$d/root/usr/bin/"
  install -m0755 "$OUT"/addons/crictl "$d/root/usr/local/bin/"
  install -m0755 "$here"/files/entrypoint-pre "$d/root/usr/local/bin/entrypoint"
  install -m0755 "$OUT"/addons/{ptp,bridge,host-local,loopback,portmap} "$d/root/opt/cni/bin/"
  install -m0644 "$here"/files/10-relaytls-ptp.conflist "$d/root/etc/cni/net.d/"
  install -m0644 "$here"/files/default-cni.yaml "$here"/files/default-storage.yaml "$d/root/kind/manifests/"
  printf '%s' "$KUBE_VERSION" >"$d/root/kind/version"
  # without CAP_SYS_RESOURCE runc cannot lower oom_score_adj (static pods ask for -998): let
  # containerd clamp it, as kind does for rootless nodes; the same on hosts that have it
  sed 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$R/etc/containerd/config.toml" >"$d/config.toml"
  install -D -m0644 "$d/config.toml" "$d/root/etc/containerd/config.toml"
  rm "$d/config.toml"
  tar -C "$R" --numeric-owner --exclude=./.relaytls-done -c . | docker import - "relaytls.local/kind-rootfs:$rootfs_key" >/dev/null
  cat >"$d/Dockerfile" <<EOF
FROM relaytls.local/kind-rootfs:$rootfs_key
COPY root/ /
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
  DOCKER_BUILDKIT=0 docker build -q -t "$img" "$d" >/dev/null
  rm -rf "$d"
}

# oneimage NAME ENTRYPOINT SRC:DST...: an image of static binaries on an empty root
oneimage() {
  local name=$1 ep=$2 d m
  shift 2
  d=$(mktemp -d "$W/ctx.XXXXXX")
  mkdir -p "$d/tmp" "$d/etc"
  chmod 1777 "$d/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/etc/group"
  for m in "$@"; do install -D -m0755 "${m%%:*}" "$d/${m#*:}"; done
  tar -C "$d" --numeric-owner -c . | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change "ENTRYPOINT $ep" - "$name" >/dev/null
  rm -rf "$d"
}

step_compimages() { # the images kubeadm runs (control plane, etcd, pause, CoreDNS, kube-proxy): about a minute
  [[ -f $W/images.tar ]] && return 0
  local reg=registry.k8s.io list etcd_tag pause_tag coredns_tag c d
  list=$("$OUT/kubeadm" config images list --kubernetes-version "$KUBE_VERSION")
  etcd_tag=$(sed -n 's#.*/etcd:##p' <<<"$list")
  pause_tag=$(sed -n 's#.*/pause:##p' <<<"$list")
  coredns_tag=$(sed -n 's#.*/coredns:##p' <<<"$list")
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    oneimage "$reg/$c:$KUBE_VERSION" "[\"/usr/local/bin/$c\"]" "$OUT/$c:usr/local/bin/$c"
  done
  # kubeadm names the etcd it wants; the module's etcd (same minor) is tagged with that name
  oneimage "$reg/etcd:$etcd_tag" '["/usr/local/bin/etcd"]' "$OUT/etcd:usr/local/bin/etcd"
  oneimage "$reg/pause:$pause_tag" '["/pause"]' "$OUT/addons/pause:pause"
  docker tag "$reg/pause:$pause_tag" "$reg/pause:3.10" # the sandbox image in kind's containerd config
  oneimage "$reg/coredns/coredns:$coredns_tag" '["/coredns"]' "$OUT/addons/coredns:coredns"
  # kube-proxy runs iptables-restore and conntrack: it gets the Debian rootfs
  d=$(mktemp -d "$W/ctx.XXXXXX")
  install -m0755 "$OUT/kube-proxy" "$d/kube-proxy"
  printf 'FROM relaytls.local/kind-rootfs:%s\nCOPY kube-proxy /usr/local/bin/kube-proxy\nENTRYPOINT ["/usr/local/bin/kube-proxy"]\n' "$rootfs_key" >"$d/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$reg/kube-proxy:$KUBE_VERSION" "$d" >/dev/null
  rm -rf "$d"
  docker save -o "$W/images.tar.tmp" "$reg/kube-apiserver:$KUBE_VERSION" "$reg/kube-controller-manager:$KUBE_VERSION" \
    "$reg/kube-scheduler:$KUBE_VERSION" "$reg/kube-proxy:$KUBE_VERSION" "$reg/etcd:$etcd_tag" \
    "$reg/pause:$pause_tag" "$reg/pause:3.10" "$reg/coredns/coredns:$coredns_tag"
  mv "$W/images.tar.tmp" "$W/images.tar"
}

step_nodeimage() { # what `kind build node-image` does, without its registry pulls: under a minute
  node_current && return 0
  local id=relaytls-node-build-$$
  docker rm -f "$id" >/dev/null 2>&1 || true
  trap 'docker rm -f '"$id"' >/dev/null 2>&1 || true' RETURN
  docker run -d --entrypoint=sleep --name="$id" --security-opt seccomp=unconfined \
    "relaytls.local/kind-base:$KUBE_VERSION-$key" infinity >/dev/null
  docker exec "$id" bash -c 'nohup containerd >/dev/null 2>&1 & for i in $(seq 20); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.5; done; ctr version >/dev/null'
  # kind no longer loads /kind/images at boot: the images go into the node's containerd store now
  docker exec -i "$id" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - <"$W/images.tar" >/dev/null
  docker exec "$id" pkill containerd || true
  sleep 2
  docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change "LABEL io.relaytls.kind-node.key=$key io.relaytls.kind-node.kubernetes=$KUBE_VERSION" \
    "$id" "$NODE_IMAGE" >/dev/null
}

run_step() {
  local s=$1 s0
  s0=$(date +%s)
  say "step $s: start"
  if "step_$s"; then say "step $s: ok ($(($(date +%s) - s0))s)"; else say "step $s: FAILED after $(($(date +%s) - s0))s"; return 1; fi
}

if [[ -n ${KIND_NODE_IMAGE:-} ]]; then
  echo "node-image: KIND_NODE_IMAGE=$KIND_NODE_IMAGE is set: nothing to build"
  exit 0
fi
preflight
mkdir -p "$W"
steps=("$@")
if [[ ${#steps[@]} -eq 0 ]]; then
  if node_current; then
    say "$NODE_IMAGE is current (cache $W)"
    exit 0
  fi
  say "building $NODE_IMAGE (Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kind $KIND_VERSION) in $W"
  run_step kind
  run_step files
  # the three long steps are independent: run them side by side, each logging to the cache
  pids=()
  for s in kbin addons rootfs; do
    run_step "$s" >"$W/$s.log" 2>&1 &
    pids+=("$!:$s")
  done
  while :; do
    sleep 60
    running=""
    for p in "${pids[@]}"; do kill -0 "${p%%:*}" 2>/dev/null && running+=" ${p#*:}"; done
    [[ -z $running ]] && break
    say "still building:$running"
  done
  fail=0
  for p in "${pids[@]}"; do
    if ! wait "${p%%:*}"; then
      echo "node-image: step ${p#*:} failed; its log ($W/${p#*:}.log) ends with:" >&2
      tail -n 20 "$W/${p#*:}.log" >&2
      fail=1
    else
      grep 'step .*: ok' "$W/${p#*:}.log" || true
    fi
  done
  [[ $fail == 0 ]] || exit 1
  steps=(baseimage compimages nodeimage)
fi
for s in "${steps[@]}"; do
  declare -F "step_$s" >/dev/null || die "unknown step $s (steps: kind files kbin addons rootfs baseimage compimages nodeimage)"
  run_step "$s"
done
say "done: $NODE_IMAGE"
