package election_test

import (
	"context"
	"errors"
	"testing"

	"baton/election"
)

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := election.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s.Load(ctx); err != nil || e != 0 {
		t.Fatalf("fresh store: got %d %v, want 0", e, err)
	}
	if err := s.Save(ctx, 42); err != nil {
		t.Fatal(err)
	}
	if _, err := election.OpenFileStore(dir); !errors.Is(err, election.ErrDataDirInUse) {
		t.Fatalf("second store on the same directory: got %v, want ErrDataDirInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, err = election.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e, err := s.Load(ctx); err != nil || e != 42 {
		t.Fatalf("reopened store: got %d %v, want 42", e, err)
	}
}
