# baton's tasks. `make test` is the test command README.md and CI run.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X baton/cmd/internal/cli.Version=$(VERSION)

# docker compose v2, built from the Go module proxy when the machine lacks
# it (Debian ships only v1, which cannot `up --wait`).
COMPOSE_VERSION := v2.29.7

.PHONY: test generate check-generated build demo demo-down image rootfs compose-plugin

# Vet, staticcheck (pinned in go.mod as a tool), formatting and every test
# with the race detector, never from the cache: the end-to-end tests build
# the binaries themselves, which the cache cannot see.
test:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then \
		echo "gofmt needs to format: $$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 20m ./...

# Regenerate messages/baton.pb.go from messages/baton.proto (needs protoc
# 3.21.12, Debian's protobuf-compiler; protoc-gen-go is a pinned go tool).
generate:
	$(GO) generate ./messages

# Fail when the committed generated code differs from a fresh generation.
check-generated: generate
	@git diff --exit-code -- messages/ || { \
		echo "messages/baton.pb.go is stale: run 'make generate' and commit"; exit 1; }

# Static binaries in bin/: broker, node and the stock nats CLI (pinned in
# go.mod). Call them by path: node is also Node.js's name.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/broker ./cmd/node github.com/nats-io/natscli/nats

# The demo cluster: build the image, the credentials and the TLS
# certificates, then start a broker and three nodes and wait until all are
# healthy. BATON_DEMO_DIR is the broker's data directory, credentials and
# certificates included.
BATON_DEMO_DIR ?= $(CURDIR)/build/demo
export BATON_DEMO_DIR
demo: image compose-plugin
	build/rootfs/usr/local/bin/broker credentials --data-dir $(BATON_DEMO_DIR)
	build/rootfs/usr/local/bin/broker certificate --data-dir $(BATON_DEMO_DIR) --hosts broker,localhost,127.0.0.1
	docker compose up -d --wait
	@echo "The dashboard: http://127.0.0.1:$${BATON_HTTP_PORT:-8222}/ (sign in with the token in $(BATON_DEMO_DIR)/credentials/admin.token)"

demo-down: compose-plugin
	docker compose down --remove-orphans --volumes --timeout 20

# The image, FROM scratch: nothing is pulled.
image: rootfs
	docker build -q -t baton:demo -f Dockerfile build

# build/rootfs: static baton binaries and nats CLI, and Debian's static
# busybox (fetched with apt-get download, unpacked with dpkg -x, since it
# conflicts with the busybox package) with a link per command.
rootfs: build
	rm -rf build/rootfs && mkdir -p build/rootfs/bin build/rootfs/usr/local/bin build/rootfs/var/lib/baton build/rootfs/root
	mkdir -m 1777 build/rootfs/tmp
	cp bin/broker bin/node bin/nats build/rootfs/usr/local/bin/
	cd build && { ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download busybox-static \
		|| { apt-get update -qq && apt-get download busybox-static; }; }
	rm -rf build/busybox && dpkg -x build/busybox-static_*.deb build/busybox
	cp build/busybox/bin/busybox build/rootfs/bin/busybox
	for applet in $$(build/rootfs/bin/busybox --list); do \
		[ -e build/rootfs/bin/$$applet ] || ln -s busybox build/rootfs/bin/$$applet; done

# Install docker compose v2 as a CLI plugin if `docker compose` is missing.
compose-plugin:
	@docker compose version >/dev/null 2>&1 || { \
		echo "installing docker compose $(COMPOSE_VERSION) from the Go module proxy"; \
		GOBIN=$(CURDIR)/build/compose $(GO) install github.com/docker/compose/v2/cmd@$(COMPOSE_VERSION) && \
		mkdir -p $$HOME/.docker/cli-plugins && \
		cp build/compose/cmd $$HOME/.docker/cli-plugins/docker-compose; }
