package cli

import (
	"testing"

	"github.com/alecthomas/kong"

	"baton/discovery"
)

// --discover goes alone, with =HOST[:PORT], or from the environment.
func TestDiscover(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
		bad  bool
	}{
		{args: nil, want: ""},
		{args: []string{"--discover"}, want: discovery.Broadcast},
		{args: []string{"--discover=10.0.0.5"}, want: "10.0.0.5:4222"},
		{args: []string{"--discover=10.0.0.5:4300"}, want: "10.0.0.5:4300"},
		{args: []string{"--discover=false"}, want: ""},
		{args: []string{"--discover=10.0.0.5:x"}, bad: true},
		{env: "true", want: discovery.Broadcast},
		{env: "192.168.1.255", want: "192.168.1.255:4222"},
		{env: "false", want: ""},
		{env: "10.0.0.5:4300", args: []string{"--discover=false"}, want: ""},
	} {
		var c struct {
			Discover Discover `env:"TEST_BATON_DISCOVER"`
		}
		t.Setenv("TEST_BATON_DISCOVER", tc.env)
		p, err := kong.New(&c)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Parse(tc.args)
		switch {
		case tc.bad && err == nil:
			t.Errorf("%v (env %q): parsed as %q, want an error", tc.args, tc.env, c.Discover.Target)
		case !tc.bad && (err != nil || c.Discover.Target != tc.want):
			t.Errorf("%v (env %q): %q, %v; want %q", tc.args, tc.env, c.Discover.Target, err, tc.want)
		}
	}
}
