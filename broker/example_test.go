package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"baton/broker"
)

func Example() {
	dir, err := os.MkdirTemp("", "broker-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	cfg := broker.DefaultConfig()
	cfg.Server.Addr = "127.0.0.1:0" // a free port
	cfg.DataDir = dir
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, err := broker.New(cfg)
	if err != nil {
		panic(err)
	}
	if err := b.Start(context.Background()); err != nil {
		panic(err)
	}
	defer b.Close(context.Background())

	// Nodes connect to b.Addr(); until one joins there is no master.
	st := b.Status()
	fmt.Printf("epoch %d, master %q, %d members\n", st.Epoch, st.Master, len(st.Members))
	// Output: epoch 1, master "", 0 members
}
