// Package discovery lets nodes find a broker on their LAN: a node
// broadcasts a small UDP request to the broker's port, and every broker
// that hears it answers with where NATS clients reach it and whether it
// requires credentials and TLS. An answer carries no secret, and decides
// nothing about trust: the connection's TLS and credentials still do.
//
// A request is RequestMagic and a protobuf DiscoverRequest, padded to
// RequestSize bytes; an answer is AnswerMagic and a DiscoverReply, never
// larger than the request it answers (so a request with a forged source
// draws nothing larger at its victim). Datagrams of another size or shape
// are ignored.
package discovery

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// The magic bytes that start each datagram, with the format's version.
var (
	RequestMagic = []byte("baton?1\n")
	AnswerMagic  = []byte("baton!1\n")
)

// RequestSize is the size a node pads its requests to. A responder takes
// requests of RequestSize to MaxRequestSize bytes, and answers in at most
// as many bytes as the request had.
const (
	RequestSize    = 512
	MaxRequestSize = 1024
)

// DefaultPort is the broker's default port, where --discover asks when it
// names no port.
const DefaultPort = 4222

// nonceLen is the size of a request's nonce.
const nonceLen = 16

// maxAddrLen bounds each address an answer carries.
const maxAddrLen = 255

// errMalformed is why a datagram is ignored.
var errMalformed = errors.New("not a baton discovery datagram")

// encodeRequest is the datagram asking for brokers, nonce its nonce.
func encodeRequest(nonce []byte) ([]byte, error) {
	req := &messages.DiscoverRequest{Nonce: nonce, Protocol: messages.Protocol}
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	// Padding to the size, then once more for the bytes the padding's own
	// tag and length took.
	for range 2 {
		short := RequestSize - len(RequestMagic) - len(body)
		if short <= 0 {
			break
		}
		if req.Padding == nil {
			short -= 3 // the tag and a two-byte length
		}
		req.Padding = make([]byte, len(req.Padding)+max(short, 0))
		if body, err = proto.Marshal(req); err != nil {
			return nil, err
		}
	}
	if n := len(RequestMagic) + len(body); n != RequestSize {
		return nil, fmt.Errorf("discovery: a request of %d bytes, want %d", n, RequestSize)
	}
	return append(bytes.Clone(RequestMagic), body...), nil
}

// decodeRequest returns the request a datagram holds, or errMalformed.
func decodeRequest(d []byte) (*messages.DiscoverRequest, error) {
	if len(d) < RequestSize || len(d) > MaxRequestSize || !bytes.HasPrefix(d, RequestMagic) {
		return nil, errMalformed
	}
	var req messages.DiscoverRequest
	if err := proto.Unmarshal(d[len(RequestMagic):], &req); err != nil || len(req.Nonce) != nonceLen {
		return nil, errMalformed
	}
	return &req, nil
}

// encodeAnswer is the datagram answering a request, at most limit bytes:
// addresses that do not fit are left out (the first always fits).
func encodeAnswer(a *messages.DiscoverReply, limit int) ([]byte, error) {
	a = proto.CloneOf(a)
	for {
		body, err := proto.Marshal(a)
		if err != nil {
			return nil, err
		}
		if len(AnswerMagic)+len(body) <= limit {
			return append(bytes.Clone(AnswerMagic), body...), nil
		}
		if len(a.Addrs) <= 1 {
			return nil, fmt.Errorf("discovery: an answer of %d bytes does not fit %d", len(AnswerMagic)+len(body), limit)
		}
		a.Addrs = a.Addrs[:len(a.Addrs)-1]
	}
}

// decodeAnswer returns the answer to the request with nonce that a
// datagram holds, or errMalformed.
func decodeAnswer(d, nonce []byte) (*messages.DiscoverReply, error) {
	if len(d) > MaxRequestSize || !bytes.HasPrefix(d, AnswerMagic) {
		return nil, errMalformed
	}
	var a messages.DiscoverReply
	if err := proto.Unmarshal(d[len(AnswerMagic):], &a); err != nil || !bytes.Equal(a.Nonce, nonce) || len(a.Addrs) == 0 {
		return nil, errMalformed
	}
	for _, addr := range a.Addrs {
		if addr == "" || len(addr) > maxAddrLen {
			return nil, errMalformed
		}
	}
	return &a, nil
}
