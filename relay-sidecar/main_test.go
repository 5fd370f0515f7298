package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/relay-sidecar/internal/config"
)

func TestRunRefusesBadFlagsBeforeStarting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--role=server"}, "--mode is required"},
		{[]string{"--role=server", "--mode=tls", "--listen=127.0.0.1:0", "--upstream=127.0.0.1:1", "--cert-dir=/nonexistent", "--token-file=/nonexistent"},
			"reading /nonexistent/tls.crt"},
		{[]string{"--role=agent", "--mode=insecure", "--listen=127.0.0.1:0", "--server-addr=127.0.0.1:1", "--cluster=a", "--log-level=loud"},
			"--log-level"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("relay-sidecar", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg := config.Register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := run(fs, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
