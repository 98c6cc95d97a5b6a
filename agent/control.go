package agent

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/bundle"
	"baton/messages"
)

// The settings node ctl changes, as typed.
const (
	SettingMemoryLimit = "memory-limit"
	SettingMaxProcs    = "max-procs"
	SettingMaxParallel = "max-parallel"
	SettingExecTimeout = "exec-timeout"
)

// Settings lists the settings node ctl changes.
func Settings() []string {
	return []string{SettingMemoryLimit, SettingMaxProcs, SettingMaxParallel, SettingExecTimeout}
}

// Bounds of what node ctl sets.
const (
	// MinMemoryLimit is the lowest soft memory limit taken: below what a
	// node needs, the garbage collector would run all the time.
	MinMemoryLimit = 16 << 20
	// MaxMaxProcs and MaxMaxParallel bound GOMAXPROCS and --max-parallel.
	MaxMaxProcs    = 1024
	MaxMaxParallel = 10_000
	// MinExecTimeout is the shortest exec timeout taken: it also bounds
	// how long a request waits for a slot.
	MinExecTimeout = 100 * time.Millisecond
)

// badValue is a control request's setting or value that changed nothing.
type badValue struct{ error }

// handleControl answers a NodeControl (node.ctl.<instance id>): the
// node's settings, after the change it asks for, if any.
func (n *Node) handleControl(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	var req messages.NodeControl
	reply := &messages.NodeControlReply{}
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		reply.Error, reply.BadValue = "malformed control request", true
	} else {
		switch req.Action {
		case messages.ControlAction_CONTROL_ACTION_SHOW:
		case messages.ControlAction_CONTROL_ACTION_SET:
			was, err := n.set(req.Setting, req.Value)
			if err != nil {
				reply.Error, reply.BadValue = err.Error(), errors.As(err, new(badValue))
				break
			}
			reply.Was = was
			n.cfg.Logger.Info("setting changed by node ctl", keySetting, req.Setting, keyValue, n.show(req.Setting), keyWas, was)
		case messages.ControlAction_CONTROL_ACTION_LEAVE:
			n.cfg.Logger.Info("asked to leave by node ctl")
			defer n.leaveOnce.Do(func() { close(n.leave) })
		default:
			reply.Error, reply.BadValue = fmt.Sprintf("unknown action %v", req.Action), true
		}
	}
	reply.Settings = n.settings()
	b, err := proto.Marshal(reply)
	if err == nil {
		err = n.statusNC.Publish(msg.Reply, b)
	}
	if err == nil {
		// The answer first, then the leave that closes the connection.
		err = n.statusNC.Flush()
	}
	if err != nil {
		n.cfg.Logger.Error("control reply lost", keySubject, msg.Reply, keyErr, err)
	}
}

// LeaveRequested is closed when node ctl asked the node to leave: its
// owner then closes it, as on SIGTERM.
func (n *Node) LeaveRequested() <-chan struct{} { return n.leave }

// set changes setting to value and returns what it was, as shown.
func (n *Node) set(setting, value string) (was string, err error) {
	bad := func(format string, args ...any) (string, error) {
		return "", badValue{fmt.Errorf(format, args...)}
	}
	value = strings.TrimSpace(value)
	was = n.show(setting)
	switch setting {
	case SettingMemoryLimit:
		limit, err := strconv.ParseInt(value, 10, 64)
		switch {
		case value == "off" || err == nil && limit == 0:
			limit = math.MaxInt64
		case err != nil || limit < MinMemoryLimit:
			return bad("memory-limit %q: a size of at least %s, or 0 or off for none", value, bundle.Size(MinMemoryLimit))
		}
		debug.SetMemoryLimit(limit)
	case SettingMaxProcs:
		procs, err := strconv.Atoi(value)
		if err != nil || procs < 1 || procs > MaxMaxProcs {
			return bad("max-procs %q: a number from 1 to %d", value, MaxMaxProcs)
		}
		runtime.GOMAXPROCS(procs)
	case SettingMaxParallel:
		parallel, err := strconv.Atoi(value)
		if err != nil || parallel < 1 || parallel > MaxMaxParallel {
			return bad("max-parallel %q: a number from 1 to %d", value, MaxMaxParallel)
		}
		if err := n.exe.SetMaxParallel(parallel); err != nil {
			return bad("%v", err)
		}
		n.preparing.SetLimit(parallel)
	case SettingExecTimeout:
		d, err := time.ParseDuration(value)
		if err != nil || d < MinExecTimeout || d > n.cfg.MaxExecTimeout {
			return bad("exec-timeout %q: a duration such as 30s, from %v to the node's --max-exec-timeout of %v", value, MinExecTimeout, n.cfg.MaxExecTimeout)
		}
		n.execTimeout.Store(int64(d))
	default:
		return bad("unknown setting %q; want one of %s", setting, strings.Join(Settings(), ", "))
	}
	return was, nil
}

// show is setting's value now, as node ctl prints it.
func (n *Node) show(setting string) string { return ShowSetting(n.settings(), setting) }

// ShowSetting is one of s's settings as node ctl prints it.
func ShowSetting(s *messages.NodeSettings, setting string) string {
	switch setting {
	case SettingMemoryLimit:
		return ShowSize(s.MemoryLimit)
	case SettingMaxProcs:
		return strconv.Itoa(int(s.MaxProcs))
	case SettingMaxParallel:
		return strconv.Itoa(int(s.MaxParallel))
	case SettingExecTimeout:
		return (time.Duration(s.ExecTimeoutMs) * time.Millisecond).String()
	}
	return ""
}

// ShowSize is a memory limit as node ctl prints it: "none" for 0.
func ShowSize(b uint64) string {
	if b == 0 {
		return "none"
	}
	return bundle.Size(int64(b))
}

// settings are the node's settings and runtime figures now.
func (n *Node) settings() *messages.NodeSettings {
	running, waiting := n.exe.Running()
	s := &messages.NodeSettings{
		Name: n.cfg.Name, Version: n.cfg.Version,
		MemoryInUse: memoryInUse(),
		MaxProcs:    uint32(runtime.GOMAXPROCS(0)), Cpus: uint32(runtime.NumCPU()),
		MaxParallel: uint32(n.exe.MaxParallel()), ExecTimeoutMs: uint32(n.execTimeoutNow().Milliseconds()),
		MaxExecTimeoutMs: uint32(n.cfg.MaxExecTimeout.Milliseconds()), ExecMemoryLimit: uint64(n.cfg.ExecMemoryLimit),
		Running: uint32(running), Waiting: uint32(waiting),
		Master: n.member != nil && n.member.Current().GetMaster() == n.cfg.Name,
	}
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		s.MemoryLimit = uint64(limit)
	}
	return s
}

// execTimeoutNow is the run time of a command that asks for none.
func (n *Node) execTimeoutNow() time.Duration { return time.Duration(n.execTimeout.Load()) }

// memoryInUse is what the Go runtime holds from the system and has not
// given back: the figure the soft memory limit bounds.
func memoryInUse() uint64 {
	m := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 || m[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return m[0].Value.Uint64() - m[1].Value.Uint64()
}
