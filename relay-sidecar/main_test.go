package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/e2e/relayapp"
	"github.com/relaytls/relaytls/internal/command"
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
			err := run(t.Context(), tc.args, io.Discard, io.Discard)
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

// TestRunCommandLine: the version on stdout, -h and a bad flag as the
// errors main turns into exits 0 and 2, the usage on stderr.
func TestRunCommandLine(t *testing.T) {
	var stdout, stderr strings.Builder
	if err := run(t.Context(), []string{"--version"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "relay-sidecar") {
		t.Fatalf("--version: %v, stdout %q", err, stdout.String())
	}
	stderr.Reset()
	if err := run(t.Context(), []string{"-h"}, io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "-role") {
		t.Fatalf("-h: %v, usage %q", err, stderr.String())
	}
	stderr.Reset()
	if err := run(t.Context(), []string{"--no-such-flag"}, io.Discard, &stderr); !errors.Is(err, command.ErrUsage) || !strings.Contains(stderr.String(), "no-such-flag") {
		t.Fatalf("a bad flag: %v, stderr %q", err, stderr.String())
	}
}

// TestRunBothRolesAndDrainOnSIGTERM runs the command's run function for
// both roles in insecure mode with the sample app on either side, then
// ends their context, as main does on SIGTERM: both drain and return
// without error.
func TestRunBothRolesAndDrainOnSIGTERM(t *testing.T) {
	upLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := relayapp.NewServer(relayapp.Options{Interval: 5 * time.Millisecond})
	go up.Serve(upLis)
	t.Cleanup(up.Stop)

	srvAddr, srvHealth, agLocal, agHealth := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	sigterm, terminate := context.WithCancel(t.Context())
	defer terminate()
	start := func(args ...string) chan error {
		done := make(chan error, 1)
		go func() {
			done <- run(sigterm, append(args, "--drain-timeout=1s", "--log-level=error"), io.Discard, io.Discard)
		}()
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

	terminate()
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
