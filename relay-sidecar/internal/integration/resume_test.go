package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaytls/relaytls/e2e/faultproxy"
	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
)

func resumes(m *metrics.Metrics, result string) float64 {
	return testutil.ToFloat64(m.Resumes.WithLabelValues(result))
}

func tunnels(m *metrics.Metrics, result string) float64 {
	return testutil.ToFloat64(m.Tunnels.WithLabelValues(result))
}

// viaProxy puts a fault proxy between the agent and the server sidecar.
func viaProxy(t *testing.T, proxy **faultproxy.Proxy) func(string) string {
	return func(addr string) string {
		p, err := faultproxy.New("127.0.0.1:0", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		*proxy = p
		return p.Addr()
	}
}

// noBreak fails unless both sides of the app kept their one stream with
// no gap.
func (e *env) noBreak() {
	e.t.Helper()
	a, s := e.appAg.Stats(), e.up.Stats()
	if a.Gaps != 0 || a.Breaks != 0 || s.Gaps != 0 || s.Breaks != 0 || a.Streams != 1 || s.Streams != 1 {
		e.t.Fatalf("the app stream broke: agent %+v (last error %q), server %+v", a, e.appAg.LastError(), s)
	}
}

func TestResumeSurvivesResetAndBlackhole(t *testing.T) {
	var proxy *faultproxy.Proxy
	e := newEnv(t, envOpts{mode: access.ModeMTLS, keepalive: 10 * time.Second, serverPing: time.Second,
		resume: 30 * time.Second, mux: true, serverVia: viaProxy(t, &proxy)})
	e.startApp()
	client, server := e.startRaw(4 << 10)
	e.streaming(20)

	// A reset in the middle of the transfer.
	accepted := proxy.Accepted()
	proxy.SetMode(faultproxy.Reset)
	waitFor(t, "the agent to try again through the reset", 10*time.Second, func() bool { return proxy.Accepted() > accepted })
	proxy.SetMode(faultproxy.Pass)
	waitFor(t, "both tunnels to resume after the reset", 30*time.Second, func() bool {
		return resumes(e.srvSide.metrics, "ok") >= 2
	})
	e.streaming(20)
	e.noBreak()

	// A 5s blackhole: the connection is dead for good (its byte stream has
	// holes); keepalive finds out and the tunnels resume on a new one.
	proxy.SetMode(faultproxy.Blackhole)
	blackholed := time.Now()
	waitFor(t, "5s of blackhole", 10*time.Second, func() bool { return time.Since(blackholed) >= 5*time.Second })
	proxy.SetMode(faultproxy.Pass)
	waitFor(t, "both tunnels to resume after the blackhole", 60*time.Second, func() bool {
		return resumes(e.srvSide.metrics, "ok") >= 4
	})
	e.streaming(20)
	e.noBreak()
	finishRaw(t, client, server)
	waitFor(t, "the raw tunnel to finish cleanly on both sidecars", 10*time.Second, func() bool {
		return tunnels(e.srvSide.metrics, "ok") >= 1 && tunnels(e.agSide.metrics, "ok") >= 1
	})
	if strings.Contains(e.agSide.logs.String(), "tunnel closed") {
		t.Errorf("a tunnel was closed")
	}
}
