package main

import (
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaytls/relaytls/e2e/relayapp"
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

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRunBothRolesAndDrainOnSIGTERM runs the command's run function for
// both roles in insecure mode with the sample app on either side, then
// sends SIGTERM: both drain and return without error.
func TestRunBothRolesAndDrainOnSIGTERM(t *testing.T) {
	upLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := relayapp.NewServer(relayapp.Options{Interval: 5 * time.Millisecond})
	go up.Serve(upLis)
	t.Cleanup(up.Stop)

	srvAddr, srvHealth, agLocal, agHealth := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	start := func(args ...string) chan error {
		fs := flag.NewFlagSet("relay-sidecar", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg := config.Register(fs)
		if err := fs.Parse(append(args, "--drain-timeout=1s", "--log-level=error")); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- run(fs, cfg) }()
		return done
	}
	srvDone := start("--role=server", "--mode=insecure", "--listen="+srvAddr, "--health-listen="+srvHealth, "--upstream="+upLis.Addr().String())
	agDone := start("--role=agent", "--mode=insecure", "--listen="+agLocal, "--health-listen="+agHealth, "--server-addr="+srvAddr, "--cluster=cluster-a")

	ready := func(addr string) bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	deadline := time.Now().Add(20 * time.Second)
	for !ready(srvHealth) || !ready(agHealth) {
		if time.Now().After(deadline) {
			t.Fatal("sidecars never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	app := relayapp.NewAgent(agLocal, relayapp.Options{Interval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	appDone := make(chan struct{})
	go func() { defer close(appDone); app.Run(ctx) }()
	defer func() { cancel(); <-appDone }()
	for app.Stats().Received < 20 || up.Stats().Received < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeats through the sidecars: %+v", app.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Both run functions registered for SIGTERM before their probes came up.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for name, done := range map[string]chan error{"server": srvDone, "agent": agDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not stop after SIGTERM", name)
		}
	}
}

// A unix-socket listener replaces only a stale socket, never another
// file, and its socket is owner-only.
func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/not-a-socket"
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := listen("unix:" + file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("listening over a regular file: got %v, want a refusal", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the regular file was changed: %q, %v", b, err)
	}
	sock := dir + "/agent.sock"
	for i := range 2 { // the second time over the stale socket of the first
		l, err := listen("unix:" + sock)
		if err != nil {
			t.Fatalf("listen %d: %v", i, err)
		}
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Fatalf("the socket has mode %o, want 600", perm)
		}
		if i == 0 {
			// Leave the file behind as a crashed process would.
			l.(*net.UnixListener).SetUnlinkOnClose(false)
		}
		l.Close()
	}
}
