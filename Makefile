# modelreg build, run and test entry points. `make run` starts a registry on
# 127.0.0.1:5000; `make test` runs every test, installing the pinned tools
# it needs (into a cache keyed by version, reused across runs).

GO        ?= go
TOOLS_DIR ?= $(HOME)/.cache/modelreg/tools
ADDR      ?= 127.0.0.1:5000
DATA      ?= ./data

ORAS_VERSION := v1.3.6
ORAS_DIR     := $(TOOLS_DIR)/oras-$(ORAS_VERSION)
ORAS         := $(ORAS_DIR)/oras

COSIGN2_VERSION := v2.6.5
COSIGN2_DIR     := $(TOOLS_DIR)/cosign-$(COSIGN2_VERSION)
COSIGN2         := $(COSIGN2_DIR)/cosign
COSIGN3_VERSION := v3.1.3
COSIGN3_DIR     := $(TOOLS_DIR)/cosign-$(COSIGN3_VERSION)
COSIGN3         := $(COSIGN3_DIR)/cosign

# crane (go-containerregistry): another client the gate must hold against.
CRANE_VERSION := v0.22.1
CRANE_DIR     := $(TOOLS_DIR)/crane-$(CRANE_VERSION)
CRANE         := $(CRANE_DIR)/crane

# Plain distribution, the registry users run today: no Referrers API.
DISTRIBUTION_VERSION := v3.1.2
REGISTRY_DIR         := $(TOOLS_DIR)/distribution-$(DISTRIBUTION_VERSION)
REGISTRY             := $(REGISTRY_DIR)/registry

# The OCI distribution-spec conformance suite, pinned.
CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
CONFORMANCE_DIR     := $(TOOLS_DIR)/conformance-$(CONFORMANCE_VERSION)
CONFORMANCE         := $(CONFORMANCE_DIR)/conformance

# SeaweedFS, the S3-compatible object store the storage tests run against.
# `go install` refuses its module (its go.mod has replace directives), so
# $(WEED) downloads the pinned module and builds ./weed in a writable copy.
WEED_VERSION := v0.0.0-20261109003541-7506e5f91cd6
WEED_DIR     := $(TOOLS_DIR)/seaweedfs-$(WEED_VERSION)
WEED         := $(WEED_DIR)/weed

TOOL_ENV = MODELREG_ORAS=$(ORAS) MODELREG_CRANE=$(CRANE) MODELREG_COSIGN2=$(COSIGN2) MODELREG_COSIGN3=$(COSIGN3) MODELREG_DISTRIBUTION=$(REGISTRY) MODELREG_CONFORMANCE=$(CONFORMANCE) MODELREG_WEED=$(WEED)

# go-install DIR PACKAGE@VERSION BINARY: installs into DIR.tmp first, so an
# interrupted install never leaves a broken binary in the cache.
define go-install
	rm -rf $(1).tmp
	GOBIN=$(abspath $(1).tmp) $(GO) install $(2)
	mkdir -p $(1) && mv $(1).tmp/$(3) $(1)/$(3) && rm -rf $(1).tmp
endef

.PHONY: all build run test cross vet fmt-check tools deb-tools bench clean image

all: build

build:
	$(GO) build -o bin/modelreg ./cmd/modelreg

run: build
	./bin/modelreg serve --addr $(ADDR) --data $(DATA)

test: fmt-check vet cross tools deb-tools
	$(TOOL_ENV) $(GO) test -count=1 -timeout 30m ./...

# Debian's container tools, which the image view tests pull and unpack
# with: containerd (ctr), skopeo and umoci, and busybox-static, the shell
# of the modelcar base image the tests build, chromium, the browser the
# web UI tests drive, and postgresql, the index's shared database (the
# tests start a private cluster: internal/pgtest). Installed when missing (a
# fresh CI machine); the tests start containerd themselves, in a temp dir.
DEB_TOOLS = containerd skopeo umoci busybox-static chromium postgresql
SUDO = $$(test "$$(id -u)" = 0 || echo sudo)
deb-tools:
	@if ! command -v ctr >/dev/null || ! command -v containerd >/dev/null || ! command -v skopeo >/dev/null || ! command -v umoci >/dev/null || ! dpkg -s busybox-static >/dev/null 2>&1 || ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing $(DEB_TOOLS) from Debian"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEB_TOOLS); \
	fi

# cross: everything but bench/ builds for Windows and macOS. bench/ measures
# Linux processes (SysProcAttr.Pdeathsig, Rusage.Maxrss) and does not build
# elsewhere yet.
CROSS_PKGS = $$($(GO) list -f '{{if .GoFiles}}{{.ImportPath}}{{end}}' ./... | grep -v '/bench$$')
cross:
	GOOS=windows GOARCH=amd64 $(GO) build $(CROSS_PKGS)
	GOOS=darwin GOARCH=arm64 $(GO) build $(CROSS_PKGS)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

tools: $(ORAS) $(CRANE) $(COSIGN2) $(COSIGN3) $(REGISTRY) $(CONFORMANCE) $(WEED)

$(ORAS):
	$(call go-install,$(ORAS_DIR),oras.land/oras/cmd/oras@$(ORAS_VERSION),oras)

$(CRANE):
	$(call go-install,$(CRANE_DIR),github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION),crane)

# cosign takes minutes to build cold; the cache keeps it per version.
$(COSIGN2):
	$(call go-install,$(COSIGN2_DIR),github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN2_VERSION),cosign)

$(COSIGN3):
	$(call go-install,$(COSIGN3_DIR),github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN3_VERSION),cosign)

$(CONFORMANCE):
	$(call go-install,$(CONFORMANCE_DIR),github.com/opencontainers/distribution-spec/conformance@$(CONFORMANCE_VERSION),conformance)

$(REGISTRY):
	$(call go-install,$(REGISTRY_DIR),github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION),registry)

# weed takes about 8 minutes to build cold; like go-install, it is built in
# $(WEED_DIR).tmp and moved into the cache only when complete. The module
# is downloaded from the tools dir (outside this module, so go.mod and
# go.sum stay untouched) and copied, since the module cache is read-only.
$(WEED):
	rm -rf $(WEED_DIR).tmp && mkdir -p $(WEED_DIR).tmp
	cd $(WEED_DIR).tmp && dir=$$($(GO) mod download -json github.com/seaweedfs/seaweedfs@$(WEED_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p') && \
		test -n "$$dir" && cp -R "$$dir" src && chmod -R u+w src && \
		cd src && CGO_ENABLED=0 $(GO) build -o ../weed ./weed
	mkdir -p $(WEED_DIR) && mv $(WEED_DIR).tmp/weed $(WEED) && rm -rf $(WEED_DIR).tmp

# image: the OCI image of `modelreg serve` (docs/deploy-scale.md), without
# a Docker engine: a static build, then build/image.sh puts it on an empty
# base with crane and writes $(IMAGE_DIR)/oci (an OCI layout) and
# $(IMAGE_DIR)/modelreg.tar; with IMAGE=registry/repo:tag it pushes too.
IMAGE       ?=
IMAGE_DIR   ?= bin/image
IMAGE_ARCH  ?= $(shell $(GO) env GOARCH)
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
image: build $(CRANE)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '-s -w' -o $(IMAGE_DIR)/modelreg-linux-$(IMAGE_ARCH) ./cmd/modelreg
	CRANE=$(CRANE) GOARCH=$(IMAGE_ARCH) VERSION=$(VERSION) REGISTRY_BIN=bin/modelreg \
		build/image.sh $(IMAGE_DIR)/modelreg-linux-$(IMAGE_ARCH) $(IMAGE_DIR) $(IMAGE)

bench: build tools deb-tools
	$(TOOL_ENV) $(GO) run ./bench -modelreg ./bin/modelreg

clean:
	rm -rf bin
