// Command gen writes the files deploy/ derives from single sources: the
// chart's copies of deploy/rbac/{role,approver}.yaml and deploy/crds, and
// the kustomize profiles rendered from the chart. Run it from deploy/render
// with `go run ./cmd/gen` after changing the chart, the RBAC markers or the
// CRDs; render's tests fail while its output is stale.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/relaytls/relaytls/deploy/render"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
}

// run writes the files twice: the profiles are rendered from the chart, so
// the second pass sees the chart's freshly copied RBAC and CRDs.
func run() error {
	for range 2 {
		if err := write(); err != nil {
			return err
		}
	}
	return nil
}

func write() error {
	files, err := render.Generated()
	if err != nil {
		return err
	}
	root := render.RepoRoot()
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Content, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("gen: wrote %d files\n", len(files))
	return nil
}
