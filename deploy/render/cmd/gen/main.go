// Command gen writes the files deploy/ derives from single sources: the
// chart's copies of deploy/rbac/{role,approver}.yaml and deploy/crds, the
// chart's CRD templates (deploy/crds behind crds.enabled), the values table
// of the chart README, and the kustomize profiles rendered from the chart.
// Run it from deploy/render with `go run ./cmd/gen` after changing the
// chart, the RBAC markers or the CRDs (`make manifests` does). With -check
// it writes nothing and fails naming each stale file (`make
// verify-generated`); render's tests fail too while its output is stale.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/relaytls/relaytls/deploy/render"
)

func main() {
	check := flag.Bool("check", false, "write nothing; exit 1 naming every file that differs from what gen would write")
	flag.Parse()
	if *check {
		if err := verify(); err != nil {
			fmt.Fprintf(os.Stderr, "gen: %v\n", err)
			os.Exit(1)
		}
		return
	}
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

// verify compares every generated file with the one on disk.
func verify() error {
	files, err := render.Generated()
	if err != nil {
		return err
	}
	stale := 0
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(render.RepoRoot(), f.Path))
		if err != nil || !bytes.Equal(got, f.Content) {
			fmt.Fprintf(os.Stderr, "%s: stale\n", f.Path)
			stale++
		}
	}
	if stale > 0 {
		return fmt.Errorf("%d generated file(s) under deploy/ are stale: run 'make manifests' and commit the result", stale)
	}
	fmt.Printf("gen: %d files up to date\n", len(files))
	return nil
}
