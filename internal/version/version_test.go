package version_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinariesReportTheLinkedVersion builds the three binaries the way a
// release does, with the version ldflags, and runs each with --version.
func TestBinariesReportTheLinkedVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	dir := t.TempDir()
	const pkg = "github.com/relaytls/relaytls/internal/version"
	ldflags := "-X " + pkg + ".version=v9.8.7-test -X " + pkg + ".commit=0123456789abcdef0123"
	cmd := exec.Command("go", "build", "-o", dir+"/", "-ldflags", ldflags,
		"github.com/relaytls/relaytls/relayctl", "github.com/relaytls/relaytls/issuer", "github.com/relaytls/relaytls/relay-sidecar")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for bin, name := range map[string]string{"relayctl": "relayctl", "issuer": "relay-issuer", "relay-sidecar": "relay-sidecar"} {
		var stdout, stderr bytes.Buffer
		c := exec.Command(filepath.Join(dir, bin), "--version")
		c.Stdout, c.Stderr = &stdout, &stderr
		if err := c.Run(); err != nil {
			t.Errorf("%s --version: %v\n%s", bin, err, stderr.String())
			continue
		}
		want := name + " v9.8.7-test (commit 0123456789ab), go"
		if !strings.HasPrefix(stdout.String(), want) {
			t.Errorf("%s --version printed %q, want it to start with %q", bin, stdout.String(), want)
		}
	}
}
