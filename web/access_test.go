package web

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// A sign-in sends people to a path of this site, whatever next says.
func TestLocalPath(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/jobs?state=failed&node=alpha", "/jobs?state=failed&node=alpha"},
		{"/jobs/1m80x1c75en5c2e", "/jobs/1m80x1c75en5c2e"},
		{"", "/"},
		{"jobs", "/"},
		{"//evil.example/", "/"},
		{"/\\evil.example/", "/"},
		{"/\t/evil.example/", "/"},
		{"/\n/evil.example/", "/"},
		{"https://evil.example/", "/"},
		{"javascript:alert(1)", "/"},
	} {
		if got := localPath(c.in); got != c.want {
			t.Errorf("localPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Live output is cut between characters; a character cut short and given
// again whole (as the client does when the result comes) shows once.
func TestNDJSON_WholeCharacters(t *testing.T) {
	w := httptest.NewRecorder()
	n := newNDJSON(w)
	n.output(1, []byte("ab\xe2\x82"))
	n.output(1, []byte("\xac!"))
	n.output(2, []byte("x\xe2"))
	n.output(2, []byte("€"))
	n.finish()
	want := `{"stdout":"ab"}` + "\n" + `{"stdout":"€!"}` + "\n" + `{"stderr":"x"}` + "\n" + `{"stderr":"€"}` + "\n"
	if got := w.Body.String(); got != want {
		t.Errorf("lines:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(w.Body.String(), "\ufffd") {
		t.Error("a replacement character was written")
	}
}
