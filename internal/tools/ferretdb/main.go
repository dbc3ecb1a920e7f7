// Command ferretdb runs FerretDB (its SQLite handler) for engines/mongodb's
// tests, the MongoDB stand-in: scripts/install-tools.sh builds it into
// .tools/bin. It listens on -listen-addr (port 0: a free one), or with
// TLS only on -tls-addr (with -tls-cert, -tls-key and, to demand client
// certificates, -tls-ca), prints its mongodb:// URI on stdout once it
// accepts connections, and runs until SIGTERM or SIGINT.
//
// It is a module of its own so that FerretDB and its SQL drivers (SAP
// HANA's, MySQL's, SQLite's) stay out of capsule's go.mod, and a wrapper
// around FerretDB's embeddable package rather than its own command, which
// panics at start unless built by FerretDB's release tooling.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:0", "TCP address to listen on; port 0 picks a free one")
	dir := flag.String("sqlite-dir", "", "directory of the SQLite databases (required)")
	tlsAddr := flag.String("tls-addr", "", "listen with TLS only, on this address (port 0 picks a free one)")
	tlsCert := flag.String("tls-cert", "", "the server's certificate (PEM), with -tls-addr")
	tlsKey := flag.String("tls-key", "", "the server's key (PEM), with -tls-addr")
	tlsCA := flag.String("tls-ca", "", "CA (PEM) that client certificates must chain to, with -tls-addr: clients must present one")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -sqlite-dir is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	listener := ferretdb.ListenerConfig{TCP: *listen}
	if *tlsAddr != "" {
		listener = ferretdb.ListenerConfig{TLS: *tlsAddr, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, TLSCAFile: *tlsCA}
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Listener:  listener,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dir + "/",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	ran := make(chan error, 1)
	go func() { ran <- f.Run(ctx) }()
	listening := make(chan string, 1)
	go func() { listening <- f.MongoDBURI() }() // blocks until it listens

	select {
	case uri := <-listening:
		fmt.Println(uri)
	case err := <-ran:
		fmt.Fprintln(os.Stderr, "ferretdb: stopped before listening:", err)
		os.Exit(1)
	}
	if err := <-ran; err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}
