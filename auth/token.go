package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TokenRoles are the roles the dashboard signs in with a token: the
// node role is a node's, never a person's.
func TokenRoles() []Role { return []Role{Watch, Submit, Admin} }

// TokenFileName is the file of role's dashboard token in Dir.
func TokenFileName(r Role) string { return string(r) + ".token" }

// tokenPrefix marks a baton token wherever it is pasted or leaked (a log,
// a shell history), as GitHub's ghp_ marks its tokens.
const tokenPrefix = "baton_"

// Tokens are the dashboard's bearer tokens, one per role of TokenRoles.
// The zero value knows none.
type Tokens struct {
	byRole map[Role]string
}

// EnsureTokens makes, in dir, the token of every role of TokenRoles that
// is missing (the directory with mode 0700, each file 0600, holding the
// token on one line), and returns all of them and the paths it made. It
// refuses a token file that others may read.
func EnsureTokens(dir string) (Tokens, []string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Tokens{}, nil, fmt.Errorf("credentials directory %s: %w", dir, err)
	}
	t := Tokens{byRole: make(map[Role]string)}
	var made []string
	for _, r := range TokenRoles() {
		path := filepath.Join(dir, TokenFileName(r))
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			// 130 random bits, in base32: no guessing, and safe in a header.
			token := tokenPrefix + string(r) + "_" + rand.Text()
			if err := writeAtomic(path, []byte(token+"\n"), 0o600); err != nil {
				return Tokens{}, nil, err
			}
			made = append(made, path)
		}
		token, err := loadToken(path)
		if err != nil {
			return Tokens{}, nil, err
		}
		t.byRole[r] = token
	}
	return t, made, nil
}

// minTokenLen refuses a token short enough to guess, whoever wrote it.
const minTokenLen = 20

// loadToken reads the token at path: its one line.
func loadToken(path string) (string, error) {
	b, err := readPrivate(path)
	if err != nil {
		return "", err
	}
	token := string(bytes.TrimSpace(b))
	switch {
	case len(token) < minTokenLen:
		return "", fmt.Errorf("%w: %s holds a token of %d characters, at least %d needed", ErrCredential, path, len(token), minTokenLen)
	case strings.ContainsFunc(token, func(c rune) bool { return c <= ' ' || c > '~' }):
		return "", fmt.Errorf("%w: %s holds more than one token, or one with spaces or unprintable characters", ErrCredential, path)
	}
	return token, nil
}

// Role is the role whose token token is, false for none. It takes the
// same time whichever role matches, or none.
func (t Tokens) Role(token string) (Role, bool) {
	got := sha256.Sum256([]byte(token))
	var found Role
	for _, r := range TokenRoles() {
		want, ok := t.byRole[r]
		if !ok {
			continue
		}
		w := sha256.Sum256([]byte(want))
		if subtle.ConstantTimeCompare(got[:], w[:]) == 1 {
			found = r
		}
	}
	return found, found != ""
}

// Token is role's token, empty when there is none.
func (t Tokens) Token(r Role) string { return t.byRole[r] }

// Empty reports whether t knows no token: sign-in is off.
func (t Tokens) Empty() bool { return len(t.byRole) == 0 }

// FileKeyName is the file, in the credentials directory, of the key
// that signs the file store's tickets: brokers that share the
// credentials share it too.
const FileKeyName = "files.key"

// EnsureFileKey returns the file store's ticket key from dir, making it
// (256 random bits, hex, mode 0600; the directory 0700) when it is
// missing. It refuses a key file that others may read.
func EnsureFileKey(dir string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileKeyName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := writeAtomic(path, []byte(hex.EncodeToString(randomKey())+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	b, err := readPrivate(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("%w: %s holds no key of 64 hex digits or more", ErrCredential, path)
	}
	return key, nil
}

func randomKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}
