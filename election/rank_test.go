package election

import (
	"testing"
	"time"
)

func TestRank(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name string
		in   []candidate
		want []string
	}{
		{"empty", nil, []string{}},
		{"priority descending", []candidate{{name: "a", priority: 1, startedAt: t0}, {name: "b", priority: 100, startedAt: t0}, {name: "c", priority: 10, startedAt: t0}}, []string{"b", "c", "a"}},
		{"earlier start wins a tie", []candidate{{name: "late", priority: 5, startedAt: t0.Add(time.Second)}, {name: "early", priority: 5, startedAt: t0}}, []string{"early", "late"}},
		{"name breaks a full tie", []candidate{{name: "y", priority: 5, startedAt: t0}, {name: "x", priority: 5, startedAt: t0}}, []string{"x", "y"}},
		{"negative priorities", []candidate{{name: "n", priority: -5, startedAt: t0}, {name: "z", priority: 0, startedAt: t0}}, []string{"z", "n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rank(tc.in, 0)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d members, want %d", len(got), len(tc.want))
			}
			for i, m := range got {
				if m.Name != tc.want[i] || m.Rank != uint32(i) {
					t.Errorf("rank %d: got %s (rank %d), want %s", i, m.Name, m.Rank, tc.want[i])
				}
			}
		})
	}
}
