package auth_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"baton/auth"
)

func TestEnsure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "credentials")
	creds, made, err := auth.Ensure(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 4 || len(made) != 4 {
		t.Fatalf("got %d credentials, %d made; want 4 and 4", len(creds), len(made))
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v (%v), want 0700", info.Mode().Perm(), err)
	}
	for i, c := range creds {
		if c.Role != auth.Roles()[i] || filepath.Base(c.Path) != string(c.Role)+".creds" {
			t.Errorf("credential %d: %+v, want role %s in %s.creds", i, c, auth.Roles()[i], auth.Roles()[i])
		}
		info, err := os.Stat(c.Path)
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", c.Path, info.Mode().Perm(), err)
		}
		// The file is what `nats --nkey` reads: a seed among comments.
		b, _ := os.ReadFile(c.Path)
		kp, err := nkeys.ParseDecoratedNKey(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Path, err)
		}
		if pub, _ := kp.PublicKey(); pub != c.Public {
			t.Errorf("%s: public key %s, want %s", c.Path, pub, c.Public)
		}
		if !strings.Contains(string(b), "--inbox-prefix "+c.Role.InboxPrefix()) {
			t.Errorf("%s does not say which inbox prefix the nats CLI needs:\n%s", c.Path, b)
		}
	}
	again, made, err := auth.Ensure(dir)
	if err != nil || len(made) != 0 || again[0].Public != creds[0].Public {
		t.Errorf("second Ensure: made %v, err %v; want the same keys kept", made, err)
	}
}

func TestLoad_Refuses(t *testing.T) {
	dir := t.TempDir()
	creds, _, err := auth.Ensure(filepath.Join(dir, "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	open := creds[0].Path
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	noRole := filepath.Join(dir, "norole")
	seed, _ := os.ReadFile(creds[1].Path)
	var lines []string
	for _, l := range strings.Split(string(seed), "\n") {
		if !strings.Contains(l, "baton role") {
			lines = append(lines, l)
		}
	}
	if err := os.WriteFile(noRole, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("# baton role: node\nnot a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ path, want string }{
		"readable by others": {open, "chmod 600"},
		"no role":            {noRole, "names no baton role"},
		"no seed":            {garbage, "no nkey seed"},
		"missing":            {filepath.Join(dir, "missing"), "no such file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := auth.Load(tc.path)
			if !errors.Is(err, auth.ErrCredential) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrCredential saying %q", err, tc.want)
			}
		})
	}
	if _, _, err := auth.Ensure(filepath.Join(dir, "credentials")); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Ensure over a file others may read: got %v, want it refused", err)
	}
}

// The dashboard's tokens are made once each, mode 0600, and name their
// role; a token readable by others is refused.
func TestEnsureTokens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "credentials")
	tokens, made, err := auth.EnsureTokens(dir)
	if err != nil || len(made) != 3 {
		t.Fatalf("EnsureTokens: made %v, %v; want 3 made", made, err)
	}
	for _, r := range auth.TokenRoles() {
		token := tokens.Token(r)
		if got, ok := tokens.Role(token); !ok || got != r {
			t.Errorf("Role(%s's token) = %q %v, want %s", r, got, ok, r)
		}
		info, err := os.Stat(filepath.Join(dir, auth.TokenFileName(r)))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s token file: %v %v, want mode 0600", r, info, err)
		}
	}
	if _, ok := tokens.Role(tokens.Token(auth.Admin) + "x"); ok {
		t.Error("a token with a character more was taken")
	}
	if _, ok := tokens.Role(""); ok {
		t.Error("an empty token was taken")
	}
	again, made, err := auth.EnsureTokens(dir)
	if err != nil || len(made) != 0 || again.Token(auth.Watch) != tokens.Token(auth.Watch) {
		t.Fatalf("EnsureTokens again: made %v, %v; want the same tokens kept", made, err)
	}
	path := filepath.Join(dir, auth.TokenFileName(auth.Watch))
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.EnsureTokens(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("EnsureTokens with a token readable by others: %v, want a refusal saying chmod 600", err)
	}
}
