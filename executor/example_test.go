package executor_test

import (
	"context"
	"fmt"
	"time"

	"baton/executor"
)

func Example() {
	cfg := executor.DefaultConfig()
	cfg.Timeout = time.Second
	e, err := executor.New(cfg)
	if err != nil {
		panic(err)
	}
	defer e.Close()

	r := e.Run(context.Background(), executor.Command{Line: "echo hello; exit 3"})
	fmt.Printf("exit %d, stdout %q\n", r.ExitCode, r.Stdout)

	r = e.Run(context.Background(), executor.Command{Line: "sleep 10", Timeout: 100 * time.Millisecond})
	fmt.Println(r.Kind, r.ExitCode)
	// Output:
	// exit 3, stdout "hello\n"
	// timed out -1
}
