package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/test/testpki"
)

func TestLeaksFindsTokensAndKeys(t *testing.T) {
	tok := NewToken()
	key := testpki.Root(t, "leak test").KeyPEM(t)
	keyLines := strings.Split(strings.TrimSpace(string(key)), "\n")
	var s Sensitive
	s.AddToken(tok)
	s.AddKey(key)
	for _, tc := range []struct {
		name, log string
		want      string // "" for no finding
	}{
		{"clean", `{"msg":"relay connection failed","reason":"invalid_proof"}`, ""},
		{"token", `{"msg":"loaded","token":"` + string(tok) + `"}`, "the relay identity token"},
		{"one line of a key", `{"msg":"oops","data":"` + keyLines[1] + `"}`, "a private key"},
		{"any PEM key", "-----BEGIN RSA PRIVATE KEY-----", "a PEM private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "c.log"), []byte("first line\n"+tc.log+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			found, err := s.Leaks(t.Context(), dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(found) != 0 {
					t.Fatalf("found %v in a clean log", found)
				}
				return
			}
			if len(found) == 0 || !strings.Contains(found[0], "c.log line 2: "+tc.want) {
				t.Fatalf("found %v; want c.log line 2: %s", found, tc.want)
			}
			for _, f := range found {
				if strings.Contains(f, string(tok)) || strings.Contains(f, keyLines[1]) {
					t.Fatal("a finding repeats the secret")
				}
			}
		})
	}
}

func TestModeByName(t *testing.T) {
	for in, want := range map[string]int{"4": 4, "mtls-self-signed": 4, "1": 1, "insecure": 1, "6": 6, "tls-byo-server": 3} {
		m, err := ModeByName(in)
		if err != nil || m.Number != want {
			t.Errorf("ModeByName(%q) = %v, %v; want mode %d", in, m, err, want)
		}
	}
	for _, bad := range []string{"0", "7", "mtls", ""} {
		if _, err := ModeByName(bad); err == nil {
			t.Errorf("ModeByName(%q) accepted", bad)
		}
	}
}

func TestProcStopsOnSIGTERMAndKillsWhenIgnored(t *testing.T) {
	dir := t.TempDir()
	p, err := StartProc("sleeper", dir, "sleep", []string{"60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(5 * time.Second); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("Stop = %v; want the SIGTERM exit status", err)
	}
	ready := make(chan struct{}, 1)
	p, err = StartProc("stubborn", dir, "sh", []string{"-c", "trap '' TERM; echo ready; sleep 60"}, func(line string) {
		if line == "ready" {
			ready <- struct{}{}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the shell did not start")
	}
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "was killed") {
		t.Fatalf("Stop = %v; want a kill after the grace period", err)
	}
	if done, _ := p.Exited(); !done {
		t.Fatal("the process still runs after Stop")
	}
}
