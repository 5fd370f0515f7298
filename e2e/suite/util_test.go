package suite

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func getReady(ctx context.Context, addr string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), nil
}

// logMentions reports whether the log file mentions s (case-insensitive);
// an empty s only requires a warning or error line.
func logMentions(path, s string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	text := strings.ToLower(string(b))
	if s == "" {
		return strings.Contains(text, `"level":"warn"`) || strings.Contains(text, `"level":"error"`)
	}
	return strings.Contains(text, strings.ToLower(s))
}
