# relaytls Makefile. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.DEFAULT_GOAL := help

BIN            ?= $(CURDIR)/bin
KUBE_BIN       ?= $(BIN)/kube
CONTROLLER_GEN := $(BIN)/controller-gen
STATICCHECK    := $(BIN)/staticcheck
BUF            := $(BIN)/buf
PROTOC_GEN_GO  := $(BIN)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(BIN)/protoc-gen-go-grpc
PROTO_TOOLS    := $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)
GO_TEST_FLAGS  ?= -count=1
TEST_TIMEOUT   ?= 25m

export RELAYTLS_KUBE_BIN := $(KUBE_BIN)

# Version ldflags of the three binaries (`<binary> --version`).
VERSION        ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT         ?= $(shell git rev-parse HEAD 2>/dev/null)
VERSION_PKG    := github.com/relaytls/relaytls/internal/version
LDFLAGS        ?= -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT)

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build relay-issuer, relay-sidecar and relayctl into bin/.
	@for cmd in issuer:relay-issuer relay-sidecar:relay-sidecar relayctl:relayctl; do \
	  dir=$${cmd%%:*}; name=$${cmd##*:}; \
	  if [ -f $$dir/main.go ]; then echo "go build $$name"; CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$name ./$$dir || exit 1; fi; \
	done

$(CONTROLLER_GEN): hack/tools/go.mod
	cd hack/tools && go build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

# staticcheck has a module of its own (hack/tools/staticcheck) so that its
# golang.org/x/tools does not move controller-gen's.
$(STATICCHECK): hack/tools/staticcheck/go.mod
	cd hack/tools/staticcheck && go build -o $(STATICCHECK) honnef.co/go/tools/cmd/staticcheck

# buf (compiler and linter of the .proto files) and the protoc plugins have
# modules of their own: buf requires a newer google.golang.org/protobuf than
# the main module ships, and protoc-gen-go must not be newer than that runtime.
$(BUF): hack/tools/buf/go.mod
	cd hack/tools/buf && go build -o $(BUF) github.com/bufbuild/buf/cmd/buf

$(PROTOC_GEN_GO): hack/tools/protoc-gen/go.mod
	cd hack/tools/protoc-gen && go build -o $(PROTOC_GEN_GO) google.golang.org/protobuf/cmd/protoc-gen-go

$(PROTOC_GEN_GO_GRPC): hack/tools/protoc-gen/go.mod
	cd hack/tools/protoc-gen && go build -o $(PROTOC_GEN_GO_GRPC) google.golang.org/grpc/cmd/protoc-gen-go-grpc

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for api/.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: generate-proto
generate-proto: $(PROTO_TOOLS) ## Generate the issuance protocol's Go code (issuer/issuance/v1) from its .proto with buf.
	PATH="$(BIN):$$PATH" $(BUF) generate

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and the issuer's RBAC, then the chart's copies and CRD templates, its values table, the kustomize profiles and the sidecar docs.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:dir=deploy/crds
	$(CONTROLLER_GEN) rbac:roleName=relay-issuer paths=./issuer/... output:rbac:dir=deploy/rbac
	cd deploy/render && go run ./cmd/gen

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) $(PROTO_TOOLS) ## Fail when generated code (deepcopy, protobuf/gRPC), CRDs, RBAC or what deploy/render generates from them are stale.
	@hack/verify-generated.sh $(CONTROLLER_GEN) $(BUF) $(BIN)

.PHONY: kube-binaries
kube-binaries: ## Build kube-apiserver and etcd for the tests into bin/kube (only when missing).
	@hack/kube-binaries/build.sh $(KUBE_BIN)

.PHONY: lint
lint: $(STATICCHECK) $(BUF) ## gofmt, go vet and staticcheck (default checks; both modules); buf lint and format on the .proto files.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd deploy/render && go vet ./...
	$(STATICCHECK) -tags bench,e2ekind ./...
	cd deploy/render && $(STATICCHECK) -tags bench,e2ekind ./...
	$(BUF) lint
	$(BUF) format --diff --exit-code

.PHONY: test
test: kube-binaries verify-generated lint ## Run every test: unit, integration on real control planes, chart and profile rendering.
	go test $(GO_TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...
	cd deploy/render && go test $(GO_TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...

.PHONY: bench
bench: kube-binaries ## Run the benchmarks; each prints ratios against a baseline measured in the same run.
	@echo "== relay-sidecar against direct TLS (throughput, round trip, tunnel open, memory per idle agent)"
	CGO_ENABLED=0 go build -o $(BIN)/relay-sidecar ./relay-sidecar
	go run ./relay-sidecar/internal/bench/cmd/relaybench -sidecar $(BIN)/relay-sidecar
	@echo "== relay-sidecar vs ghostunnel (pinned in hack/ghostunnel, built once with cgo) vs direct mTLS: separate processes on one sink, 5 alternating repetitions"
	go run ./relay-sidecar/internal/bench/cmd/relaybench -procs -sidecar $(BIN)/relay-sidecar -ghostunnel "$$(hack/ghostunnel/build.sh)" -reps 5 -mib 64
	@echo "== enrollment: issuance endpoint + RelayIssuer vs cert-manager's CA issuer (N = 100, 1000, and 200 at once)"
	go test -tags bench -run '^TestBenchEnrollment$$' -count=1 -v -timeout 20m ./issuer/integration/ 2>&1 | grep -E 'bench_test.go|^(ok|FAIL|---)'

.PHONY: e2e
e2e: kube-binaries ## End-to-end suite: the six modes, each on two local clusters with the built binaries as processes (part of make test).
	go test $(GO_TEST_FLAGS) -timeout 20m -v ./e2e/suite/

DEMO_FLAGS ?=
.PHONY: demo
demo: kube-binaries ## Two local clusters, enrollment, rotation, a live relay stream (DEMO_FLAGS="-mode 5 -duration 2m").
	@echo "demo: compiling (a minute or two the first time) ..."
	go run ./e2e/demo $(DEMO_FLAGS)

# ---- images and kind (no registry needed; see README "kind") ----
IMAGE_REGISTRY ?= ghcr.io/relaytls
IMAGE_TAG      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_BASE     ?= scratch
export IMAGE_REGISTRY IMAGE_TAG IMAGE_BASE

.PHONY: images
images: ## Build the relay-issuer, relay-sidecar, relayctl and relayapp images (FROM scratch; IMAGE_BASE=<distroless> for distroless).
	@hack/images.sh

.PHONY: kind-node-image
kind-node-image: ## Build the kind node image with no registry (cached in ~/.cache/relaytls/kind; KIND_NODE_IMAGE=<image> uses that one).
	@hack/kind/node-image.sh

.PHONY: e2e-kind
e2e-kind: ## The kind suite: two kind clusters, cert-manager and relaytls as pods, the modes end to end.
	@hack/kind/e2e.sh

.PHONY: e2e-kind-clean
e2e-kind-clean: ## Delete the kind clusters and containers the kind suite made (and nothing else).
	@hack/kind/e2e.sh clean
