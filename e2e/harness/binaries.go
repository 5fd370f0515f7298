package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/relaytls/relaytls/e2e/provider"
)

// Binaries are the paths of the built commands.
type Binaries struct {
	Issuer, Sidecar, RelayApp, Relayctl string
}

// Build builds relay-issuer, relay-sidecar, relayctl and the sample relayapp into dir
// with the go command, one after the other, reporting each through progress
// (nil for none).
func Build(ctx context.Context, dir string, progress func(string)) (Binaries, error) {
	b := Binaries{
		Issuer:   filepath.Join(dir, "relay-issuer"),
		Sidecar:  filepath.Join(dir, "relay-sidecar"),
		RelayApp: filepath.Join(dir, "relayapp"),
		Relayctl: filepath.Join(dir, "relayctl"),
	}
	root := provider.RepoPath("")
	for _, s := range []struct{ out, pkg string }{
		{b.Sidecar, "./relay-sidecar"},
		{b.RelayApp, "./e2e/relayapp/cmd/relayapp"},
		{b.Issuer, "./issuer"},
		{b.Relayctl, "./relayctl"},
	} {
		begin := time.Now()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", s.out, s.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", s.pkg, err, out)
		}
		if progress != nil {
			progress(fmt.Sprintf("built %s (%s)", filepath.Base(s.out), time.Since(begin).Round(100*time.Millisecond)))
		}
	}
	return b, nil
}
