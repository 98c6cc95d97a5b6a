package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// ErrCredential is wrapped by the errors of reading or making credentials.
var ErrCredential = errors.New("auth: bad credential")

// Credential is one role's key: an nkey seed file, as `nats --nkey` reads
// it, whose comment lines name the role.
type Credential struct {
	Role Role
	// Path is the file.
	Path string
	// Public is the key's public half, which the broker lets in.
	Public string
}

// Dir is where a broker keeps the credentials, under its data directory.
func Dir(dataDir string) string { return filepath.Join(dataDir, "credentials") }

// FileName is the file of role's credential in Dir.
func FileName(r Role) string { return string(r) + ".creds" }

const roleLine = "# baton role: "

// Ensure makes, in dir, the credential of every role that is missing (the
// directory with mode 0700, each file 0600), and returns all of them and
// the paths it made. It refuses a credential file that others may read.
func Ensure(dir string) (creds []Credential, made []string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("credentials directory %s: %w", dir, err)
	}
	for _, r := range Roles() {
		path := filepath.Join(dir, FileName(r))
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := write(path, r); err != nil {
				return nil, nil, err
			}
			made = append(made, path)
		}
		c, err := Load(path)
		if err != nil {
			return nil, nil, err
		}
		if c.Role != r {
			return nil, nil, fmt.Errorf("%w: %s holds role %q, want %q", ErrCredential, path, c.Role, r)
		}
		creds = append(creds, c)
	}
	return creds, made, nil
}

// write makes a new key for r and writes it to path, atomically, mode 0600.
func write(path string, r Role) error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("make %s credential: %w", r, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("make %s credential: %w", r, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# A baton credential: an nkey seed. Keep it secret (mode 0600).\n")
	fmt.Fprintf(&b, "%s%s\n", roleLine, r)
	fmt.Fprintf(&b, "# For baton: node --credentials %s ...\n", filepath.Base(path))
	fmt.Fprintf(&b, "# For the nats CLI: nats --nkey %s --inbox-prefix %s ...\n", filepath.Base(path), r.InboxPrefix())
	b.Write(seed)
	b.WriteByte('\n')
	return writeAtomic(path, b.Bytes(), 0o600)
}

// writeAtomic replaces path with data, with mode whatever was there:
// written to a temporary file beside it, synced, then renamed over it.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".baton-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readPrivate reads a secret file, refusing one that others may read.
func readPrivate(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCredential, err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s may be read by others (mode %#o); chmod 600 %s", ErrCredential, path, info.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCredential, err)
	}
	return b, nil
}

// Load reads the credential at path. It refuses a file that others may
// read, or one that names no role.
func Load(path string) (Credential, error) {
	b, err := readPrivate(path)
	if err != nil {
		return Credential{}, err
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: %s holds no nkey seed: %w", ErrCredential, path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return Credential{}, fmt.Errorf("%w: %s holds no user nkey", ErrCredential, path)
	}
	var role Role
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if name, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), roleLine); ok {
			if role, err = ParseRole(strings.TrimSpace(name)); err != nil {
				return Credential{}, fmt.Errorf("%w: %s: %w", ErrCredential, path, err)
			}
		}
	}
	if role == "" {
		return Credential{}, fmt.Errorf("%w: %s names no baton role (a line %q)", ErrCredential, path, roleLine+"ROLE")
	}
	return Credential{Role: role, Path: path, Public: pub}, nil
}
