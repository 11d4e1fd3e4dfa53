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

.PHONY: all build run test vet fmt-check tools bench clean

all: build

build:
	$(GO) build -o bin/modelreg ./cmd/modelreg

run: build
	./bin/modelreg serve --addr $(ADDR) --data $(DATA)

test: fmt-check vet tools
	MODELREG_ORAS=$(ORAS) $(GO) test -count=1 -timeout 30m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

tools: $(ORAS)

# Installed into a temporary directory first, so an interrupted install
# never leaves a broken binary in the cache.
$(ORAS):
	rm -rf $(ORAS_DIR).tmp
	GOBIN=$(abspath $(ORAS_DIR).tmp) $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
	mkdir -p $(ORAS_DIR) && mv $(ORAS_DIR).tmp/oras $(ORAS) && rm -rf $(ORAS_DIR).tmp

bench: build tools
	MODELREG_ORAS=$(ORAS) $(GO) run ./bench -modelreg ./bin/modelreg

clean:
	rm -rf bin
