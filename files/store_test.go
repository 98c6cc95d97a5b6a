package files_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"baton/bundle"
	"baton/bus"
	"baton/bus/bustest"
	"baton/files"
	"baton/internal/testlog"
	"baton/messages"
)

// startStore starts a server with JetStream and a file store on it, and
// returns a client connection.
func startStore(t testing.TB, change func(*files.Config)) (*files.Store, *nats.Conn, jetstream.ObjectStore) {
	t.Helper()
	srv := bustest.StartServer(t, func(c *bus.ServerConfig) {
		c.JetStreamDir = t.TempDir()
		c.Services = files.ServiceSubjects()
		c.MaxPayload = messages.MaxPayload
	})
	if err := srv.EnableJetStream(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	close(ready)
	cfg := files.DefaultConfig()
	cfg.Logger = testlog.Logger(t)
	cfg.Key = bytes.Repeat([]byte{7}, 32)
	cfg.Ready = ready
	if change != nil {
		change(&cfg)
	}
	st, err := files.New(srv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	internal, err := srv.ServiceConn("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(internal.Close)
	js, err := jetstream.New(internal)
	if err != nil {
		t.Fatal(err)
	}
	var obs jetstream.ObjectStore
	for deadline := time.Now().Add(10 * time.Second); ; {
		if obs, err = js.ObjectStore(context.Background(), messages.FileBucket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return st, bustest.Connect(t, srv.Addr()), obs
}

func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a.zip")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// askPut sends one FilePut as it is and returns the broker's reply.
func askPut(t testing.TB, nc *nats.Conn, req *messages.FilePut) *messages.FilePutReply {
	t.Helper()
	b, _ := proto.Marshal(req)
	msg, err := nc.Request(messages.SubjectFilePut, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply messages.FilePutReply
	if err := proto.Unmarshal(msg.Data, &reply); err != nil {
		t.Fatal(err)
	}
	return &reply
}

func objects(t testing.TB, obs jetstream.ObjectStore) int {
	t.Helper()
	list, err := obs.List(context.Background())
	if err != nil && err != jetstream.ErrNoObjectsFound {
		t.Fatal(err)
	}
	return len(list)
}

func TestStore_PutGet(t *testing.T) {
	_, nc, obs := startStore(t, nil)
	ctx := context.Background()
	// Over three pieces, the last one short.
	data := make([]byte, 2*messages.FileChunkBytes+12345)
	rand.Read(data)
	path := writeFile(t, data)
	b, err := files.Put(ctx, nc, path, bundle.Zip, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if b.Sha256 != hex.EncodeToString(want[:]) || b.Size != uint64(len(data)) || b.Format != "zip" || b.Ticket == "" {
		t.Fatalf("got bundle %v, want sha %x, size %d", b, want, len(data))
	}
	var got bytes.Buffer
	if n, err := files.Get(ctx, nc, b.Ticket, &got); err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("got %d bytes (equal %v), %v; want the %d sent", n, bytes.Equal(got.Bytes(), data), err, len(data))
	}
	t.Run("the same bytes are stored once", func(t *testing.T) {
		again, err := files.Put(ctx, nc, writeFile(t, data), bundle.Zip, 3)
		if err != nil || again.Sha256 != b.Sha256 {
			t.Fatalf("got %v, %v", again, err)
		}
		if n := objects(t, obs); n != 1 {
			t.Fatalf("got %d objects, want 1", n)
		}
	})
	t.Run("knowing the SHA-256 without the bytes gets no ticket", func(t *testing.T) {
		guess := strings.Repeat("0", 64)
		for _, proof := range []string{guess, b.Sha256} {
			r := askPut(t, nc, &messages.FilePut{Sha256: b.Sha256, Size: b.Size, Format: "zip", Proof: proof})
			if r.Bundle != nil || !strings.Contains(r.Error, "does not prove it holds its bytes") {
				t.Errorf("proof %s: got %v, want a refusal and no ticket", proof, r)
			}
		}
	})
	t.Run("a forged or altered ticket reads nothing", func(t *testing.T) {
		forged := strings.Replace(b.Ticket, b.Sha256[:8], "00000000", 1)
		for _, ticket := range []string{"", "x", forged, b.Ticket + "A"} {
			if _, err := files.Get(ctx, nc, ticket, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "ticket") {
				t.Errorf("ticket %q: got %v, want a ticket error", ticket, err)
			}
		}
	})
}

func TestStore_Limits(t *testing.T) {
	_, nc, obs := startStore(t, func(c *files.Config) { c.MaxBytes, c.MaxFiles = 1000, 3 })
	ctx := context.Background()
	_, err := files.Put(ctx, nc, writeFile(t, make([]byte, 1001)), bundle.Zip, 1)
	if err == nil || !strings.Contains(err.Error(), "over the broker's --max-bundle-bytes of 1000 bytes") {
		t.Errorf("got %v, want the size limit named", err)
	}
	_, err = files.Put(ctx, nc, writeFile(t, make([]byte, 10)), bundle.Zip, 4)
	if err == nil || !strings.Contains(err.Error(), "--max-bundle-files of 3") {
		t.Errorf("got %v, want the file limit named", err)
	}
	if n := objects(t, obs); n != 0 {
		t.Errorf("got %d objects stored, want none", n)
	}
}

// A sender that announces one SHA-256 and sends other bytes stores
// nothing under it.
func TestStore_RefusesOtherBytes(t *testing.T) {
	_, nc, obs := startStore(t, nil)
	sum := sha256.Sum256([]byte("the real thing"))
	proof := files.NewProof()
	proof.Write([]byte("the real thing"))
	begin := askPut(t, nc, &messages.FilePut{Sha256: hex.EncodeToString(sum[:]), Size: 14, Format: "zip", Proof: hex.EncodeToString(proof.Sum(nil))})
	if begin.Error != "" || begin.Upload == "" {
		t.Fatalf("got %v, want an upload", begin)
	}
	end := askPut(t, nc, &messages.FilePut{Upload: begin.Upload, Data: []byte("a forgery!...."), Last: true})
	if !strings.Contains(end.Error, "is not the one announced") {
		t.Fatalf("got %v, want the bytes refused", end)
	}
	if n := objects(t, obs); n != 0 {
		t.Fatalf("got %d objects stored, want none", n)
	}
}

// An archive goes once no record names it and its tickets have expired;
// a record keeps it.
func TestStore_Sweep(t *testing.T) {
	var named atomic.Bool
	named.Store(true)
	st, nc, obs := startStore(t, func(c *files.Config) {
		c.TicketTTL, c.SweepInterval = 200*time.Millisecond, 20*time.Millisecond
		c.Referenced = func(string) bool { return named.Load() }
	})
	b, err := files.Put(context.Background(), nc, writeFile(t, []byte("inputs")), bundle.Zip, 1)
	if err != nil {
		t.Fatal(err)
	}
	st.Used([]string{b.Sha256}, time.Now())
	time.Sleep(300 * time.Millisecond)
	if !st.Has(b.Sha256) || objects(t, obs) != 1 {
		t.Fatal("an archive a record names was deleted")
	}
	named.Store(false)
	for deadline := time.Now().Add(5 * time.Second); st.Has(b.Sha256) || objects(t, obs) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an archive no record names is still stored")
		}
	}
}
