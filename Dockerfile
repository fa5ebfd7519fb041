# syntax=docker/dockerfile:1
#
# One image with weft's three binaries: weftd (the node daemon, the
# DaemonSet's container), weft (the CLI, used by the probes and by people
# with `kubectl exec`) and weft-cni (the CNI plugin, which the DaemonSet's
# init container copies to the node's /opt/cni/bin).
#
#   docker build -t registry.example/weft:dev --build-arg VERSION=$(git describe --always) .
#
# The binaries are static (CGO_ENABLED=0), so the same build runs on the
# node itself: `docker create`, `docker cp <id>:/usr/local/bin/. ./`.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first: this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X github.com/weftnet/weft/api.Version=${VERSION}" \
      -o /out/ ./cmd/weftd ./cmd/weft ./cmd/weft-cni

FROM debian:bookworm-slim
# /bin/sh and cp for the init container; nothing else is needed at run time
# (weftd speaks netlink itself).
COPY --from=build /out/weftd /out/weft /out/weft-cni /usr/local/bin/
COPY deploy/10-weft.conflist /usr/share/weft/10-weft.conflist
COPY deploy/weftd.service /usr/share/weft/weftd.service
COPY docs/CNI.md /usr/share/doc/weft/CNI.md
ENTRYPOINT ["/usr/local/bin/weftd"]
CMD ["--help"]
