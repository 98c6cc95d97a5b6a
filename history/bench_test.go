package history_test

import (
	"context"
	"testing"
	"time"

	"baton/messages"
)

// BenchmarkStore_Record is the broker's cost of one job: its final record,
// in batches of ten.
func BenchmarkStore_Record(b *testing.B) {
	_, st := startStore(b, b.TempDir(), nil)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i += 10 {
		var recs []*messages.JobRecord
		for range 10 {
			r := record(messages.NewJobID(time.Now()), "true", messages.JobState_JOB_STATE_SUCCEEDED, "alpha")
			recs = append(recs, r)
		}
		if err := st.Record(ctx, recs...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStore_Grep100k is a --grep that reads every one of 100,000
// records.
func BenchmarkStore_Grep100k(b *testing.B) {
	_, st := startStore(b, b.TempDir(), nil)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	for i := 0; i < 100_000; i += 1000 {
		var recs []*messages.JobRecord
		for j := range 1000 {
			r := record(messages.NewJobID(base.Add(time.Duration(i+j)*time.Millisecond)), "echo job | tee /tmp/x", messages.JobState_JOB_STATE_SUCCEEDED, "alpha")
			r.Stdout = "some output of a command\nsome output of a command\nsome output of a command\nsome output of a command\n"
			recs = append(recs, r)
		}
		if err := st.Record(ctx, recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		list, err := st.List(ctx, messages.JobQuery{Grep: "text no job holds"})
		if err != nil || len(list.Jobs) != 0 {
			b.Fatal(err)
		}
		b.Logf("grep took %v", time.Since(t0))
	}
}
