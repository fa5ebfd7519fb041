# weft — build, test, benchmark, simulate.
#
#   make sim     a local multi-node cluster in network namespaces + connectivity report
#   make test    every test (unit, fuzz seeds, namespace/TAP integration as root)
#   make bench   packet-replay and table benchmarks
#   make fuzz    each fuzz target for FUZZTIME (default 30s)
#   make bench-e2e  weft vs kernel VXLAN end to end (iperf3, ping) in namespaces
#
# Everything a target needs is installed here (Debian packages via apt-get,
# Go modules via the module proxy) so a fresh clone works with no hand set-up.

SHELL     := /bin/bash
GO        ?= go
BIN       := bin
FUZZTIME  ?= 30s
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

.PHONY: all build deps tools test bench bench-e2e fuzz sim vet clean check-go

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

tools: check-go
	@test -x $(TOOLS)/cnitool || { echo "make: installing cnitool ($(CNITOOL)) into $(TOOLS)"; \
	  GOBIN=$(TOOLS) $(GO) install $(CNITOOL); }

build: check-go
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet: check-go
	$(GO) vet ./...

# Fuzz seed corpora (testdata/fuzz) run as ordinary tests here.
test: check-go deps tools vet build
	WEFT_CNITOOL=$(TOOLS)/cnitool $(GO) test -count=1 -timeout 20m $(TESTFLAGS) ./...

bench: check-go
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./packet/ ./switch/ ./overlay/ ./bench/ ./ipam/ ./registry/...

# End to end, weft against the kernel's VXLAN in the same run (E2E_REPS,
# E2E_T and the other knobs are documented in bench/e2e/main.go). Writes the
# table into docs/BENCHMARKS.md and the chart into docs/e2e.svg.
bench-e2e: check-go deps build
	$(GO) run ./bench/e2e

fuzz: check-go
	@for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
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
