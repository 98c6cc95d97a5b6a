# baton's tasks. `make test` is the test command README.md and CI run.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X baton/cmd/internal/cli.Version=$(VERSION)

.PHONY: test generate check-generated build

# Vet, formatting and every test with the race detector.
test:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then \
		echo "gofmt needs to format: $$unformatted"; exit 1; fi
	$(GO) test -race ./...

# Regenerate messages/baton.pb.go from messages/baton.proto (needs protoc
# 3.21.12, Debian's protobuf-compiler; protoc-gen-go is a pinned go tool).
generate:
	$(GO) generate ./messages

# Fail when the committed generated code differs from a fresh generation.
check-generated: generate
	@git diff --exit-code -- messages/ || { \
		echo "messages/baton.pb.go is stale: run 'make generate' and commit"; exit 1; }

# Static binaries in bin/.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/broker ./cmd/node
