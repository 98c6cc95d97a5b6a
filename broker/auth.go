package broker

import (
	"net"

	"baton/auth"
	"baton/bus"
)

// authorize sets who srv lets in, as cfg.Auth says: with credentials
// required, the users of every role's credential (made if missing);
// otherwise anyone.
func (b *Broker) authorize(srv *bus.ServerConfig) error {
	if !b.authRequired() {
		srv.NoAuth, srv.Users = true, nil
		if b.cfg.Auth == AuthNone {
			b.cfg.Logger.Warn("credentials not required (--auth=none): anyone who reaches the broker can run commands", keyAddr, srv.Addr)
		} else {
			b.cfg.Logger.Info("credentials not required: every listen address is on loopback", keyAddr, srv.Addr)
		}
		return nil
	}
	dir := auth.Dir(b.cfg.DataDir)
	creds, made, err := auth.Ensure(dir)
	if err != nil {
		return err
	}
	for _, path := range made {
		b.cfg.Logger.Info("credential made", keyPath, path)
	}
	srv.NoAuth, srv.Users = false, nil
	for _, c := range creds {
		srv.Users = append(srv.Users, bus.User{Nkey: c.Public, Permissions: c.Role.Permissions()})
	}
	if b.cfg.HTTP != "" {
		// The dashboard's sign-in, and the users it submits as.
		tokens, made, err := auth.EnsureTokens(dir)
		if err != nil {
			return err
		}
		for _, path := range made {
			b.cfg.Logger.Info("dashboard token made", keyPath, path)
		}
		if b.webUsers, err = webUsers(); err != nil {
			return err
		}
		b.tokens = tokens
		srv.Users = append(srv.Users, webUsersOf(b.webUsers)...)
		if !loopback(b.cfg.HTTP) {
			b.cfg.Logger.Warn("the dashboard is plain HTTP: its tokens and sessions cross the network in clear; reach it through a tunnel or a TLS proxy", keyHTTP, b.cfg.HTTP)
		}
	}
	b.cfg.Logger.Info("credentials required", keyDir, dir)
	return nil
}

// authRequired resolves cfg.Auth: auto requires credentials unless every
// address the broker listens on is a loopback one.
func (b *Broker) authRequired() bool {
	switch b.cfg.Auth {
	case AuthRequired:
		return true
	case AuthNone:
		return false
	}
	addrs := []string{b.cfg.Server.Addr}
	if b.cfg.HTTP != "" {
		addrs = append(addrs, b.cfg.HTTP)
	}
	for _, a := range addrs {
		if !loopback(a) {
			return true
		}
	}
	return false
}

// loopback reports whether host:port names a loopback interface only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
