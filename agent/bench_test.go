package agent_test

import (
	"context"
	"os/exec"
	"testing"

	"baton/agent"
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
		cluster := startCluster(b)
		master := startNode(b, cluster, "master", 1, nil)
		waitMaster(b, master, "master")
		client := dial(b, cluster, agent.DefaultClientConfig("requester"))
		for b.Loop() {
			res, err := client.Submit(context.Background(), "true")
			if err != nil || res.ExitCode != 0 {
				b.Fatal(res, err)
			}
		}
	})
}
