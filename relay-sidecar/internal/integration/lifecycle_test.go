package integration

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaytls/relaytls/e2e/relayapp"
	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
	"github.com/relaytls/relaytls/test/faultproxy"
)

func TestServerClosesAtClientCertExpiryAndAgentRecovers(t *testing.T) {
	short := clientLeaf()
	// Long enough for the set-up and ten heartbeats on a loaded machine (3 s
	// expired before the stream was up at load 30 on 2 cores).
	short.NotAfter = time.Now().Add(8 * time.Second)
	e := newEnv(t, envOpts{mode: access.ModeMTLS, clientLeaf: &short, expiryGrace: 500 * time.Millisecond})
	app := e.startApp()
	e.streaming(10)

	waitFor(t, "the server to close the connection at the certificate's expiry", 20*time.Second, func() bool {
		return failures(e.srvSide.metrics, access.ReasonPeerExpired) >= 1
	})
	// Until tunnels are resumable, the stream on that connection breaks.
	waitFor(t, "the app stream to break", 10*time.Second, func() bool { return app.Stats().Breaks >= 1 })
	// Redials with the expired certificate do not get through either.
	waitFor(t, "no live connection with the expired certificate", 5*time.Second, func() bool {
		return testutil.ToFloat64(e.srvSide.metrics.Connections) == 0
	})
	// The agent says why.
	waitFor(t, "the agent to report its expired certificate", 10*time.Second, func() bool {
		err := e.ag.Ready()
		return err != nil && strings.Contains(err.Error(), "expired")
	})
	logs := e.agSide.logs.String()
	if !strings.Contains(logs, "expires at") || !strings.Contains(logs, "the server closes its connection") {
		t.Errorf("agent log does not give the server's reason for the close")
	}
	waitFor(t, "the server to refuse a redial with the expired certificate", 10*time.Second, func() bool {
		return failures(e.srvSide.metrics, access.ReasonExpired) >= 1
	})

	// Valid material appears: the agent reconnects and the app streams again.
	renewed := issue(t, e.ca, clientLeaf())
	e.agSide.write(t, e.agSide.certs, pair(renewed))
	waitFor(t, "the agent to reconnect with the renewed certificate", 15*time.Second, func() bool {
		st := e.ag.Status()
		return st.Ready && st.ClientSerial == serial(renewed)
	})
	before := app.Stats()
	waitFor(t, "the app to stream again", 15*time.Second, func() bool {
		now := app.Stats()
		return now.Streams >= 2 && now.Received > before.Received+10
	})
	if app.Stats().Gaps != 0 {
		t.Fatalf("gaps inside a stream: %+v", app.Stats())
	}
}

func TestClientCertRenewedInTime(t *testing.T) {
	short := clientLeaf()
	short.NotAfter = time.Now().Add(10 * time.Second) // renewed right after streaming, long before this
	e := newEnv(t, envOpts{mode: access.ModeMTLS, clientLeaf: &short, expiryGrace: 500 * time.Millisecond})
	old := e.startApp()
	e.streaming(10)
	renewed := issue(t, e.ca, clientLeaf())
	e.agSide.write(t, e.agSide.certs, pair(renewed))
	waitFor(t, "the new connection", 10*time.Second, func() bool {
		st := e.ag.Status()
		return st.Ready && st.ClientSerial == serial(renewed)
	})
	// A stream started now runs on the new connection and goes through the
	// old certificate's expiry untouched.
	fresh := relayapp.NewAgent(e.agLocal, relayapp.Options{Interval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); fresh.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the old connection to be closed at its expiry", 15*time.Second, func() bool {
		return failures(e.srvSide.metrics, access.ReasonPeerExpired) >= 1
	})
	n := fresh.Stats().Received
	waitFor(t, "the new stream to keep flowing", 10*time.Second, func() bool { return fresh.Stats().Received > n+20 })
	if st := fresh.Stats(); st.Gaps != 0 || st.Breaks != 0 || st.Streams != 1 {
		t.Fatalf("the stream on the new connection lost something: %+v (%s)", st, fresh.LastError())
	}
	// The stream left on the old connection ends there (resumable tunnels
	// will move it), and reopens on the new one.
	waitFor(t, "the old stream to reopen", 10*time.Second, func() bool { return old.Stats().Streams >= 2 })
}

func TestKeepaliveDetectsBlackholeAndReconnects(t *testing.T) {
	var proxy *faultproxy.Proxy
	e := newEnv(t, envOpts{mode: access.ModeMTLS, keepalive: 10 * time.Second, serverPing: time.Second,
		serverVia: func(addr string) string {
			p, err := faultproxy.New("127.0.0.1:0", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			proxy = p
			return p.Addr()
		}})
	app := e.startApp()
	e.streaming(10)
	reconnects := testutil.ToFloat64(e.agSide.metrics.Reconnects)

	proxy.SetMode(faultproxy.Blackhole)
	// Keepalive: 10s without a frame, then 1s for the ping's answer.
	waitFor(t, "keepalive to notice the blackhole", 30*time.Second, func() bool { return e.ag.Ready() != nil })
	waitFor(t, "the agent to log the lost connection", 5*time.Second, func() bool {
		return strings.Contains(e.agSide.logs.String(), "relay connection lost")
	})
	proxy.SetMode(faultproxy.Pass)
	waitFor(t, "the agent to reconnect", 20*time.Second, func() bool { return e.ag.Ready() == nil })
	before := app.Stats()
	waitFor(t, "the app to stream again", 20*time.Second, func() bool {
		return app.Stats().Received > before.Received+10 && app.Stats().Streams >= 2
	})
	if got := testutil.ToFloat64(e.agSide.metrics.Reconnects); got <= reconnects {
		t.Errorf("reconnects %v, want more than %v", got, reconnects)
	}
}

func TestAgentSurvivesServerRestart(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeTLS})
	app := e.startApp()
	e.streaming(10)
	e.srv.Stop()
	waitFor(t, "the agent to notice", 10*time.Second, func() bool { return e.ag.Ready() != nil })
	e.startServer(relisten(t, e.srvAddr))
	waitFor(t, "the agent to reconnect", 15*time.Second, func() bool { return e.ag.Ready() == nil })
	before := app.Stats()
	waitFor(t, "the app to stream again", 15*time.Second, func() bool {
		return app.Stats().Streams >= 2 && app.Stats().Received > before.Received+10
	})
	if testutil.ToFloat64(e.agSide.metrics.Reconnects) < 1 {
		t.Error("reconnect not counted")
	}
}

func TestDrainHasADeadline(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		e := newEnv(t, envOpts{mode: access.ModeTLS})
		app := e.startApp()
		e.streaming(5)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() { e.srv.Drain(ctx); close(done) }()
		waitFor(t, "the server to report draining", 5*time.Second, func() bool {
			err := e.srv.Ready()
			return err != nil && strings.Contains(err.Error(), "draining")
		})
		// The app stream never ends by itself: the deadline ends it.
		waitFor(t, "drain to return at its deadline", 10*time.Second, func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		})
		waitFor(t, "the stream to be closed", 5*time.Second, func() bool { return app.Stats().Breaks >= 1 })
	})
	t.Run("agent", func(t *testing.T) {
		e := newEnv(t, envOpts{mode: access.ModeInsecure})
		e.startApp()
		e.streaming(5)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() { e.ag.Drain(ctx); close(done) }()
		waitFor(t, "drain to return at its deadline", 10*time.Second, func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		})
		if err := e.ag.Ready(); err == nil || !strings.Contains(err.Error(), "draining") {
			t.Fatalf("Ready after drain: %v", err)
		}
		if c, err := net.DialTimeout("tcp", e.agLocal, time.Second); err == nil {
			c.Close()
			t.Fatal("the agent still accepts local connections after draining")
		}
	})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeMTLS})
	m := metrics.New("agent", func() map[string]time.Time {
		return map[string]time.Time{"leaf": e.agSide.creds.Current().Leaf.NotAfter}
	})
	h, err := metrics.ServeHealth("127.0.0.1:0", m, e.ag.Ready)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	base := "http://" + h.Addr()
	if code, body := get(t, base+"/livez"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/livez: %d %q", code, body)
	}
	waitFor(t, "/readyz to pass", 10*time.Second, func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	m.Reload("failure", "expired")
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		`relay_sidecar_certificate_expiry_seconds{kind="leaf",role="agent"}`,
		`relay_sidecar_credential_reloads_total{reason="expired",result="failure",role="agent"} 1`,
		`relay_sidecar_active_tunnels{role="agent"} 0`,
		`relay_sidecar_reconnects_total{role="agent"} 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	e.ag.Drain(t.Context())
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining: %d %q", code, body)
	}
}

func TestProxyProtocolNamesTheCluster(t *testing.T) {
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	t.Cleanup(func() { lis.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		tlvs, _ := h.TLVs()
		name := ""
		for _, tlv := range tlvs {
			if tlv.Type == server.ClusterTLV {
				name = string(tlv.Value)
			}
		}
		got <- name
		io.Copy(c, br)
	}()
	e := newEnv(t, envOpts{mode: access.ModeMTLS, proxyProto: true, upstream: lis.Addr().String()})
	c := must[net.Conn](t)(net.Dial("tcp", e.agLocal))
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo through the tunnel: %q, %v", line, err)
	}
	if name := <-got; name != cluster {
		t.Fatalf("PROXY header names %q, want %q", name, cluster)
	}
}

func TestUnixSocketsOnBothEnds(t *testing.T) {
	dir := t.TempDir()
	upPath, localPath := filepath.Join(dir, "upstream.sock"), filepath.Join(dir, "agent.sock")
	upLis := must[net.Listener](t)(net.Listen("unix", upPath))
	up := relayapp.NewServer(relayapp.Options{Interval: 5 * time.Millisecond})
	go up.Serve(upLis)
	t.Cleanup(up.Stop)
	e := newEnv(t, envOpts{mode: access.ModeMTLS, upstream: "unix:" + upPath})
	local := must[net.Listener](t)(net.Listen("unix", localPath))
	go e.ag.Serve(local)
	app := relayapp.NewAgent("unix:"+localPath, relayapp.Options{Interval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); app.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "heartbeats both ways over unix sockets", 20*time.Second, func() bool {
		return app.Stats().Received > 20 && up.Stats().Received > 20
	})
	if st := app.Stats(); st.Gaps != 0 || st.Breaks != 0 {
		t.Fatalf("lost heartbeats: %+v", st)
	}
}
