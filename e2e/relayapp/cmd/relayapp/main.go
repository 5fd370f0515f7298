// Command relayapp runs one side of the sample relay application: the
// management server (--role=server) or an agent (--role=agent). It prints
// its counters as one JSON line every --stats-interval and when it stops.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/relaytls/relaytls/e2e/relayapp"
)

func main() {
	role := flag.String("role", "", "server or agent")
	listen := flag.String("listen", "127.0.0.1:9000", "server: listen address (host:port or unix:/path)")
	connect := flag.String("connect", "", "agent: address to connect to (host:port or unix:/path)")
	interval := flag.Duration("interval", 10*time.Millisecond, "time between heartbeats")
	payload := flag.Int("payload", 0, "heartbeat payload size in bytes")
	statsEvery := flag.Duration("stats-interval", 5*time.Second, "print counters this often")
	flag.Parse()
	if err := run(*role, *listen, *connect, *interval, *payload, *statsEvery); err != nil {
		fmt.Fprintf(os.Stderr, "relayapp: %v\n", err)
		os.Exit(1)
	}
}

func run(role, listen, connect string, interval time.Duration, payload int, statsEvery time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	opts := relayapp.Options{Interval: interval, PayloadSize: payload}
	var stats func() relayapp.Stats
	errc := make(chan error, 1)
	switch role {
	case "server":
		if connect != "" {
			return errors.New("--connect conflicts with --role=server")
		}
		network, addr := "tcp", listen
		if p, ok := strings.CutPrefix(listen, "unix:"); ok {
			network, addr = "unix", p
		}
		lis, err := net.Listen(network, addr)
		if err != nil {
			return fmt.Errorf("--listen=%s: %w", listen, err)
		}
		s := relayapp.NewServer(opts)
		stats = s.Stats
		go func() { errc <- s.Serve(lis) }()
		defer s.Stop()
	case "agent":
		if connect == "" {
			return errors.New("--connect is required with --role=agent")
		}
		a := relayapp.NewAgent(connect, opts)
		stats = a.Stats
		go func() { errc <- a.Run(ctx) }()
	default:
		return fmt.Errorf("--role=%q is not server or agent", role)
	}
	enc := json.NewEncoder(os.Stdout)
	t := time.NewTicker(statsEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return enc.Encode(stats())
		case err := <-errc:
			_ = enc.Encode(stats())
			return err
		case <-t.C:
			_ = enc.Encode(stats())
		}
	}
}
