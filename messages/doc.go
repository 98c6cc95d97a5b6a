// Package messages is baton's wire protocol: the protobuf schema of
// everything baton sends over NATS and the Go code generated from it, the
// subjects and headers each message travels with, and the size budget.
package messages

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=paths=source_relative baton.proto"
