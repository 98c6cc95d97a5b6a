package agent

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"

	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// Results are sealed so that a requester accepts them only from the master
// the broker announced, and only the requester reads their output: each
// node and each requester has an X25519 key; the master's is announced by
// the broker (messages.Member.exec_key), the requester's travels with its
// requests. The two share a secret, from which two keys are derived: one
// encrypts the output (AES-GCM), the other makes an HMAC over the result,
// box included. One key exchange per pair, then a cipher and a hash per
// result.

// errUnsealed is why a result is not accepted.
var errUnsealed = errors.New("agent: result not sealed by the announced master")

// keyring derives and remembers the result keys a node or requester shares
// with its peers. It is safe for concurrent use.
type keyring struct {
	priv *ecdh.PrivateKey
	pub  []byte // priv's public half, encoded once

	mu   sync.Mutex
	keys map[string]pairKeys // by the peer's public key
}

// pairKeys are what a node and a requester share.
type pairKeys struct {
	mac []byte
	box cipher.AEAD
}

// maxKeys bounds a keyring: when full, it starts afresh (a derivation
// costs tens of microseconds).
const maxKeys = 4096

func newKeyring() (*keyring, error) {
	priv, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return &keyring{priv: priv, pub: priv.PublicKey().Bytes(), keys: make(map[string]pairKeys)}, nil
}

// public is the key to give peers. Callers must not change it.
func (k *keyring) public() []byte { return k.pub }

// shared returns the keys shared with the peer whose public key is peer.
func (k *keyring) shared(peer []byte) (pairKeys, error) {
	k.mu.Lock()
	key, ok := k.keys[string(peer)]
	k.mu.Unlock()
	if ok {
		return key, nil
	}
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return pairKeys{}, err
	}
	secret, err := k.priv.ECDH(pub)
	if err != nil {
		return pairKeys{}, err
	}
	macKey := sha256.Sum256(append(secret, "baton exec result mac"...))
	boxKey := sha256.Sum256(append(secret, "baton exec result box"...))
	block, err := aes.NewCipher(boxKey[:])
	if err != nil {
		return pairKeys{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return pairKeys{}, err
	}
	key = pairKeys{mac: macKey[:], box: aead}
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
	if r.Job != "" {
		// Only when set: a master from before the history makes the
		// same mac as before.
		str(r.Job)
	}
	str(r.Master)
	num(m, r.Epoch)
	num(m, uint64(int64(r.ExitCode)))
	num(m, uint64(r.ErrorKind))
	str(r.Error)
	num(m, uint64(r.DurationMs))
	str(r.Stdout)
	str(r.Stderr)
	str(string(r.Box))
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

// sealResult returns a copy of r whose output is boxed and which carries
// its mac, under keys.
func sealResult(keys pairKeys, r *messages.ExecResult) (*messages.ExecResult, error) {
	out := proto.CloneOf(r)
	plain, err := proto.Marshal(&messages.Output{Stdout: r.Stdout, Stderr: r.Stderr, ResultBundle: r.ResultBundle, Outputs: r.Outputs})
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, keys.box.NonceSize(), keys.box.NonceSize()+len(plain)+keys.box.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out.Stdout, out.Stderr, out.ResultBundle, out.Outputs = "", "", nil, nil
	out.Box = keys.box.Seal(nonce, nonce, plain, nil)
	out.Mac = resultMAC(keys.mac, out)
	return out, nil
}

// openResult checks r's mac under keys and unboxes its output, in place.
func openResult(keys pairKeys, r *messages.ExecResult) error {
	if !hmac.Equal(r.Mac, resultMAC(keys.mac, r)) {
		return fmt.Errorf("%w: its mac does not verify", errUnsealed)
	}
	if len(r.Box) == 0 {
		return nil
	}
	n := keys.box.NonceSize()
	if len(r.Box) < n {
		return fmt.Errorf("%w: its box is cut short", errUnsealed)
	}
	plain, err := keys.box.Open(nil, r.Box[:n], r.Box[n:], nil)
	if err != nil {
		return fmt.Errorf("%w: its box does not open: %w", errUnsealed, err)
	}
	var o messages.Output
	if err := proto.Unmarshal(plain, &o); err != nil {
		return fmt.Errorf("%w: its box holds no output: %w", errUnsealed, err)
	}
	r.Stdout, r.Stderr, r.ResultBundle, r.Outputs, r.Box = o.Stdout, o.Stderr, o.ResultBundle, o.Outputs, nil
	return nil
}

func num(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

// chunkAD is what a chunk's box authenticates besides its data.
func chunkAD(c *messages.OutputChunk) []byte {
	h := sha256.New()
	for _, s := range []string{c.Id, c.Master} {
		num(h, uint64(len(s)))
		h.Write([]byte(s))
	}
	num(h, c.Epoch)
	num(h, uint64(c.Stream))
	num(h, c.Offset)
	return h.Sum(nil)
}

// sealChunk moves c's data into its box, under keys.
func sealChunk(keys pairKeys, c *messages.OutputChunk) error {
	nonce := make([]byte, keys.box.NonceSize(), keys.box.NonceSize()+len(c.Data)+keys.box.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	c.Box, c.Data = keys.box.Seal(nonce, nonce, c.Data, chunkAD(c)), nil
	return nil
}

// openChunk checks c's box under keys and moves its data out, in place.
func openChunk(keys pairKeys, c *messages.OutputChunk) error {
	n := keys.box.NonceSize()
	if len(c.Box) < n {
		return fmt.Errorf("%w: the chunk's box is cut short", errUnsealed)
	}
	data, err := keys.box.Open(nil, c.Box[:n], c.Box[n:], chunkAD(c))
	if err != nil {
		return fmt.Errorf("%w: the chunk's box does not open: %w", errUnsealed, err)
	}
	c.Data, c.Box = data, nil
	return nil
}
