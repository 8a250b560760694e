# sluice: `make run` builds and starts the whole suite under the embedded
# runner; `make test` runs every test. Both install what they need.

GO       ?= go
BIN      := $(CURDIR)/bin
PREFIX   ?= /usr
DESTDIR  ?=
FUZZTIME ?= 30s
export CGO_ENABLED ?= 1

HELPERS  := auth policy shell ptystore hangup record fleet relay
WEBDIR   := frontend/web

.PHONY: all deps web build run test test-go fuzz-smoke fuzz bench install clean

all: build

deps:
	@scripts/deps.sh
	@$(GO) mod download

# The page's JavaScript comes from the npm registry, pinned by the lock file.
web:
	@if [ -f $(WEBDIR)/package.json ]; then \
		cd $(WEBDIR) && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run --silent build; \
	fi

build: web
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./cmd/...
	@for h in $(HELPERS); do \
		if [ -d helpers/$$h/cmd ]; then CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/ ./helpers/$$h/cmd/... || exit 1; fi; \
	done
	@# The one cgo helper binary: PAM needs the C library (helpers/shell/login).
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/ ./helpers/shell/login/cmd/sluice-login
	@if [ -d frontend/cmd ]; then CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/ ./frontend/cmd/...; fi
	$(BIN)/sluice manifest $(BIN)

run: deps build
	$(BIN)/sluice run --bin-dir $(BIN)

# Tests that need the built binaries take them from bin/ instead of each
# building its own copy.
test: deps build
	$(GO) vet ./...
	SLUICE_TEST_BIN=$(BIN) SLUICE_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 14m ./...
	@# Tests that change the whole host (/etc/nologin), alone, one package at a time.
	SLUICE_TEST_HOSTWIDE=1 SLUICE_TEST_BIN=$(BIN) SLUICE_BIN_DIR=$(BIN) $(GO) test -count=1 -p 1 -timeout 5m \
		-run 'TestLoginRefusals|TestLoginRefusedOnPage' ./helpers/shell/ ./tests/e2e/
	@$(MAKE) --no-print-directory fuzz-smoke

fuzz-smoke:
	@if [ -x scripts/fuzz.sh ]; then FUZZTIME=3s scripts/fuzz.sh; fi

fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

bench: build
	scripts/bench.sh

install: build
	scripts/install.sh "$(DESTDIR)" "$(PREFIX)" "$(BIN)"

clean:
	rm -rf $(BIN) $(WEBDIR)/dist
