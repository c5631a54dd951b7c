# Single entry point. `make test` is the whole suite (installs what it needs; run as root).
GO ?= go
BIN := bin/evictguard
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
CACHE ?= /var/cache/evictguard
GOLANGCI_LINT_VERSION ?= v2.15.0

.PHONY: all build image status test test-short lint bench bench-migrate bench-fleet setup clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/evictguard

# The container image as an OCI archive (bin/evictguard-image.tar; `ctr -n k8s.io images
# import` and `docker load` read it), named by deploy/image. Reproducible: a static binary
# built with -trimpath and no build id, and every timestamp the commit's time.
IMAGE ?= $(shell cat deploy/image)
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -buildid= -X main.version=$(VERSION)" -o bin/evictguard-static ./cmd/evictguard
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) $(GO) run ./hack/image \
		--binary bin/evictguard-static --out bin/evictguard-image.tar --ref $(IMAGE) \
		--revision $$(git rev-parse HEAD 2>/dev/null)

# The main job: a one-shot report of this machine.
status: build
	./$(BIN) status

# The whole suite with real components (root; installs packages, builds kubelet/apiserver).
test:
	./hack/test.sh

# Unit tests only, no root or components needed.
test-short:
	$(GO) test -short ./...

setup:
	./hack/setup.sh

lint:
	./hack/setup.sh >/dev/null
	gofmt -l . | (! grep .)
	$(GO) vet ./...
	$(CACHE)/bin/golangci-lint-$(GOLANGCI_LINT_VERSION) run ./...

# Monitor cycle vs node_exporter's filesystem collector, and steady RSS (issue 4 targets).
bench:
	./hack/bench.sh

# Migration copy throughput vs cp -a, and downtime fraction with pre-copy (issue 7 targets).
bench-migrate:
	./hack/bench-migrate.sh

# A fleet of 100 simulated nodes against one real API server: requests per node per minute
# (steady, storm), Events per node, the API server away and back, RSS (issue #17). Root;
# about 15 minutes. FLEET_N, FLEET_STEADY and FLEET_OUTAGE change the size and windows.
FLEET_N ?= 100
FLEET_STEADY ?= 5m30s
FLEET_OUTAGE ?= 60s
bench-fleet:
	./hack/setup.sh >/dev/null
	EVICTGUARD_E2E_STRICT=1 EVICTGUARD_FLEET_N=$(FLEET_N) EVICTGUARD_FLEET_STEADY=$(FLEET_STEADY) \
		EVICTGUARD_FLEET_OUTAGE=$(FLEET_OUTAGE) $(GO) test -count=1 -timeout 60m -run '^TestFleet$$' -v ./e2e/

clean:
	rm -rf bin
