package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/relaytls/relaytls/issuer/app"
)

// TestWorkersReachEveryController runs relay-issuer with --workers=3 on a
// real control plane and reads, from controller-runtime's own log line, the
// worker count every controller started with: the CertificateRequest
// controller too, which issuer-lib's CombinedController leaves at one.
func TestWorkersReachEveryController(t *testing.T) {
	c := startCluster(t, "management")
	var mu sync.Mutex
	workers := map[string]int{}
	logger := funcr.New(func(prefix, args string) {}, funcr.Options{})
	logger = logr.New(&captureSink{LogSink: logger.GetSink(), onInfo: func(msg string, kv []any) {
		if msg != "Starting workers" {
			return
		}
		var name string
		count := -1
		for i := 0; i+1 < len(kv); i += 2 {
			switch kv[i] {
			case "controller":
				name = fmt.Sprint(kv[i+1])
			case "worker count":
				count, _ = kv[i+1].(int)
			}
		}
		mu.Lock()
		workers[name] = count
		mu.Unlock()
	}})
	runIssuer(t, c, app.Options{Workers: 3, Logger: logger})
	want := []string{"relayissuer", "relayclusterissuer", "certificaterequest"}
	eventually(t, 30*time.Second, "every controller to start its workers", func(context.Context) (bool, string, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, name := range want {
			if _, ok := workers[name]; !ok {
				return false, fmt.Sprint(workers), nil
			}
		}
		return true, fmt.Sprint(workers), nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, name := range want {
		if workers[name] != 3 {
			t.Errorf("controller %s started %d workers, want 3 (all: %v)", name, workers[name], workers)
		}
	}
}

// captureSink passes Info calls, with the values of WithValues, to onInfo.
type captureSink struct {
	logr.LogSink
	values []any
	onInfo func(msg string, kv []any)
}

func (s *captureSink) Enabled(int) bool { return true }

func (s *captureSink) Info(level int, msg string, kv ...any) {
	s.onInfo(msg, append(append([]any{}, s.values...), kv...))
}

func (s *captureSink) WithValues(kv ...any) logr.LogSink {
	return &captureSink{LogSink: s.LogSink, values: append(append([]any{}, s.values...), kv...), onInfo: s.onInfo}
}

func (s *captureSink) WithName(name string) logr.LogSink {
	return &captureSink{LogSink: s.LogSink, values: s.values, onInfo: s.onInfo}
}
