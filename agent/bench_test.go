package agent_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"baton/agent"
	"baton/bus"
	"baton/bus/bustest"
	"baton/election"
)

// BenchmarkRoundTrip compares `true` submitted through the cluster (broker,
// master and requester in this process, connected over loopback TCP) with
// the local floor, `sh -c true` forked here. Compare the two ns/op.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("local sh -c true", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cluster true", func(b *testing.B) {
		srv := bustest.StartServer(b)
		cfg := election.DefaultServiceConfig()
		cfg.DataDir = b.TempDir()
		svc, err := election.NewService(srv, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := svc.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer svc.Close(context.Background())
		master := startNode(b, srv, "master", 1, nil)
		waitMaster(b, master, "master")
		nc, err := bus.Connect(context.Background(), srv.Addr(), "requester", time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		client := newClient(b, nc, agent.DefaultConfig("requester"))
		for b.Loop() {
			res, err := client.Submit(context.Background(), "true")
			if err != nil || res.ExitCode != 0 {
				b.Fatal(res, err)
			}
		}
	})
}
