package web

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"baton/auth"
)

// access is what a request may do, from its token or session.
type access struct {
	// Role is the token's role; admin when sign-in is off.
	Role auth.Role
	// Open is set when sign-in is off: there is nothing to sign out of.
	Open bool
}

// CanRun reports whether the request may run commands.
func (a access) CanRun() bool { return a.Role == auth.Submit || a.Role == auth.Admin }

type accessKey struct{}

func accessOf(ctx context.Context) access {
	a, _ := ctx.Value(accessKey{}).(access)
	return a
}

// sessionCookie holds a signed-in browser's session.
const sessionCookie = "baton_session"

// A session is ROLE.EXPIRY.MAC, the MAC keyed by the role's token: it
// holds nothing secret, any broker that has the same tokens accepts it,
// and it dies with its token (make a new one to sign everyone out).
func sessionMAC(token string, role auth.Role, expiry int64) string {
	key := sha256.Sum256([]byte("baton dashboard session\x00" + token))
	m := hmac.New(sha256.New, key[:])
	fmt.Fprintf(m, "%s.%d", role, expiry)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newSession is the cookie value of a session of role until expiry.
func (s *Server) newSession(role auth.Role, expiry time.Time) string {
	e := expiry.Unix()
	return fmt.Sprintf("%s.%d.%s", role, e, sessionMAC(s.cfg.Tokens.Token(role), role, e))
}

// sessionRole checks a session cookie's value.
func (s *Server) sessionRole(value string, now time.Time) (auth.Role, bool) {
	parts := strings.Split(value, ".")
	if len(parts) != 3 {
		return "", false
	}
	role, err := auth.ParseRole(parts[0])
	if err != nil {
		return "", false
	}
	token := s.cfg.Tokens.Token(role)
	expiry, err := strconv.ParseInt(parts[1], 10, 64)
	if token == "" || err != nil || now.Unix() >= expiry {
		return "", false
	}
	want := sessionMAC(token, role, expiry)
	return role, hmac.Equal([]byte(parts[2]), []byte(want))
}

// authenticate finds who r comes from: a bearer token, else a session
// cookie; false for nobody (when sign-in is on).
func (s *Server) authenticate(r *http.Request) (access, bool) {
	if s.cfg.Tokens.Empty() {
		return access{Role: auth.Admin, Open: true}, true
	}
	// A bearer token decides; another scheme (a proxy's Basic) leaves it
	// to the session.
	if scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		role, ok := s.cfg.Tokens.Role(strings.TrimSpace(token))
		return access{Role: role}, ok
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return access{}, false
	}
	role, ok := s.sessionRole(c.Value, time.Now())
	return access{Role: role}, ok
}

// hostAllowed guards a dashboard without sign-in against DNS rebinding: a
// web page of another site whose name it has pointed at this machine
// could otherwise drive the dashboard from a visitor's browser. Only
// requests addressed to an IP address, localhost or this machine's name
// are served.
func (s *Server) hostAllowed(r *http.Request) bool {
	if !s.cfg.Tokens.Empty() {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if net.ParseIP(strings.Trim(host, "[]")) != nil || host == "localhost" {
		return true
	}
	name, err := os.Hostname()
	return err == nil && strings.EqualFold(host, name)
}

// guard lets a request through to next when it may use the dashboard,
// with its access in its context. A page request without sign-in goes to
// the sign-in page; an API request gets 401.
func (s *Server) guard(api bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if !s.hostAllowed(r) {
			const why = "this dashboard has no sign-in, so it answers only requests to an IP address, localhost or this machine's name"
			if api {
				apiError(w, http.StatusMisdirectedRequest, why)
			} else {
				http.Error(w, "baton: "+why, http.StatusMisdirectedRequest)
			}
			return
		}
		a, ok := s.authenticate(r)
		if !ok {
			if api {
				w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
				why := "sign in: send Authorization: Bearer TOKEN (a token from the broker's DATA-DIR/credentials: admin.token, submit.token or watch.token)"
				if scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
					why = "that bearer token is not one of this broker's (admin.token, submit.token or watch.token in its DATA-DIR/credentials)"
				}
				apiError(w, http.StatusUnauthorized, why)
				return
			}
			http.Redirect(w, r, "/signin?next="+url.QueryEscape(localPath(r.URL.RequestURI())), http.StatusSeeOther)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), accessKey{}, a)))
	}
}

// securityHeaders keep the pages to themselves: no script, style or frame
// from elsewhere, no inline script, nothing sniffed, nothing referred.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// localPath is p when it is a path on this site, else "/": a sign-in
// never sends anyone elsewhere. Browsers drop tabs and newlines from a
// Location and read a backslash as a slash, so "/\t/evil.example" would
// lead off-site: such characters are refused outright.
func localPath(p string) string {
	u, err := url.Parse(p)
	switch {
	case err != nil || u.Scheme != "" || u.Host != "" || u.User != nil:
		return "/"
	case !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//"):
		return "/"
	case strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }):
		return "/"
	}
	return p
}

// maxFormBytes bounds a form's body (a token, a command of 64 KiB
// escaped), and formTimeout how long it may take to arrive: the sign-in
// form is open to anyone.
const (
	maxFormBytes = 8 * 64 << 10
	formTimeout  = 10 * time.Second
)

// readForm reads a request's form within bounds, answering the error
// itself (false) when it cannot.
func readForm(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		return true
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(formTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "baton: unreadable form: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// handleSignIn is GET and POST /signin.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if !readForm(w, r) {
		return
	}
	code := http.StatusOK
	next := localPath(r.FormValue("next"))
	if s.cfg.Tokens.Empty() {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	data := signInData{Next: next, TTL: fmt.Sprintf("%g hours", s.cfg.SessionTTL.Hours())}
	if r.Method == http.MethodPost {
		role, ok := s.cfg.Tokens.Role(strings.TrimSpace(r.PostFormValue("token")))
		if ok {
			expiry := time.Now().Add(s.cfg.SessionTTL)
			http.SetCookie(w, &http.Cookie{
				Name: sessionCookie, Value: s.newSession(role, expiry), Path: "/",
				Expires: expiry, MaxAge: int(s.cfg.SessionTTL.Seconds()),
				HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
			})
			s.cfg.Logger.Info("signed in", keyRole, role, keyRemote, r.RemoteAddr)
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
		s.cfg.Logger.Warn("sign-in refused: unknown token", keyRemote, r.RemoteAddr)
		data.Error = "That is not one of this broker's tokens. Paste the whole content of admin.token, submit.token or watch.token from the broker's DATA-DIR/credentials."
		code = http.StatusUnauthorized
	}
	s.render(w, r, code, view{Title: "Sign in", Page: "signin", Data: data})
}

type signInData struct {
	Next, Error string
	TTL         string // how long a session lasts
}

// handleSignOut is POST /signout.
func (s *Server) handleSignOut(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}
