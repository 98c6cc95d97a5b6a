package agent

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"baton/messages"
)

// execService is the master's exec endpoint as a NATS micro service, so
// that `nats micro ls|info|stats` find it. It speaks the micro protocol
// ($SRV.PING|INFO|STATS, in micro's own types) itself rather than through
// micro.AddService: micro times a handler's call, and an exec request is
// answered long after its handler returned (commands run in parallel).
// Here the processing time is each command's, from its arrival to its
// reply, and every answer that is not a completed command counts as an
// error.
type execService struct {
	// epoch is the term's: the one the broker confirmed when it began.
	epoch   uint64
	id      micro.ServiceIdentity
	info    micro.Info
	started time.Time
	subs    []*nats.Subscription

	mu    sync.Mutex
	stats micro.EndpointStats
}

// Identity of the exec service.
const (
	serviceName        = "baton"
	serviceEndpoint    = "exec"
	serviceDescription = "runs shell commands on baton's master"
)

// startService subscribes, for node's term of epoch, the exec endpoint
// (handing each request to handle, with the service, which knows the
// epoch and records the request) and the service's control subjects on nc.
func startService(nc *nats.Conn, version, node string, epoch uint64, handle func(*execService, *nats.Msg)) (*execService, error) {
	s := &execService{epoch: epoch, started: time.Now().UTC()}
	metadata := map[string]string{"node": node, "epoch": strconv.FormatUint(epoch, 10)}
	s.id = micro.ServiceIdentity{Name: serviceName, ID: nuid.Next(), Version: version, Metadata: metadata}
	s.info = micro.Info{
		ServiceIdentity: s.id, Type: micro.InfoResponseType, Description: serviceDescription,
		Endpoints: []micro.EndpointInfo{{Name: serviceEndpoint, Subject: messages.SubjectExec, QueueGroup: messages.ExecQueue}},
	}
	s.stats = micro.EndpointStats{Name: serviceEndpoint, Subject: messages.SubjectExec, QueueGroup: messages.ExecQueue}
	sub, err := nc.QueueSubscribe(messages.SubjectExec, messages.ExecQueue, func(m *nats.Msg) { handle(s, m) })
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", messages.SubjectExec, err)
	}
	s.subs = append(s.subs, sub)
	answers := map[micro.Verb]func() any{
		micro.PingVerb:  func() any { return micro.Ping{ServiceIdentity: s.id, Type: micro.PingResponseType} },
		micro.InfoVerb:  func() any { return s.info },
		micro.StatsVerb: s.snapshot,
	}
	for verb, answer := range answers {
		for _, subject := range []string{
			micro.APIPrefix + "." + verb.String(),
			micro.APIPrefix + "." + verb.String() + "." + serviceName,
			micro.APIPrefix + "." + verb.String() + "." + serviceName + "." + s.id.ID,
		} {
			sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
				if b, err := json.Marshal(answer()); err == nil {
					_ = m.Respond(b)
				}
			})
			if err != nil {
				s.stop()
				return nil, fmt.Errorf("subscribe %s: %w", subject, err)
			}
			s.subs = append(s.subs, sub)
		}
	}
	return s, nil
}

// snapshot is the STATS answer.
func (s *execService) snapshot() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.stats
	return micro.Stats{ServiceIdentity: s.id, Type: micro.StatsResponseType, Started: s.started, Endpoints: []*micro.EndpointStats{&e}}
}

// record counts one answered request that took d from its arrival; a
// non-empty failure counts it as an error.
func (s *execService) record(d time.Duration, failure string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.NumRequests++
	s.stats.ProcessingTime += d
	s.stats.AverageProcessingTime = s.stats.ProcessingTime / time.Duration(s.stats.NumRequests)
	if failure != "" {
		s.stats.NumErrors++
		s.stats.LastError = failure
	}
}

// stop unsubscribes everything. The endpoint goes first, and drains: the
// requests already delivered are still handled.
func (s *execService) stop() {
	for i, sub := range s.subs {
		if i == 0 {
			_ = sub.Drain()
			continue
		}
		_ = sub.Unsubscribe()
	}
}
