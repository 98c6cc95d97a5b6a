package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"baton/agent"
	"baton/auth"
	"baton/bus"
	"baton/web"
)

// webRequester is the name the dashboard submits under: the history shows
// it as each web job's submitter.
const webRequester = "web"

// webUser is an in-process user the dashboard submits as, with a role's
// permissions and inbox (so that the history records that role). Its key
// is made at each start and never leaves the process.
type webUser struct {
	role auth.Role
	key  nkeys.KeyPair
	pub  string
}

// webUsers makes the users of the roles that may run commands from the
// dashboard.
func webUsers() ([]webUser, error) {
	var users []webUser
	for _, r := range auth.TokenRoles() {
		if r == auth.Watch {
			continue
		}
		k, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("make the dashboard's %s key: %w", r, err)
		}
		pub, _ := k.PublicKey()
		users = append(users, webUser{role: r, key: k, pub: pub})
	}
	return users, nil
}

// webClients run the dashboard's commands: one client per role, on
// in-process connections, made once the election answers.
type webClients struct {
	mu      sync.Mutex
	clients map[auth.Role]*agent.Client
}

// submitter is the client of role, nil until it is made and after it is
// closed.
func (w *webClients) submitter(role auth.Role) web.Submitter {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.clients[role]; ok {
		return c
	}
	return nil
}

// startWebClients connects the dashboard's clients: one per web user when
// credentials are required, else one (role "") for everyone.
func (b *Broker) startWebClients(ctx context.Context) error {
	start := func(role auth.Role, opts ...nats.Option) error {
		nc, err := b.server.Conn("baton-web", opts...)
		if err != nil {
			return err
		}
		cfg := agent.DefaultClientConfig(webRequester)
		cfg.Logger = b.cfg.Logger.With(keyComponent, "web")
		c, err := agent.Open(ctx, nc, cfg)
		if err != nil {
			return fmt.Errorf("dashboard's %s client: %w", role, err)
		}
		b.webClients.mu.Lock()
		if b.webClients.clients == nil {
			b.webClients.clients = make(map[auth.Role]*agent.Client)
		}
		b.webClients.clients[role] = c
		b.webClients.mu.Unlock()
		return nil
	}
	if len(b.webUsers) == 0 {
		if err := start(""); err != nil {
			return err
		}
	}
	for _, u := range b.webUsers {
		if err := start(u.role, nats.Nkey(u.pub, u.key.Sign), nats.CustomInboxPrefix(u.role.InboxPrefix())); err != nil {
			return err
		}
	}
	return nil
}

// closeWebClients closes what startWebClients opened; commands from the
// dashboard find no client then.
func (b *Broker) closeWebClients(ctx context.Context) error {
	w := &b.webClients
	w.mu.Lock()
	clients := w.clients
	w.clients = nil
	w.mu.Unlock()
	var errs []error
	for _, c := range clients {
		errs = append(errs, c.Close(ctx))
	}
	return errors.Join(errs...)
}

// webUsersOf are the bus users of the dashboard's web users.
func webUsersOf(users []webUser) []bus.User {
	out := make([]bus.User, len(users))
	for i, u := range users {
		out[i] = bus.User{Nkey: u.pub, Permissions: u.role.Permissions()}
	}
	return out
}
