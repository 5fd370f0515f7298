# relaytls images. The binaries are built static on the host by
# `make images` (hack/images.sh), which passes a small build context holding
# them and the files below; nothing is pulled, so it works with no registry:
#   make images                                    # FROM scratch (default)
#   make images IMAGE_BASE=gcr.io/distroless/static-debian12:nonroot
# Each stage is one image (--target): relay-issuer, relay-sidecar, relayctl,
# relayapp (the sample relay application the e2e suites run).
# The images run as 65532:65532, need no writable root file system and carry
# CA certificates, like distroless/static.

ARG BASE=scratch

FROM ${BASE} AS base
# rootfs/: /etc/passwd and /etc/group with root and nonroot (65532), the CA
# bundle at /etc/ssl/certs/ca-certificates.crt and an empty /tmp (1777).
COPY rootfs/ /
USER 65532:65532
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/relaytls/relaytls" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

FROM base AS relay-issuer
LABEL org.opencontainers.image.title="relay-issuer"
COPY bin/relay-issuer /relay-issuer
ENTRYPOINT ["/relay-issuer"]

FROM base AS relay-sidecar
LABEL org.opencontainers.image.title="relay-sidecar"
COPY bin/relay-sidecar /relay-sidecar
ENTRYPOINT ["/relay-sidecar"]

FROM base AS relayctl
LABEL org.opencontainers.image.title="relayctl"
COPY bin/relayctl /relayctl
ENTRYPOINT ["/relayctl"]

FROM base AS relayapp
LABEL org.opencontainers.image.title="relayapp"
COPY bin/relayapp /relayapp
ENTRYPOINT ["/relayapp"]

# cert-manager's controller, built from the pinned cert-manager module's
# public packages (hack/images/cert-manager/controller) for the kind suite;
# `hack/images.sh cert-manager-controller` builds it.
FROM base AS cert-manager-controller
LABEL org.opencontainers.image.title="cert-manager-controller (relaytls build)"
COPY bin/cert-manager-controller /cert-manager-controller
ENTRYPOINT ["/cert-manager-controller"]
