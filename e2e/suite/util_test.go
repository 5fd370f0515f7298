package suite

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/e2e/relayapp"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logMentions reports whether the log file mentions s (case-insensitive).
func logMentions(path, s string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	return strings.Contains(strings.ToLower(string(b)), strings.ToLower(s))
}

// appReceived is the last "received" count a relayapp printed to its log
// (its stats are JSON lines on stdout).
func appReceived(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	var last int64
	for _, line := range strings.Split(string(b), "\n") {
		var s relayapp.Stats
		if json.Unmarshal([]byte(line), &s) == nil {
			last = s.Received
		}
	}
	return last
}

// keepLogs copies the components' logs out of the test's temporary
// directory, which is removed, and says where they are.
func keepLogs(t *testing.T, dir string) {
	dst, err := os.MkdirTemp("", "relaytls-e2e-logs-")
	if err != nil {
		t.Log(err)
		return
	}
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		t.Log(err)
		return
	}
	t.Logf("the components' logs are kept in %s", dst)
}
