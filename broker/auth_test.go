package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"baton/auth"
	"baton/broker"
	"baton/broker/brokertest"
	"baton/bus"
	"baton/internal/testlog"
	"baton/messages"
)

// startAuth starts a broker that requires credentials, and returns it with
// the directory of the credentials it made.
func startAuth(t testing.TB) (*broker.Broker, string) {
	t.Helper()
	cfg := brokertest.Config(t)
	cfg.Auth = broker.AuthRequired
	return brokertest.Start(t, cfg), auth.Dir(cfg.DataDir)
}

func connAs(t testing.TB, b *broker.Broker, credential string) bus.ConnConfig {
	cfg := bus.DefaultConnConfig()
	cfg.Addrs, cfg.Name, cfg.Logger = []string{b.Addr()}, t.Name(), testlog.Logger(t)
	cfg.ConnectTimeout = 2 * time.Second
	if credential != "" {
		c, err := auth.Load(credential)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Credentials, cfg.InboxPrefix = c.Path, c.Role.InboxPrefix()
	}
	return cfg
}

// Without a credential, or with one the broker did not make, a client is
// refused at once, with a line that names the broker and says what to do.
func TestAuth_Refusals(t *testing.T) {
	b, _ := startAuth(t)
	stranger, _ := nkeys.CreateUser()
	seed, _ := stranger.Seed()
	foreign := filepath.Join(t.TempDir(), "foreign.creds")
	if err := writeFile(foreign, "# baton role: admin\n"+string(seed)+"\n"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ credential, want string }{
		"no credential":      {"", "requires credentials"},
		"foreign credential": {foreign, "is not one of the broker's"},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := bus.Connect(context.Background(), connAs(t, b, tc.credential))
			if !errors.Is(err, bus.ErrNotAuthorized) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), b.Addr()) {
				t.Errorf("got %v, want a refusal naming %s and saying %q", err, b.Addr(), tc.want)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("refused after %v, want under a second", took)
			}
		})
	}
}

type action struct {
	name string
	do   func(nc *nats.Conn) error
}

func pub(subject string) action {
	return action{"publish " + subject, func(nc *nats.Conn) error { return nc.Publish(subject, []byte("x")) }}
}

func sub(subject string) action {
	return action{"subscribe " + subject, func(nc *nats.Conn) error { _, err := nc.SubscribeSync(subject); return err }}
}

func queueSub(subject, queue string) action {
	return action{"subscribe " + subject + " in queue " + queue, func(nc *nats.Conn) error {
		_, err := nc.QueueSubscribeSync(subject, queue)
		return err
	}}
}

// Each role may do exactly what its row of the table says, on every baton
// subject, on the server's and JetStream's, and on other roles' inboxes.
func TestAuth_RolePermissions(t *testing.T) {
	b, dir := startAuth(t)
	all := []auth.Role{auth.Watch, auth.Submit, auth.Node, auth.Admin}
	submitters := []auth.Role{auth.Submit, auth.Node, auth.Admin}
	nodes := []auth.Role{auth.Node, auth.Admin}
	admins := []auth.Role{auth.Admin}
	none := []auth.Role{}
	table := []struct {
		action
		allowed []auth.Role
	}{
		{sub(messages.SubjectMaster), all},
		{pub(messages.SubjectMaster), none},
		{pub(messages.SubjectMasterGet), all},
		{sub(messages.SubjectMasterGet), none},
		{sub(messages.SubjectRegister), none},
		{sub(messages.SubjectDeregister), none},
		{pub(messages.SubjectRegister), nodes},
		{pub(messages.SubjectHeartbeat), nodes},
		{sub(messages.SubjectHeartbeat), none},
		{pub(messages.SubjectDeregister), nodes},
		{pub(messages.SubjectExec), submitters},
		{sub(messages.SubjectExec), none},
		{queueSub(messages.SubjectExec, messages.ExecQueue), nodes},
		{queueSub(messages.SubjectExec, "other"), none},
		{pub(messages.ExecStatusSubject("x")), submitters},
		{sub(messages.ExecStatusSubject("x")), nodes},
		{sub("$SYS.>"), none},
		{pub("$SYS.REQ.SERVER.PING"), none},
		{sub("$JS.>"), none},
		{pub("$JS.API.STREAM.CREATE.x"), none},
		{pub("$JS.API.STREAM.DELETE." + messages.JobStream), none},
		{pub("$JS.API.STREAM.PURGE." + messages.JobStream), none},
		{pub("$JS.API.STREAM.MSG.DELETE." + messages.JobStream), none},
		{pub("$JS.API.CONSUMER.CREATE." + messages.JobStream), none},
		{pub(messages.JobSubject("x")), none},
		// The history: written by masters, read by admins alone, with
		// baton's queries or the nats CLI.
		{pub(messages.SubjectJobRecord), nodes},
		{pub(messages.SubjectJobList), admins},
		{pub(messages.SubjectJobGet), admins},
		{pub("$JS.API.STREAM.LIST"), admins},
		{pub("$JS.API.STREAM.INFO." + messages.JobStream), admins},
		{pub("$JS.API.DIRECT.GET." + messages.JobStream), admins},
		{pub("$JS.API.STREAM.INFO.OTHER"), none},
		{pub("$KV.x.y"), none},
		{pub("$O.x.y"), none},
		{sub("_INBOX.>"), none},
		{pub("_INBOX.x"), none},
		{sub(auth.Watch.InboxPrefix() + ".>"), []auth.Role{auth.Watch}},
		{sub(auth.Submit.InboxPrefix() + ".>"), []auth.Role{auth.Submit}},
		{pub(auth.Submit.InboxPrefix() + ".x"), nodes},
		{pub(auth.Watch.InboxPrefix() + ".x"), none},
		{sub("anything.else"), none},
		{pub("anything.else"), none},
	}
	for _, role := range all {
		t.Run(string(role), func(t *testing.T) {
			cfg := connAs(t, b, filepath.Join(dir, auth.FileName(role)))
			// Each violation is also logged, asynchronously, possibly after
			// the test ends; the test reads LastError instead.
			cfg.Logger = slog.New(slog.DiscardHandler)
			for _, row := range table {
				nc, err := bus.Connect(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				err = row.do(nc)
				if err == nil {
					err = nc.Flush()
				}
				if err == nil {
					err = nc.LastError()
				}
				nc.Close()
				denied := errors.Is(err, nats.ErrPermissionViolation)
				if err != nil && !denied {
					t.Fatalf("%s: %v", row.name, err)
				}
				want := false
				for _, r := range row.allowed {
					want = want || r == role
				}
				if !denied != want {
					t.Errorf("%s: allowed %v, want %v", row.name, !denied, want)
				}
			}
		})
	}
}
