package agent

import (
	"testing"
	"time"
)

// TestBackoff: the retry delay starts at BackoffBase, grows 1.6 times per
// step, waits up to 20% longer at random, and stops growing at BackoffMax.
func TestBackoff(t *testing.T) {
	a := &Agent{cfg: Config{BackoffBase: time.Second, BackoffMax: 5 * time.Second}}
	b := a.backoff()
	want := []time.Duration{time.Second, 1600 * time.Millisecond, 2560 * time.Millisecond, 4096 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		got := b.Step()
		if got < w || got > w+w/5 {
			t.Fatalf("step %d: %s, want between %s and %s", i, got, w, w+w/5)
		}
	}
	if got := a.backoff().Step(); got > 1200*time.Millisecond {
		t.Fatalf("a fresh backoff starts again at the base: %s", got)
	}
}
