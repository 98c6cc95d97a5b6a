package cli

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"

	"baton/discovery"
)

// Discover is a flag that may go with or without a value: --discover asks
// the LAN's broadcast address (discovery.Broadcast), --discover=HOST[:PORT]
// asks there; --discover=false (as from an environment variable) is off.
type Discover struct {
	// Target is where to ask, set when the flag is.
	Target string
}

// Set reports whether the flag was given.
func (d Discover) Set() bool { return d.Target != "" }

// Decode reads the flag: bare, or with the value after '='.
func (d *Discover) Decode(ctx *kong.DecodeContext) error {
	if ctx.Scan.Peek().Type != kong.FlagValueToken {
		d.Target = discovery.Broadcast
		return nil
	}
	var v string
	if err := ctx.Scan.PopValueInto("address", &v); err != nil {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes":
		d.Target = discovery.Broadcast
		return nil
	case "false", "0", "no", "":
		d.Target = ""
		return nil
	}
	target, err := discovery.Target(v)
	if err != nil {
		return fmt.Errorf("want --discover alone, or --discover=HOST[:PORT]: %w", err)
	}
	d.Target = target
	return nil
}

// IsBool lets the flag go without a value.
func (d *Discover) IsBool() bool { return true }
