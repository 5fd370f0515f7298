// Package test holds the helpers every suite shares (test PKI, the
// kubelet-style Secret projector, the fault proxy, local control planes,
// waits). Its test checks the rule that keeps them here: no shipped binary
// depends on a test helper or on e2e/.
package test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/relaytls/relaytls"

func TestShippedBinariesImportNoTestCode(t *testing.T) {
	for _, bin := range []string{"./issuer", "./relay-sidecar", "./relayctl"} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", bin)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", bin, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed %d packages; expected the binary's whole tree", bin, len(deps))
		}
		for _, d := range deps {
			if strings.HasPrefix(d, module+"/test/") || strings.HasPrefix(d, module+"/e2e/") || strings.HasSuffix(d, "/testpki") {
				t.Errorf("%s depends on %s, a test helper", bin, d)
			}
		}
	}
}
