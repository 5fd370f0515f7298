// Package poll holds the waits every test suite of the repository uses: the
// integration tests on local control planes, the end-to-end suites and the
// sidecar's tests. A wait fails the test with what it waited for and the
// last thing it saw.
package poll

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Interval is how often Eventually and Consistently look.
const Interval = 100 * time.Millisecond

// Cond reports whether what is waited for holds, what it saw (for the
// failure message), and an error that ends the wait at once.
type Cond func(ctx context.Context) (ok bool, seen string, err error)

// Eventually polls cond every Interval until it holds, and fails t at the
// timeout, or on cond's error, with the last observation.
func Eventually(t testing.TB, timeout time.Duration, what string, cond Cond) {
	t.Helper()
	EventuallyEvery(t, Interval, timeout, what, cond)
}

// EventuallyEvery is Eventually with another interval.
func EventuallyEvery(t testing.TB, every, timeout time.Duration, what string, cond Cond) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), every, timeout, true, func(ctx context.Context) (bool, error) {
		ok, seen, err := cond(ctx)
		if ctx.Err() == nil {
			// A look cut short by the deadline says nothing new.
			last = seen
		}
		return ok, err
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v; last seen: %s", what, err, last)
	}
}

// Consistently polls cond every Interval for d and fails t the first time
// it does not hold: for what must never happen.
func Consistently(t testing.TB, d time.Duration, what string, cond Cond) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, seen, err := cond(t.Context())
		if err != nil || !ok {
			t.Fatalf("%s: %v %s", what, err, seen)
		}
		if !time.Now().Add(Interval).Before(deadline) {
			return
		}
		time.Sleep(Interval)
	}
}

// Seen adapts a condition that cannot fail.
func Seen(cond func(ctx context.Context) (bool, string)) Cond {
	return func(ctx context.Context) (bool, string, error) {
		ok, seen := cond(ctx)
		return ok, seen, nil
	}
}
