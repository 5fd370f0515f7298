# Builds the relaytls binaries as static executables and ships each in a
# minimal, non-root image. Pick one with --target:
#   docker build --target relay-issuer  -t relaytls/relay-issuer .
#   docker build --target relay-sidecar -t relaytls/relay-sidecar .
#   docker build --target relayctl      -t relaytls/relayctl .

ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN mkdir -p /out && \
    go build -trimpath -ldflags="-s -w" -o /out/relay-issuer ./issuer && \
    go build -trimpath -ldflags="-s -w" -o /out/relay-sidecar ./relay-sidecar && \
    go build -trimpath -ldflags="-s -w" -o /out/relayctl ./relayctl

# distroless/static: no shell, no package manager, CA certificates and
# /etc/passwd with the nonroot user (65532) only.
FROM gcr.io/distroless/static-debian12:nonroot AS base
USER 65532:65532

FROM base AS relay-issuer
COPY --from=build /out/relay-issuer /relay-issuer
ENTRYPOINT ["/relay-issuer"]

FROM base AS relay-sidecar
COPY --from=build /out/relay-sidecar /relay-sidecar
ENTRYPOINT ["/relay-sidecar"]

FROM base AS relayctl
COPY --from=build /out/relayctl /relayctl
ENTRYPOINT ["/relayctl"]
