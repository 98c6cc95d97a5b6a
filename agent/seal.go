package agent

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"sync"

	"baton/messages"
)

// Results are sealed so that a requester accepts them only from the master
// the broker announced: each node and each requester has an X25519 key;
// the master's is announced by the broker (messages.Member.exec_key), the
// requester's travels with its requests. The two share a secret, from
// which the key of an HMAC over each result is derived: one key exchange
// per pair, then a hash per result.

// errUnsealed is why a result is not accepted.
var errUnsealed = errors.New("agent: result not sealed by the announced master")

// keyring derives and remembers the result keys a node or requester shares
// with its peers. It is safe for concurrent use.
type keyring struct {
	priv *ecdh.PrivateKey

	mu   sync.Mutex
	keys map[string][]byte // peer's public key → result key
}

// maxKeys bounds a keyring: when full, it starts afresh (a derivation
// costs tens of microseconds).
const maxKeys = 4096

func newKeyring() (*keyring, error) {
	priv, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return &keyring{priv: priv, keys: make(map[string][]byte)}, nil
}

// public is the key to give peers.
func (k *keyring) public() []byte { return k.priv.PublicKey().Bytes() }

// shared returns the result key shared with the peer whose public key is
// peer.
func (k *keyring) shared(peer []byte) ([]byte, error) {
	k.mu.Lock()
	key, ok := k.keys[string(peer)]
	k.mu.Unlock()
	if ok {
		return key, nil
	}
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	secret, err := k.priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append(secret, "baton exec result"...))
	key = sum[:]
	k.mu.Lock()
	if len(k.keys) >= maxKeys {
		clear(k.keys)
	}
	k.keys[string(peer)] = key
	k.mu.Unlock()
	return key, nil
}

// resultMAC is the HMAC, under key, of every field of r but its mac.
func resultMAC(key []byte, r *messages.ExecResult) []byte {
	m := hmac.New(sha256.New, key)
	str := func(s string) {
		num(m, uint64(len(s)))
		m.Write([]byte(s))
	}
	str(r.Id)
	str(r.Master)
	num(m, r.Epoch)
	num(m, uint64(int64(r.ExitCode)))
	num(m, uint64(r.ErrorKind))
	str(r.Error)
	num(m, uint64(r.DurationMs))
	str(r.Stdout)
	str(r.Stderr)
	num(m, r.StdoutDropped)
	num(m, r.StderrDropped)
	for _, b := range []bool{r.TimedOut, r.StdoutTruncated, r.StderrTruncated} {
		if b {
			num(m, 1)
		} else {
			num(m, 0)
		}
	}
	return m.Sum(nil)
}

func num(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}
