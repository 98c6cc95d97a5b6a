package files

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"baton/messages"
)

// errTicket is why a ticket grants nothing.
var errTicket = errors.New("files: ticket is malformed, forged or expired; ask for the archive again")

// A ticket is "<sha256>.<expiry, Unix seconds>.<mac>": the mac, an
// HMAC-SHA256 under the broker's file key, covers the other two. It grants
// reading that one archive until the expiry, to whoever holds it; it
// travels only where its holder's results and requests do. Brokers that
// share the key (a cluster) honour each other's tickets.

func ticket(key []byte, sha string, expires time.Time) string {
	body := sha + "." + strconv.FormatInt(expires.Unix(), 10)
	return body + "." + base64.RawURLEncoding.EncodeToString(ticketMAC(key, body))
}

func ticketMAC(key []byte, body string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("baton file ticket\x00"))
	m.Write([]byte(body))
	return m.Sum(nil)
}

// checkTicket returns the archive t grants reading at now.
func checkTicket(key []byte, t string, now time.Time) (string, error) {
	i := strings.LastIndexByte(t, '.')
	if i < 0 {
		return "", errTicket
	}
	body, mac := t[:i], t[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil || !hmac.Equal(got, ticketMAC(key, body)) {
		return "", errTicket
	}
	sha, exp, ok := strings.Cut(body, ".")
	unix, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || !messages.ValidSHA256(sha) || now.After(time.Unix(unix, 0)) {
		return "", errTicket
	}
	return sha, nil
}
