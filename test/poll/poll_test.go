package poll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records a failure instead of stopping.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(r)
}

// run calls f and reports whether it failed r.
func run(r *recorder, f func()) (failed bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != r {
				panic(p)
			}
			failed = true
		}
	}()
	f()
	return false
}

func TestEventually(t *testing.T) {
	n := 0
	r := &recorder{TB: t}
	if run(r, func() {
		Eventually(r, time.Second, "the third look", Seen(func(context.Context) (bool, string) { n++; return n >= 3, "" }))
	}) || n != 3 {
		t.Fatalf("a condition true on its third look: failed %v after %d looks", r.failed != "", n)
	}
	if !run(r, func() {
		EventuallyEvery(r, 10*time.Millisecond, 50*time.Millisecond, "never", Seen(func(context.Context) (bool, string) { return false, "" }))
	}) || !strings.Contains(r.failed, "never") {
		t.Fatalf("a condition never true did not fail the test (%q)", r.failed)
	}
	if !run(r, func() {
		Eventually(r, time.Minute, "an error", func(context.Context) (bool, string, error) { return false, "", errors.New("stop") })
	}) {
		t.Fatal("a condition's error did not end the wait with a failure")
	}
}

func TestConsistently(t *testing.T) {
	r := &recorder{TB: t}
	n := 0
	if run(r, func() {
		Consistently(r, 350*time.Millisecond, "always", Seen(func(context.Context) (bool, string) { n++; return true, "" }))
	}) || n < 3 {
		t.Fatalf("a condition always true: failed %v after %d looks", r.failed != "", n)
	}
	n = 0
	if !run(r, func() {
		Consistently(r, time.Minute, "until the second look", Seen(func(context.Context) (bool, string) { n++; return n < 2, "" }))
	}) || n != 2 {
		t.Fatalf("a condition false on its second look: failed %v after %d looks", r.failed != "", n)
	}
}
