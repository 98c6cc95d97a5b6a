package election_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"baton/bus/bustest"
	"baton/election"
	"baton/internal/testlog"
	"baton/messages"
)

func startView(t testing.TB) (*election.View, func(*messages.Announcement)) {
	t.Helper()
	srv := startServer(t)
	v := election.NewView(bustest.Connect(t, srv.Addr()), testlog.Logger(t))
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close(context.Background()) })
	pub := bustest.Connect(t, srv.Addr())
	announce := func(a *messages.Announcement) {
		t.Helper()
		b, err := proto.Marshal(a)
		if err == nil {
			err = pub.Publish(messages.SubjectMaster, b)
		}
		if err == nil {
			err = pub.Flush()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return v, announce
}

func next(t testing.TB, ch <-chan *messages.Announcement) *messages.Announcement {
	t.Helper()
	select {
	case a, ok := <-ch:
		if !ok {
			t.Fatal("channel closed, want an announcement")
		}
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("no announcement within 5s")
		return nil
	}
}

// Each observer holds only the newest value; an older epoch never
// replaces a newer one; the channel closes when its context ends.
func TestView_Observe(t *testing.T) {
	v, announce := startView(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := v.Observe(ctx)
	other := v.Observe(context.Background())
	announce(&messages.Announcement{Epoch: 5, Master: "a"})
	if a := next(t, ch); a.Epoch != 5 || a.Master != "a" {
		t.Fatalf("got epoch %d master %q, want 5 a", a.Epoch, a.Master)
	}
	announce(&messages.Announcement{Epoch: 3, Master: "stale"})
	announce(&messages.Announcement{Epoch: 6, Master: "b"})
	announce(&messages.Announcement{Epoch: 7, Master: "c"})
	eventually(t, func() bool { return v.Current().Epoch == 7 })
	if a := next(t, ch); a.Epoch != 7 {
		t.Errorf("slow observer got epoch %d, want only the newest, 7", a.Epoch)
	}
	if a := next(t, other); a.Epoch != 7 {
		t.Errorf("second observer got epoch %d, want 7", a.Epoch)
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("got a value after the context ended, want the channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after its context ended")
	}
	if err := v.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-other; ok {
		t.Error("observer channel open after Close")
	}
	if _, ok := <-v.Observe(context.Background()); ok {
		t.Error("Observe after Close: got a value, want a closed channel")
	}
}

// A follower sees every accepted announcement, in order.
func TestView_Follow(t *testing.T) {
	v, announce := startView(t)
	got := make(chan uint64, 10)
	stop := v.Follow(func(a *messages.Announcement) { got <- a.Epoch })
	for _, e := range []uint64{1, 2, 2, 1, 3} {
		announce(&messages.Announcement{Epoch: e})
	}
	for _, want := range []uint64{1, 2, 2, 3} {
		select {
		case e := <-got:
			if e != want {
				t.Fatalf("followed epoch %d, want %d", e, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("epoch %d not followed", want)
		}
	}
	stop()
	v.Offer(&messages.Announcement{Epoch: 4})
	select {
	case e := <-got:
		t.Errorf("followed epoch %d after stop", e)
	default:
	}
}

func eventually(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}
