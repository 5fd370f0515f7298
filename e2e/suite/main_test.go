package suite

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/relaytls/relaytls/e2e/harness"
	"github.com/relaytls/relaytls/e2e/provider"
)

var (
	bins harness.Binaries
	prov provider.Provider
)

// TestMain builds the binaries once for every test.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if prov, err = provider.FromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "relaytls-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute) // a cold build on a loaded 2-core machine took over 10 minutes
	defer cancel()
	if bins, err = harness.Build(ctx, dir, nil); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		return 1
	}
	return m.Run()
}
