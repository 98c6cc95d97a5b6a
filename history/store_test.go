package history_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus"
	"baton/bus/bustest"
	"baton/history"
	"baton/internal/testlog"
	"baton/messages"
)

// startStore starts a server with JetStream in dir and a history on it.
func startStore(t testing.TB, dir string, change func(*history.Config)) (*bus.Server, *history.Store) {
	t.Helper()
	srv := bustest.StartServer(t, func(c *bus.ServerConfig) {
		c.JetStreamDir = dir
		c.Services = append(history.ServiceSubjects(), messages.JobReadSubjects()...)
	})
	cfg := history.DefaultConfig()
	cfg.Logger = testlog.Logger(t)
	if change != nil {
		change(&cfg)
	}
	st, err := history.New(srv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	<-st.Loaded()
	return srv, st
}

func record(id, cmd string, state messages.JobState, master string) *messages.JobRecord {
	now := timestamppb.Now()
	r := &messages.JobRecord{Id: id, Cmd: cmd, State: state, Master: master, Submitter: "client", SubmittedAt: now, StartedAt: now}
	if state != messages.JobState_JOB_STATE_RUNNING {
		r.FinishedAt = now
	}
	return r
}

func TestStore_RecordListGet(t *testing.T) {
	ctx := context.Background()
	srv, st := startStore(t, t.TempDir(), nil)
	base := time.Now()
	var ids []string
	for i := range 30 {
		id := messages.NewJobID(base.Add(time.Duration(i) * time.Millisecond))
		ids = append(ids, id)
		state := messages.JobState_JOB_STATE_SUCCEEDED
		if i%3 == 0 {
			state = messages.JobState_JOB_STATE_FAILED
		}
		r := record(id, fmt.Sprintf("echo %d", i), state, "alpha")
		r.Stdout = fmt.Sprintf("out-%d\n", i)
		if err := st.Record(ctx, record(id, r.Cmd, messages.JobState_JOB_STATE_RUNNING, "alpha")); err != nil {
			t.Fatal(err)
		}
		if err := st.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// A late "running" and a second outcome change nothing.
	if err := st.Record(ctx, record(ids[29], "echo 29", messages.JobState_JOB_STATE_RUNNING, "alpha"),
		record(ids[29], "echo 29", messages.JobState_JOB_STATE_CANCELLED, "alpha")); err != nil {
		t.Fatal(err)
	}
	list, err := st.List(ctx, messages.JobQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != 20 || list.Jobs[0].ID != ids[29] || list.Jobs[0].State != "succeeded" {
		t.Fatalf("got %d jobs, first %+v; want 20, newest first, succeeded", len(list.Jobs), list.Jobs[0])
	}
	list, _ = st.List(ctx, messages.JobQuery{State: "failed", Limit: 100})
	if len(list.Jobs) != 10 {
		t.Errorf("failed: got %d jobs, want 10", len(list.Jobs))
	}
	list, _ = st.List(ctx, messages.JobQuery{Grep: "out-17"})
	if len(list.Jobs) != 1 || list.Jobs[0].Cmd != "echo 17" {
		t.Errorf("grep out-17: got %+v, want echo 17", list.Jobs)
	}
	list, _ = st.List(ctx, messages.JobQuery{Before: ids[5]})
	if len(list.Jobs) != 5 || list.Jobs[0].ID != ids[4] {
		t.Errorf("before: got %d jobs", len(list.Jobs))
	}
	job, err := st.Get(ctx, ids[17])
	if err != nil || job.Stdout != "out-17\n" {
		t.Errorf("get: got %+v, %v", job, err)
	}
	if _, err := st.Get(ctx, messages.NewJobID(base)); !errors.Is(err, history.ErrUnknownJob) {
		t.Errorf("get unknown: got %v, want ErrUnknownJob", err)
	}

	// Through the bus, as a client asks.
	nc := bustest.Connect(t, srv.Addr())
	msg, err := nc.Request(messages.SubjectJobGet, []byte(`{"id":"`+ids[3]+`"}`), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ans messages.JobAnswer
	if err := json.Unmarshal(msg.Data, &ans); err != nil || ans.Job == nil || ans.Job.State != "failed" {
		t.Errorf("jobs.get: got %s, %v", msg.Data, err)
	}
	b, _ := proto.Marshal(&messages.JobRecords{Records: []*messages.JobRecord{record(messages.NewJobID(time.Now()), "true", messages.JobState_JOB_STATE_SUCCEEDED, "beta")}})
	msg, err = nc.Request(messages.SubjectJobRecord, b, 2*time.Second)
	var ack messages.JobRecordsAck
	if err != nil || proto.Unmarshal(msg.Data, &ack) != nil || ack.Error != "" {
		t.Errorf("jobs.record: got %v, %v", &ack, err)
	}
}

func TestStore_LostAndBack(t *testing.T) {
	ctx := context.Background()
	_, st := startStore(t, t.TempDir(), nil)
	id := messages.NewJobID(time.Now())
	if err := st.Record(ctx, record(id, "sleep 3", messages.JobState_JOB_STATE_RUNNING, "alpha")); err != nil {
		t.Fatal(err)
	}
	if err := st.MasterLost(ctx, "alpha", "connection closed", time.Now()); err != nil {
		t.Fatal(err)
	}
	job, _ := st.Get(ctx, id)
	if job.State != "lost" || job.Error == "" {
		t.Fatalf("got %s %q, want lost", job.State, job.Error)
	}
	if err := st.Record(ctx, record(id, "sleep 3", messages.JobState_JOB_STATE_SUCCEEDED, "alpha")); err != nil {
		t.Fatal(err)
	}
	job, _ = st.Get(ctx, id)
	if job.State != "succeeded" || job.Note == "" {
		t.Fatalf("got %s, note %q; want succeeded with a note", job.State, job.Note)
	}
}

func TestStore_Retention(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, st := startStore(t, dir, func(c *history.Config) {
		c.MaxAge, c.SweepInterval = 500*time.Millisecond, 50*time.Millisecond
	})
	running := messages.NewJobID(time.Now())
	done := messages.NewJobID(time.Now())
	if err := st.Record(ctx, record(running, "sleep 100", messages.JobState_JOB_STATE_RUNNING, "alpha"),
		record(done, "true", messages.JobState_JOB_STATE_SUCCEEDED, "alpha")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := st.Get(ctx, done); errors.Is(err, history.ErrUnknownJob) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("finished job not expired after 5 s with a max age of 500 ms")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := st.Get(ctx, running); err != nil {
		t.Errorf("running job: %v, want it kept", err)
	}
}

// A restarted broker's history holds what was stored, running jobs
// included.
func TestStore_Reload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, st := startStore(t, dir, nil)
	done, running := messages.NewJobID(time.Now()), messages.NewJobID(time.Now().Add(time.Millisecond))
	if err := st.Record(ctx, record(done, "true", messages.JobState_JOB_STATE_SUCCEEDED, "alpha"),
		record(running, "sleep 9", messages.JobState_JOB_STATE_RUNNING, "alpha")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, st = startStore(t, dir, nil)
	list, err := st.List(ctx, messages.JobQuery{})
	if err != nil || len(list.Jobs) != 2 || list.Jobs[0].ID != running || list.Jobs[0].State != "running" || list.Jobs[1].State != "succeeded" {
		t.Fatalf("after a restart: got %+v, %v; want the running job, then the finished one", list, err)
	}
	// Its master did not come back.
	if err := st.Reconcile(ctx, func(string) bool { return false }, time.Now()); err != nil {
		t.Fatal(err)
	}
	if job, _ := st.Get(ctx, running); job.State != "lost" || !strings.Contains(job.Error, "did not come back") {
		t.Errorf("got %s %q, want lost: did not come back", job.State, job.Error)
	}
}

// Records come only from a node, of its own jobs: a connection that is no
// node's is told to send again later, another master's records are
// refused.
func TestStore_RecordsFromTheirMaster(t *testing.T) {
	var srv *bus.Server
	var alphaID uint64
	srv, st := startStore(t, t.TempDir(), func(c *history.Config) {
		c.Sender = func(id uint64) (string, bool) { return "alpha", id == alphaID }
	})
	alpha, stranger := bustest.Connect(t, srv.Addr()), bustest.Connect(t, srv.Addr())
	var err error
	if alphaID, err = alpha.GetClientID(); err != nil {
		t.Fatal(err)
	}
	send := func(nc *nats.Conn, recs ...*messages.JobRecord) string {
		b, _ := proto.Marshal(&messages.JobRecords{Records: recs})
		msg, err := nc.Request(messages.SubjectJobRecord, b, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ack messages.JobRecordsAck
		if err := proto.Unmarshal(msg.Data, &ack); err != nil {
			t.Fatal(err)
		}
		return ack.Error
	}
	own, forged := messages.NewJobID(time.Now()), messages.NewJobID(time.Now().Add(time.Millisecond))
	if got := send(stranger, record(own, "true", messages.JobState_JOB_STATE_SUCCEEDED, "alpha")); !strings.Contains(got, "registered node") {
		t.Errorf("from a stranger: ack %q, want an error asking to send again", got)
	}
	if got := send(alpha, record(own, "true", messages.JobState_JOB_STATE_SUCCEEDED, "alpha"),
		record(forged, "true", messages.JobState_JOB_STATE_SUCCEEDED, "beta")); got != "" {
		t.Errorf("from alpha: ack %q, want none", got)
	}
	ctx := context.Background()
	if _, err := st.Get(ctx, own); err != nil {
		t.Errorf("alpha's own job: %v", err)
	}
	if _, err := st.Get(ctx, forged); !errors.Is(err, history.ErrUnknownJob) {
		t.Errorf("beta's job sent by alpha: %v, want it refused", err)
	}
}
