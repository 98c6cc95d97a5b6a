package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// natsLogger routes the embedded server's logs to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }

// Warnf logs at warn level, except the warning about payloads over 8 MB:
// baton sizes its max payload for the largest result on purpose (see
// MaxPayload), so that warning would only alarm operators at every start.
func (n natsLogger) Warnf(format string, v ...any) {
	if strings.HasPrefix(format, "Maximum payloads over") {
		n.l.Debug(fmt.Sprintf(format, v...))
		return
	}
	n.l.Warn(fmt.Sprintf(format, v...))
}

// Errorf logs at error level, saying in baton's words why a route was
// refused.
func (n natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	switch {
	case strings.Contains(msg, "Route Error 'Authorization Violation'"):
		n.l.Error(RouteRefusedMsg+": its credentials differ from this one's; the brokers of a cluster share one credentials directory", keyNATS, msg)
	case strings.Contains(msg, `authentication error - User "`+routeUser+`"`):
		n.l.Error("refused a broker's route: its credentials differ from this one's; the brokers of a cluster share one credentials directory", keyNATS, msg)
	default:
		n.l.Error(msg)
	}
}

// RouteRefusedMsg starts the log line of a route another broker refused.
const RouteRefusedMsg = "a broker of the cluster refused this broker"

func (n natsLogger) Debugf(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }

// Fatalf logs at error level and returns: the embedded server must never
// exit the broker process; Start reports the failure instead.
func (n natsLogger) Fatalf(format string, v ...any) { n.l.Error(fmt.Sprintf(format, v...)) }

func (n natsLogger) debugEnabled() bool {
	return n.l.Enabled(context.Background(), slog.LevelDebug)
}
