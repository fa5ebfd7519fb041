# weft — build, test, benchmark, simulate.
#
#   make sim     a local multi-node cluster in network namespaces + connectivity report
#   make test    every test (unit, fuzz seeds, namespace/TAP integration as root),
#                then each fuzz target for TEST_FUZZTIME (default 3s)
#   make bench   packet-replay (weftd's data path, offload and plain) and table benchmarks
#   make fuzz    each fuzz target for FUZZTIME (default 30s)
#   make bench-e2e  weft vs kernel VXLAN end to end (iperf3, ping) in namespaces
#   make bench-scale  control plane at 100..20,000 node leases (one weftd each)
#   make e2e-k8s Kubernetes' own [sig-network] e2e specs on a 2-node cluster of
#                real kubelets with weft as its network (docs/CONFORMANCE.md)
#
# Everything a target needs is installed here (Debian packages via apt-get,
# Go modules via the module proxy) so a fresh clone works with no hand set-up.

SHELL     := /bin/bash
GO        ?= go
BIN       := bin
FUZZTIME  ?= 30s
# make test fuzzes each target this long after the tests (0: not at all).
TEST_FUZZTIME ?= 3s
# How long the fuzzer may spend minimising one new input. Go's default
# (60s) let FuzzTCPRun and FuzzSegmentTCP spend a whole FUZZTIME
# minimising (8 and 481 executions in 20 s).
FUZZMINTIME ?= 1s
BENCHTIME ?= 1s
TESTFLAGS ?=
# Debian packages the tests, the sim and the benchmarks run: command:package.
APT_NEEDS := ip:iproute2 ping:iputils-ping iperf3:iperf3 tcpdump:tcpdump etcd:etcd-server \
             ethtool:ethtool nsenter:util-linux bridge:iproute2 jq:jq \
             containerd:containerd ctr:containerd containerd-shim-runc-v2:containerd \
             runc:runc busybox:busybox-static

# Go-built tools the tests drive as real clients, pinned, installed into bin/tools.
TOOLS     := $(abspath $(BIN)/tools)
CNITOOL   := github.com/containernetworking/cni/cnitool@v1.3.1
# Go commands built from the module proxy out of a wrapper module of their
# own, tools/WRAPPER (its go.mod pins MODULE at the version to build, so
# weft's go.mod never pulls them in), as NAME:MODULE[:PKG[:WRAPPER]] (PKG:
# the command's package if it is not the wrapper's own main; WRAPPER: the
# wrapper's directory if it is not tools/NAME). tools/gobuild.sh builds each
# into a cache outside the clone keyed by version, $(TOOLS_CACHE)/NAME-VERSION/NAME,
# so a machine builds a version once (etcd 3.7: ~4 min on 2 cores), and links
# it into bin/tools. Tests find them through the variables `test` passes.
TOOLS_CACHE  ?= $(or $(WEFT_TOOLS_CACHE),/var/cache/weft-tools)
GO_TOOLS     := etcd:go.etcd.io/etcd/server/v3
# Kubernetes' commands, from one wrapper (tools/kube: k8s.io/kubernetes with
# its staging modules replaced by their published releases). Adding one is
# one line here (tools/kube/tools.go already pins kubelet, kube-scheduler,
# kube-proxy and kubectl). The first build of a release is long: apiserver
# 70 min and controller-manager 4 more with a cold Go cache on 2 cores
# shared with seven other builds (load ~25; notes/kubernetes.md: 15-22 min
# for three commands on a quieter machine); with the cache, 4 s.
KUBE_CMD     := k8s.io/kubernetes:k8s.io/kubernetes/cmd
GO_TOOLS     += kube-apiserver:$(KUBE_CMD)/kube-apiserver:kube
GO_TOOLS     += kube-controller-manager:$(KUBE_CMD)/kube-controller-manager:kube
GO_TOOL_BINS := $(foreach t,$(GO_TOOLS),$(TOOLS)/$(firstword $(subst :, ,$(t))))
# What only make e2e-k8s runs (issue 19: real kubelets, Kubernetes' own
# e2e suite), kept out of `make tools` and `make test`: the kubelet and the
# scheduler (tools/kube), the suite and agnhost (tools/kube-e2e: the
# suite's dependencies stay out of tools/kube), CoreDNS, CNI's loopback.
# Same cache as GO_TOOLS; a cold build on 2 cores: kubelet + scheduler
# ~10 min, e2e.test ~6 min, agnhost and CoreDNS a few each.
E2E_GO_TOOLS := kubelet:$(KUBE_CMD)/kubelet:kube
E2E_GO_TOOLS += kube-scheduler:$(KUBE_CMD)/kube-scheduler:kube
E2E_GO_TOOLS += e2e.test:k8s.io/kubernetes:k8s.io/kubernetes/test/e2e:kube-e2e
E2E_GO_TOOLS += agnhost:k8s.io/kubernetes:k8s.io/kubernetes/test/images/agnhost:kube-e2e
E2E_GO_TOOLS += coredns:github.com/coredns/coredns:github.com/coredns/coredns
E2E_GO_TOOLS += loopback:github.com/containernetworking/plugins:github.com/containernetworking/plugins/plugins/main/loopback:cni-plugins
E2E_GO_TOOL_BINS := $(foreach t,$(E2E_GO_TOOLS),$(TOOLS)/$(firstword $(subst :, ,$(t))))

.PHONY: all build deps tools e2e-tools e2e-deps e2e-k8s test bench bench-e2e bench-scale fuzz sim vet clean check-go check-ci-root

all: build

check-go:
	@command -v $(GO) >/dev/null || { echo "make: Go toolchain not found (need go >= $$(sed -n 's/^go //p' go.mod)); install it from go.dev/dl" >&2; exit 1; }

# deps installs the Debian packages listed in APT_NEEDS that are missing.
# Without root it only reports what is missing.
deps:
	@missing=""; for pair in $(APT_NEEDS); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: missing Debian packages:$$missing (run 'make deps' as root)" >&2; exit 1; fi; \
	  echo "make: installing$$missing"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	    || { echo "make: apt-get install$$missing failed" >&2; exit 1; }; \
	fi

tools: check-go $(GO_TOOL_BINS)
	@test -x $(TOOLS)/cnitool || { echo "make: installing cnitool ($(CNITOOL)) into $(TOOLS)"; \
	  GOBIN=$(TOOLS) $(GO) install $(CNITOOL); }

# One rule for every GO_TOOLS entry: rebuilt (or re-linked from the cache)
# when its wrapper module changes or the cached binary is gone.
go_tool_field   = $(word $(2),$(subst :, ,$(1)))
go_tool_wrapper = tools/$(or $(call go_tool_field,$(1),4),$(call go_tool_field,$(1),1))
define go_tool_rule
$(TOOLS)/$(call go_tool_field,$(1),1): $(call go_tool_wrapper,$(1))/go.mod $(call go_tool_wrapper,$(1))/go.sum | check-go
	@GO=$(GO) tools/gobuild.sh $(call go_tool_field,$(1),1) $(call go_tool_field,$(1),2) $(TOOLS_CACHE) $(TOOLS) \
	  $(or $(call go_tool_field,$(1),3),.) $(notdir $(call go_tool_wrapper,$(1)))
endef
$(foreach t,$(GO_TOOLS) $(E2E_GO_TOOLS),$(eval $(call go_tool_rule,$(t))))

# make e2e-tools: what make e2e-k8s runs besides `make tools`: the
# E2E_GO_TOOLS, the pause program (pause.c of the k8s.io/kubernetes module
# tools/kube pins, gcc -static as upstream builds it) and the OCI image
# archives the nodes import (kcluster images: pause, agnhost, busybox and
# CoreDNS images made of those binaries and Debian's busybox, dash,
# OpenBSD nc and curl), all cached in TOOLS_CACHE.
PAUSE_VERSION := 3.10.2
E2E_IMAGES    := $(TOOLS_CACHE)/e2e-images
E2E_APT_NEEDS := gcc:gcc dash:dash nc.openbsd:netcat-openbsd curl:curl ldd:libc-bin
e2e-tools: check-go e2e-deps $(E2E_GO_TOOL_BINS) $(TOOLS)/pause
	@mkdir -p $(BIN) && $(GO) build -o $(BIN)/kcluster ./test/e2e-k8s/kcluster
	@$(BIN)/kcluster images --tools $(TOOLS) --out $(E2E_IMAGES) >/dev/null

e2e-deps:
	@$(MAKE) --no-print-directory deps APT_NEEDS="$(APT_NEEDS) $(E2E_APT_NEEDS)"

$(TOOLS)/pause: tools/kube/go.mod | check-go e2e-deps
	@out=$(TOOLS_CACHE)/pause-$(PAUSE_VERSION); mkdir -p $$out $(TOOLS); \
	if [ ! -x $$out/pause ]; then \
	  $(GO) -C tools/kube mod download k8s.io/kubernetes && \
	  src=$$($(GO) -C tools/kube list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c && \
	  gcc -Os -Wall -Werror -static -DVERSION=v$(PAUSE_VERSION) -o $$out/pause.tmp $$src && mv $$out/pause.tmp $$out/pause || exit 1; \
	fi; ln -sfn $$out/pause $(TOOLS)/pause

# make e2e-k8s: Kubernetes' own [sig-network] e2e specs (the list in
# E2E_SPECS, one focus per line) against a two-node cluster of real
# kubelets with weft as its network (internal/kubecluster), brought up
# for the run and taken down after it. Prints each spec's result and
# "N passed, N failed"; fails if any failed. docs/CONFORMANCE.md records
# the last results.
E2E_SPECS ?= test/e2e-k8s/specs.txt
e2e-k8s: build tools e2e-tools
	$(BIN)/kcluster run --tools $(TOOLS) --images $(E2E_IMAGES) --weftd $(BIN)/weftd --weft-cni $(BIN)/weft-cni \
	  -- test/e2e-k8s/run.sh $(TOOLS)/e2e.test $(E2E_SPECS)

build: check-go
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet: check-go
	$(GO) vet ./...

# CI runs as root (.ci/run sets CI=true). Under CI a non-root run would skip
# every namespace, TAP and sim test and still pass: refuse it up front.
check-ci-root:
	@if [ -n "$$CI" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "make test: FAIL: CI=$$CI is set but this runs as uid $$(id -u), not root: the namespace, TAP and sim tests need root (CAP_NET_ADMIN) and would all be skipped" >&2; \
	  exit 1; \
	fi

# Fuzz seed corpora (testdata/fuzz) run as ordinary tests here; then each
# fuzz target fuzzes for TEST_FUZZTIME. -short skips the data-race test
# (sim TestDataPathRace) and the no-lapse test (sim
# TestNoLeaseLapseUnderLoad): say so before and after, so that a short run is
# never read as a full one.
SHORT_NOTE := make test: TESTFLAGS has -short: sim TestDataPathRace (weftd built with -race under traffic) and TestNoLeaseLapseUnderLoad (leases under a minute of machine load) are SKIPPED; this run does not check for data races nor for lapsed leases
test: check-ci-root check-go deps tools vet build
	@case " $(TESTFLAGS) " in *" -short "*|*" -short=true "*|*" -test.short "*) echo "$(SHORT_NOTE)" >&2;; esac
	WEFT_CNITOOL=$(TOOLS)/cnitool WEFT_ETCD=$(TOOLS)/etcd WEFT_TOOLS=$(TOOLS) $(GO) test -count=1 -timeout 20m $(TESTFLAGS) ./...
	@case " $(TESTFLAGS) " in *" -short "*|*" -short=true "*|*" -test.short "*) echo "$(SHORT_NOTE)" >&2;; esac
	@if [ "$(TEST_FUZZTIME)" != 0 ]; then $(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME); fi

# The replay benchmarks run weftd's own data path (package datapath) in both
# modes, the default (offload) first; datapath's own benchmarks are the
# default path's super-frame split + encap and GRO receive + coalesce.
bench: check-go
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./bench/ ./datapath/ ./packet/ ./switch/ ./overlay/ ./ipam/ ./registry/...

# End to end, weft against the kernel's VXLAN in the same run (E2E_REPS,
# E2E_T and the other knobs are documented in bench/e2e/main.go). Writes the
# table into docs/BENCHMARKS.md and the chart into docs/e2e.svg.
bench-e2e: check-go deps build
	$(GO) run ./bench/e2e

# Control-plane scale (issue 16): the node's lease apply and the switch's
# route table rebuild in process (go test -bench), then one real weftd per
# lease count against a file registry of N leases (bench/scale/main.go:
# SCALE_N, SCALE_IDLE, SCALE_DOCS). Writes its table into docs/BENCHMARKS.md.
bench-scale: check-go deps build
	$(GO) test -run '^$$' -bench 'ApplyLeases|SetRoutes' -benchmem -benchtime $(BENCHTIME) ./node/ ./switch/
	$(GO) run ./bench/scale

# The targets are listed by `go test -list` over every package at once; a
# package that does not build fails the listing, and make fuzz with it.
# A target fails make fuzz on anything but one thing: a lone "context
# deadline exceeded" with no failing input written, which is Go 1.26's fuzz
# coordinator racing its own -fuzztime deadline on a loaded machine
# (golang/go#75804); it is reported and skipped.
fuzz: check-go
	@list=$$($(GO) test -list '^Fuzz' ./... 2>&1) || { \
	  echo "$$list" >&2; echo "make fuzz: FAIL: listing the fuzz targets failed (a package above does not build)" >&2; exit 1; }; \
	targets=$$(echo "$$list" | awk '/^Fuzz/ {t = t " " $$1; next} /^ok / {n = split(t, a, " "); for (i = 1; i <= n; i++) print $$2 ":" a[i]; t = ""}'); \
	[ -n "$$targets" ] || { echo "make fuzz: FAIL: no fuzz targets found" >&2; exit 1; }; \
	for pt in $$targets; do \
	  pkg=$${pt%%:*}; target=$${pt#*:}; \
	  echo "== $$pkg $$target ($(FUZZTIME), minimise <= $(FUZZMINTIME))"; \
	  out=$$($(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $$pkg 2>&1); rc=$$?; \
	  echo "$$out"; \
	  [ $$rc = 0 ] && continue; \
	  if ! grep -q 'Failing input written to' <<<"$$out" && [ "$$(grep -c -- '--- FAIL' <<<"$$out")" = 1 ] \
	     && grep -A1 -- "^--- FAIL: $$target " <<<"$$out" | grep -qx '    context deadline exceeded'; then \
	    echo "make fuzz: $$target: Go's fuzz coordinator reported its own -fuzztime deadline as a failure (golang/go#75804, fixed in Go 1.27); no input was written: not a finding" >&2; \
	    continue; \
	  fi; \
	  exit 1; \
	done

# make sim owns the sim named $(SIM_NAME): it brings it up, tests it, and
# always tears it down, leaving nothing behind whether the test passed or not.
SIM_NAME  ?= weftmk
SIM_NODES ?= 3
SIM_PODS  ?= 2
sim: check-go deps build
	@$(BIN)/weft sim up --name $(SIM_NAME) --nodes $(SIM_NODES) --pods-per-node $(SIM_PODS) \
	  && $(BIN)/weft sim test --name $(SIM_NAME); rc=$$?; \
	  $(BIN)/weft sim down --name $(SIM_NAME) >/dev/null; exit $$rc

clean:
	rm -rf $(BIN) bench/out
