package executor

import (
	"context"
	"os/exec"
	"testing"
)

// BenchmarkRun compares Run with a bare fork/exec of the same command.
func BenchmarkRun(b *testing.B) {
	b.Run("bare exec", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("executor", func(b *testing.B) {
		cfg := DefaultConfig()
		e, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		for b.Loop() {
			if r := e.Run(context.Background(), Command{Line: "true"}); r.ExitCode != 0 {
				b.Fatal(r.Err)
			}
		}
	})
}
