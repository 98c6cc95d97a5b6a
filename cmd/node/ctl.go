package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/agent"
	"baton/bundle"
	"baton/cmd/internal/cli"
	"baton/cmd/internal/console"
	"baton/election"
	"baton/messages"
)

// CtlCmd is `node ctl NAME show|set|leave`.
type CtlCmd struct {
	Name CtlName `arg:"" help:"The member to control, as 'node status' lists it."`
}

// CtlName is the member named, and what to do with it.
type CtlName struct {
	Name  string      `arg:"" help:"The member to control, as 'node status' lists it."`
	Show  CtlShowCmd  `cmd:"" help:"Print the node's settings and runtime figures: memory in use, soft memory limit, GOMAXPROCS, max parallel, exec timeout, running commands."`
	Set   CtlSetCmd   `cmd:"" help:"Change one setting of the running node at once, without a restart, and print its new value. It lasts until the node restarts."`
	Leave CtlLeaveCmd `cmd:"" help:"Make the node leave the cluster gracefully, as SIGTERM does: a master finishes the commands it runs, and the next in rank takes over at once."`
}

// CtlShowCmd is `node ctl NAME show`.
type CtlShowCmd struct {
	JSON bool `name:"json" env:"BATON_JSON" help:"Print the settings as one JSON object: {name, version, master, memory_in_use, memory_limit, max_procs, cpus, max_parallel, exec_timeout_ms, max_exec_timeout_ms, exec_memory_limit, running, waiting} (sizes in bytes, 0: none)."`
}

// CtlSetCmd is `node ctl NAME set SETTING VALUE`.
type CtlSetCmd struct {
	Setting string `arg:"" enum:"${ctl_settings}" help:"memory-limit: the node process's soft memory limit (GOMEMLIMIT), such as 256MiB (at least ${min_memory_limit}), or off; max-procs: GOMAXPROCS, the CPUs it runs Go code on at once (1 to ${max_max_procs}); max-parallel: commands it runs at once as master, 1 to ${max_max_parallel} (more wait; those running go on); exec-timeout: run time of a command that asks for none, such as 30s (${min_exec_timeout} to the node's --max-exec-timeout)."`
	Value   string `arg:"" help:"The new value."`
}

// CtlLeaveCmd is `node ctl NAME leave`.
type CtlLeaveCmd struct{}

// value is the value to send: its form checked here, its range by the
// node.
func (s *CtlSetCmd) value() (string, error) {
	switch s.Setting {
	case agent.SettingMemoryLimit:
		if strings.EqualFold(s.Value, "off") {
			return "off", nil
		}
		var b cli.ByteSize
		if err := b.UnmarshalText([]byte(s.Value)); err != nil {
			return "", fmt.Errorf("memory-limit: %w, or off", err)
		}
		if b != 0 && b < agent.MinMemoryLimit {
			return "", fmt.Errorf("memory-limit %s: at least %s (or 0 or off for none): below what a node needs, it would collect garbage all the time", s.Value, bundle.Size(agent.MinMemoryLimit))
		}
		return strconv.FormatInt(int64(b), 10), nil
	case agent.SettingMaxProcs, agent.SettingMaxParallel:
		if _, err := strconv.Atoi(s.Value); err != nil {
			return "", fmt.Errorf("%s %q: not a number", s.Setting, s.Value)
		}
	case agent.SettingExecTimeout:
		if _, err := time.ParseDuration(s.Value); err != nil {
			return "", fmt.Errorf("exec-timeout %q: not a duration, such as 30s or 2m", s.Value)
		}
	}
	return s.Value, nil
}

// Run shows the node's settings.
func (s *CtlShowCmd) Run(g *Globals, c *CtlName) error {
	r, _, err := c.control(g, &messages.NodeControl{Action: messages.ControlAction_CONTROL_ACTION_SHOW})
	if err != nil {
		return err
	}
	return writeSettings(os.Stdout, r.Settings, s.JSON)
}

// Run changes the setting.
func (s *CtlSetCmd) Run(g *Globals, c *CtlName) error {
	v, err := s.value()
	if err != nil {
		// As the node's own refusals read.
		return &console.ExitError{Code: cli.ExitUsage, Err: fmt.Errorf("%s: %w", c.Name, err)}
	}
	r, _, err := c.control(g, &messages.NodeControl{Action: messages.ControlAction_CONTROL_ACTION_SET, Setting: s.Setting, Value: v})
	if err != nil {
		return err
	}
	now := agent.ShowSetting(r.Settings, s.Setting)
	fmt.Printf("%s: %s %s (was %s)\n", c.Name, s.Setting, now, r.Was)
	return nil
}

// Run asks the node to leave.
func (*CtlLeaveCmd) Run(g *Globals, c *CtlName) error {
	r, a, err := c.control(g, &messages.NodeControl{Action: messages.ControlAction_CONTROL_ACTION_LEAVE})
	if err != nil {
		return err
	}
	running := ""
	if held := r.Settings.Running + r.Settings.Waiting; held > 0 {
		running = fmt.Sprintf("; it finishes the %s it runs as master", plural(int(held), "command"))
	}
	switch {
	case r.Settings.Master && len(a.Members) > 1:
		fmt.Printf("%s: leaving the cluster, as on SIGTERM; it was master: the next in rank takes over%s\n", c.Name, running)
	case r.Settings.Master:
		fmt.Printf("%s: leaving the cluster, as on SIGTERM; it was master and the only member: there is no master until a node joins%s\n", c.Name, running)
	default:
		fmt.Printf("%s: leaving the cluster, as on SIGTERM\n", c.Name)
	}
	return nil
}

// ctlTimeout bounds the wait for a node's answer.
const ctlTimeout = 5 * time.Second

// control sends req to the member named c.Name and returns its answer,
// and the cluster as the broker saw it before. An unknown name or a value
// the node refuses is a usage error (exit 2); a credential that may not
// control nodes, exit 1.
func (c *CtlName) control(g *Globals, req *messages.NodeControl) (*messages.NodeControlReply, *messages.Announcement, error) {
	var reply messages.NodeControlReply
	var a *messages.Announcement
	err := g.askAs("ctl", "this credential may not control nodes (it needs the admin role: admin.creds)",
		fmt.Sprintf("%s did not answer within %v", c.Name, ctlTimeout), ctlTimeout,
		func(ctx context.Context, nc *nats.Conn) error {
			var err error
			if a, err = election.Get(ctx, nc); err != nil {
				return err
			}
			if !a.NodeControl {
				return errors.New("this broker's build lets no one control nodes; upgrade it")
			}
			i := slices.IndexFunc(a.Members, func(m *messages.Member) bool { return m.Name == c.Name })
			if i < 0 {
				names := make([]string, len(a.Members))
				for j, m := range a.Members {
					names[j] = m.Name
				}
				members := "none"
				if len(names) > 0 {
					members = strings.Join(names, ", ")
				}
				return &console.ExitError{Code: cli.ExitUsage, Err: fmt.Errorf("no member is named %q (members: %s; a node waiting for a slot or leaving is none)", c.Name, members)}
			}
			m := a.Members[i]
			data, err := proto.Marshal(req)
			if err != nil {
				return err
			}
			msg, err := nc.RequestWithContext(ctx, messages.ControlSubject(m.InstanceId), data)
			if errors.Is(err, nats.ErrNoResponders) {
				return fmt.Errorf("%s does not answer control requests (version %s); node ctl needs a build that has it", c.Name, m.Version)
			}
			if err != nil {
				return err
			}
			return proto.Unmarshal(msg.Data, &reply)
		})
	switch {
	case err != nil:
		return nil, nil, err
	case reply.Error != "" && reply.BadValue:
		return nil, nil, &console.ExitError{Code: cli.ExitUsage, Err: fmt.Errorf("%s: %s", c.Name, reply.Error)}
	case reply.Error != "":
		return nil, nil, fmt.Errorf("%s: %s", c.Name, reply.Error)
	case reply.Settings == nil:
		return nil, nil, fmt.Errorf("%s answered without its settings", c.Name)
	}
	return &reply, a, nil
}

// plural is "1 command", "2 commands".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// writeSettings prints a node's settings, a line each, or as JSON.
func writeSettings(w io.Writer, s *messages.NodeSettings, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(map[string]any{
			"name": s.Name, "version": s.Version, "master": s.Master,
			"memory_in_use": s.MemoryInUse, "memory_limit": s.MemoryLimit,
			"max_procs": s.MaxProcs, "cpus": s.Cpus, "max_parallel": s.MaxParallel,
			"exec_timeout_ms": s.ExecTimeoutMs, "max_exec_timeout_ms": s.MaxExecTimeoutMs,
			"exec_memory_limit": s.ExecMemoryLimit, "running": s.Running, "waiting": s.Waiting,
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	role := "standby"
	if s.Master {
		role = "master"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range [][2]string{
		{"node", fmt.Sprintf("%s (%s, version %s)", s.Name, role, s.Version)},
		{"memory in use", bundle.Size(int64(s.MemoryInUse))},
		{"memory-limit", agent.ShowSize(s.MemoryLimit) + " (soft, GOMEMLIMIT)"},
		{"max-procs", fmt.Sprintf("%d (of %d CPUs)", s.MaxProcs, s.Cpus)},
		{"max-parallel", strconv.Itoa(int(s.MaxParallel))},
		{"exec-timeout", fmt.Sprintf("%v (at most %v asked for)", time.Duration(s.ExecTimeoutMs)*time.Millisecond, time.Duration(s.MaxExecTimeoutMs)*time.Millisecond)},
		{"exec-memory-limit", agent.ShowSize(s.ExecMemoryLimit) + " (per command)"},
		{"running", fmt.Sprintf("%s, %d waiting for a slot", plural(int(s.Running), "command"), s.Waiting)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}
