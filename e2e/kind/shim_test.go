package kind

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDockerShim runs hack/kind/docker-shim in front of a stand-in docker
// that prints its arguments: --privileged becomes every capability but
// CAP_SYS_RESOURCE on run and create, is dropped on exec, and every other
// argument passes through unchanged and in order.
func TestDockerShim(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	shim := filepath.Join(filepath.Dir(file), "..", "..", "hack", "kind", "docker-shim")
	fake := filepath.Join(t.TempDir(), "docker")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []string {
		t.Helper()
		cmd := exec.Command(shim, args...)
		cmd.Env = append(os.Environ(), "RELAYTLS_REAL_DOCKER="+fake)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("docker-shim %v: %v\n%s", args, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	has := func(list []string, s string) bool {
		for _, a := range list {
			if a == s {
				return true
			}
		}
		return false
	}

	for _, sub := range []string{"run", "create"} {
		got := run(sub, "--privileged", "--name", "n1", "img")
		if has(got, "--privileged") {
			t.Errorf("%s: --privileged passed through: %q", sub, got)
		}
		for _, want := range []string{"--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "systempaths=unconfined", "--name", "n1", "img"} {
			if !has(got, want) {
				t.Errorf("%s: %q missing from %q", sub, want, got)
			}
		}
		if got[0] != sub || got[len(got)-1] != "img" {
			t.Errorf("%s: order changed: %q", sub, got)
		}
	}
	if got := run("exec", "--privileged", "c1", "true"); strings.Join(got, " ") != "exec c1 true" {
		t.Errorf("exec: got %q, want exec c1 true", got)
	}
	if got := run("--log-level", "debug", "ps", "-a"); strings.Join(got, " ") != "--log-level debug ps -a" {
		t.Errorf("other commands: got %q, want them unchanged", got)
	}
}
