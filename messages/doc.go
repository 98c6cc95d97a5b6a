// Package messages holds the protobuf schema of everything baton sends over
// NATS, and the Go code generated from it.
package messages

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=paths=source_relative baton.proto"
