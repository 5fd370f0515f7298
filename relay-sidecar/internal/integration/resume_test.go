package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/test/faultproxy"
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

// soakLength is how long the rotation soak streams: RELAYTLS_SOAK (a Go
// duration, e.g. 5m for the issue's full run), default 80s.
func soakLength(t *testing.T) time.Duration {
	if v := os.Getenv("RELAYTLS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("RELAYTLS_SOAK=%q: %v", v, err)
		}
		return d
	}
	return 80 * time.Second
}

// With client certificates that last 10s, renewed at two thirds of their
// life (every third renewal late, so that the server closes the
// connection at the expiry first), the app stream and a raw byte stream
// lose nothing.
func TestResumeSoakWithShortLivedClientCerts(t *testing.T) {
	const life = 10 * time.Second
	first := clientLeaf()
	first.NotAfter = time.Now().Add(life)
	e := newEnv(t, envOpts{mode: access.ModeMTLS, clientLeaf: &first, expiryGrace: time.Second,
		resume: 30 * time.Second, mux: true})
	e.startApp()
	client, server := e.startRaw(4 << 10)
	e.streaming(10)

	end := time.Now().Add(soakLength(t))
	notAfter := first.NotAfter
	rotations, late := 0, 0
	for i := 0; time.Now().Before(end) || rotations < 8; i++ {
		at := notAfter.Add(-life / 3)
		if i%3 == 2 {
			// Late: the server closes the connection at the expiry, the
			// agent cannot reconnect until the renewal.
			at = notAfter.Add(500 * time.Millisecond)
			late++
		}
		waitFor(t, "the renewal time", life+5*time.Second, func() bool { return !time.Now().Before(at) })
		l := clientLeaf()
		l.NotAfter = time.Now().Add(life)
		renewed := issue(t, e.ca, l)
		e.agSide.write(t, e.agSide.certs, pair(renewed))
		notAfter = l.NotAfter
		rotations++
		waitFor(t, "the agent to connect with the renewed certificate", 15*time.Second, func() bool {
			st := e.ag.Status()
			return st.Ready && st.ClientSerial == serial(renewed)
		})
		e.noBreak()
	}
	e.streaming(10)
	e.noBreak()
	finishRaw(t, client, server)
	expiries := failures(e.srvSide.metrics, access.ReasonPeerExpired)
	ok := resumes(e.srvSide.metrics, "ok")
	t.Logf("%d rotations (%d late), %v server expiry closes, %v resumes, app agent %+v, app server %+v",
		rotations, late, expiries, ok, e.appAg.Stats(), e.up.Stats())
	if expiries < float64(late) {
		t.Errorf("the server closed %v connections at expiry, want at least %d", expiries, late)
	}
	// Each rotation moves both tunnels (or resumes them after the close).
	if ok < float64(2*rotations) {
		t.Errorf("%v resumes for %d rotations of 2 tunnels", ok, rotations)
	}
	if !strings.Contains(e.agSide.logs.String(), "moving live tunnels to the new connection") {
		t.Errorf("no make-before-break move in the agent log")
	}
}

// A cut longer than the resume window ends the tunnels cleanly on both
// ends, with the reason, and nothing wrong is delivered.
func TestCutLongerThanResumeWindowEndsCleanly(t *testing.T) {
	var proxy *faultproxy.Proxy
	e := newEnv(t, envOpts{mode: access.ModeMTLS, serverPing: time.Second,
		resume: 2 * time.Second, mux: true, serverVia: viaProxy(t, &proxy)})
	app := e.startApp()
	client, server := e.startRaw(4 << 10)
	e.streaming(10)

	proxy.SetMode(faultproxy.Reset)
	waitFor(t, "the server to close both tunnels after the window", 30*time.Second, func() bool {
		return tunnels(e.srvSide.metrics, "resume_window_expired") >= 2
	})
	waitFor(t, "the agent to give both tunnels up", 30*time.Second, func() bool {
		return tunnels(e.agSide.metrics, "resume_failed") >= 2
	})
	for _, end := range []*rawEnd{client, server} {
		select {
		case <-end.readDone:
		case <-time.After(10 * time.Second):
			t.Fatalf("a raw end is still open: %+v", end.stats())
		}
	}
	cs, ss := client.stats(), server.stats()
	if cs.Bad >= 0 || ss.Bad >= 0 || !cs.EOF || !ss.EOF {
		t.Fatalf("the raw stream did not end cleanly: client %+v, server %+v", cs, ss)
	}
	if cs.Recv > ss.Sent || ss.Recv > cs.Sent {
		t.Fatalf("more received than sent: client %+v, server %+v", cs, ss)
	}
	for name, logs := range map[string]string{"server": e.srvSide.logs.String(), "agent": e.agSide.logs.String()} {
		if !strings.Contains(logs, "no resume within the 2s resume window") {
			t.Errorf("the %s log does not give the reason", name)
		}
	}
	if a := app.Stats(); a.Gaps != 0 || e.up.Stats().Gaps != 0 {
		t.Errorf("gaps: agent %+v, server %+v", a, e.up.Stats())
	}
}

// A restarted server sidecar lost its tunnels: the agent's resume is
// refused and its client sees a clean close, never wrong bytes.
func TestRestartedServerClosesTunnelsCleanly(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeTLS, resume: 30 * time.Second, mux: true})
	client, _ := e.startRaw(4 << 10)
	waitFor(t, "bytes from the upstream", 10*time.Second, func() bool { return client.stats().Recv > 32<<10 })
	e.srv.Stop()
	e.startServer(relisten(t, e.srvAddr))
	waitFor(t, "the new server to refuse the resume", 30*time.Second, func() bool {
		return resumes(e.srvSide.metrics, "unknown_tunnel") >= 1 && resumes(e.agSide.metrics, "refused") >= 1
	})
	select {
	case <-client.readDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent's client was not closed: %+v", client.stats())
	}
	if cs := client.stats(); cs.Bad >= 0 || !cs.EOF {
		t.Fatalf("the client did not see a clean close: %+v", cs)
	}
	if !strings.Contains(e.agSide.logs.String(), "server may have restarted") {
		t.Errorf("the agent log does not say why the tunnel closed")
	}
}

// An agent that asks for resumable tunnels from a server running
// --resume=false gets the plain tunnels of before: they work, and a lost
// stream ends them.
func TestResumeOffOnTheServer(t *testing.T) {
	var proxy *faultproxy.Proxy
	e := newEnv(t, envOpts{mode: access.ModeMTLS, serverPing: time.Second, resume: 30 * time.Second,
		serverResumeOff: true, serverVia: viaProxy(t, &proxy)})
	app := e.startApp()
	e.streaming(10)
	proxy.SetMode(faultproxy.Reset)
	waitFor(t, "the plain tunnel to break", 10*time.Second, func() bool { return app.Stats().Breaks >= 1 })
	proxy.SetMode(faultproxy.Pass)
	if got := resumes(e.agSide.metrics, "ok") + resumes(e.srvSide.metrics, "ok"); got != 0 {
		t.Fatalf("%v resumes with resume off on the server", got)
	}
	before := app.Stats()
	waitFor(t, "the app to stream on a new tunnel", 20*time.Second, func() bool {
		return app.Stats().Received > before.Received+10
	})
}
