// Command demo runs relaytls end to end on two local Kubernetes control
// planes and shows it live: `make demo`, or
//
//	go run ./e2e/demo [-mode 4] [-duration 2m] [-renew-every 20s] [-logs DIR]
//
// It builds relay-issuer, relay-sidecar and the sample relay application,
// starts a management and a workload cluster (real kube-apiserver and etcd,
// cert-manager's real controllers and webhook), installs a mode from the
// rendered deploy/ profiles (default mode 4: mTLS with client certificates
// issued after a token bootstrap), registers the workload cluster, starts
// the sample management server and agent behind relay-sidecars, and prints
// enrollment, the stream's heartbeat count and each certificate rotation
// with its old and new serials, and whether the stream ever broke. It runs
// for -duration or until Ctrl-C, then stops every process and removes every
// temporary file. It never prints a token, key or proof.
//
// The local clusters come from package localcluster, which runs
// cert-manager's webhook through cert-manager's test helper and so needs a
// *testing.T: the demo runs its body as the single test of testing.Main.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/relaytls/relaytls/e2e/harness"
)

type config struct {
	mode       string
	duration   time.Duration
	renewEvery time.Duration
	interval   time.Duration
	logs       string
}

var cfg config

func main() {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	fs.StringVar(&cfg.mode, "mode", "4", "relay security mode: 1-6 or a profile name (insecure, tls-self-signed, tls-byo-server, mtls-self-signed, mtls-byo-ca, mtls-byo-client)")
	fs.DurationVar(&cfg.duration, "duration", 0, "how long to run once the relay is up (0: until Ctrl-C)")
	fs.DurationVar(&cfg.renewEvery, "renew-every", 20*time.Second, "how often cert-manager renews each renewed certificate (at least 5s; 0 keeps the production lifetimes)")
	fs.DurationVar(&cfg.interval, "heartbeat-interval", 50*time.Millisecond, "time between the sample app's heartbeats")
	fs.StringVar(&cfg.logs, "logs", "", "keep the components' logs in this directory (default: a temporary directory, removed on exit)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./e2e/demo [flags]\n\n%s\n\nFlags:\n", "Two local Kubernetes clusters, relaytls installed in one mode, a live relay stream through certificate rotations.")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demo: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	if _, err := harness.ModeByName(cfg.mode); err != nil {
		fmt.Fprintln(os.Stderr, "demo: -mode:", err)
		os.Exit(2)
	}
	if cfg.renewEvery != 0 && cfg.renewEvery < 5*time.Second {
		fmt.Fprintln(os.Stderr, "demo: -renew-every must be 0 or at least 5s")
		os.Exit(2)
	}
	// testing.Main parses the command line again: leave it only the test
	// framework's own (none).
	os.Args = os.Args[:1]
	testing.Main(func(string, string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: "Demo", F: demo}}, nil, nil)
}

func demo(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Registered first, so it runs last: a second Ctrl-C during the cleanup
	// does not cut it short.
	t.Cleanup(stop)
	if err := run(ctx, t, cfg); err != nil {
		t.Fatal(err)
	}
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("klog", flag.ContinueOnError) }
