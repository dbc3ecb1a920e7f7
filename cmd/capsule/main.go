// Command capsule backs up and restores data services into an S3 bucket
// (or a local directory). See `capsule --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cnvrg/capsule/internal/redact"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := newApp(os.Stdout, os.Stderr, os.Getenv)
	if err := a.root().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "capsule:", redact.String(err.Error()))
		os.Exit(exitCode(err))
	}
}
