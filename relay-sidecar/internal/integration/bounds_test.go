package integration

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/resume"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
	"github.com/relaytls/relaytls/test/testpki"
)

// extraAgent starts a second agent sidecar for another cluster (mtls: with
// its own client certificate from the same CA) on e's server, and returns
// its local address.
func (e *env) extraAgent(name string) string {
	t := e.t
	t.Helper()
	sd := newSide(t, "agent-"+name)
	cfg := e.agCfg
	cfg.Cluster, cfg.Metrics, cfg.Log, cfg.Creds = name, sd.metrics, sd.log, nil
	if e.mode == access.ModeMTLS {
		sd.write(t, sd.bundle, map[string][]byte{"ca.crt": e.ca.PEM})
		sd.write(t, sd.certs, pair(issue(t, e.ca, testpki.Leaf{DNSNames: []string{name},
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})))
		sd.load(t, creds.Sources{CertDir: sd.certs.Path(), BundleFile: sd.bundle.File("ca.crt")},
			creds.Expect{Role: creds.RoleAgent, Names: []string{name}})
		cfg.Creds = sd.creds
	}
	a := must[*agent.Agent](t)(agent.New(cfg))
	t.Cleanup(a.Close)
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	go a.Serve(lis)
	waitFor(t, "agent "+name+" to connect", 20*time.Second, func() bool { return a.Ready() == nil })
	return lis.Addr().String()
}

// echoUpstream echoes every connection and counts them.
func echoUpstream(t *testing.T) (string, *atomic.Int64) {
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	t.Cleanup(func() { lis.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return lis.Addr().String(), &n
}

// echoes opens a tunnel through local and checks one round trip; the
// connection stays open.
func echoes(t *testing.T, local string) net.Conn {
	t.Helper()
	c := must[net.Conn](t)(net.Dial("tcp", local))
	t.Cleanup(func() { c.Close() })
	if err := roundTrip(c); err != nil {
		t.Fatalf("a tunnel through %s does not echo: %v", local, err)
	}
	return c
}

func roundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	msg := []byte("ping through the relay")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo differs: " + string(got))
	}
	return nil
}

// refusedTunnel dials local and expects the tunnel to be refused: the
// connection ends cleanly without echoing.
func refusedTunnel(t *testing.T, local string) {
	t.Helper()
	c := must[net.Conn](t)(net.Dial("tcp", local))
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("a tunnel past the cap: read %d bytes, error %v; want a clean end (EOF)", n, err)
	}
}

// An agent past --max-tunnels-per-cluster is refused with the reason,
// over mutual TLS; its open tunnels and another cluster's are unaffected,
// and a closed tunnel frees its place.
func TestTunnelsPerClusterCap(t *testing.T) {
	for _, resume := range []time.Duration{0, 30 * time.Second} {
		name := "plain"
		if resume > 0 {
			name = "resumable"
		}
		t.Run(name, func(t *testing.T) {
			up, _ := echoUpstream(t)
			e := newEnv(t, envOpts{mode: access.ModeMTLS, upstream: up, maxTunnels: 3, resume: resume})
			waitFor(t, "the agent to connect", 20*time.Second, func() bool { return e.ag.Ready() == nil })
			var open []net.Conn
			for range 3 {
				open = append(open, echoes(t, e.agLocal))
			}
			refusedTunnel(t, e.agLocal)
			if got := failures(e.srvSide.metrics, server.ReasonTooManyTunnels); got != 1 {
				t.Fatalf("too_many_tunnels refusals = %v, want 1", got)
			}
			if !containsAll(e.srvSide.logs.String(), "reason="+server.ReasonTooManyTunnels, `cluster \"cluster-a\" already has 3 tunnels open`) {
				t.Fatalf("the refusal is not logged with its reason:\n%s", tail(e.srvSide.logs.String(), 10))
			}
			for _, c := range open {
				if err := roundTrip(c); err != nil {
					t.Fatalf("an open tunnel broke when another was refused: %v", err)
				}
			}
			other := e.extraAgent("cluster-b")
			echoes(t, other)
			// A finished tunnel gives its place back.
			open[0].(*net.TCPConn).CloseWrite()
			_, _ = io.Copy(io.Discard, open[0])
			waitFor(t, "the closed tunnel to be uncounted", 20*time.Second, func() bool {
				c, err := net.Dial("tcp", e.agLocal)
				if err != nil {
					return false
				}
				defer c.Close()
				return roundTrip(c) == nil
			})
		})
	}
}

// A connection past --max-streams-per-connection gets its stream refused
// with the reason; another connection is unaffected.
func TestStreamsPerConnectionCap(t *testing.T) {
	up, _ := echoUpstream(t)
	e := newEnv(t, envOpts{mode: access.ModeMTLS, upstream: up, maxStreams: 2})
	waitFor(t, "the agent to connect", 20*time.Second, func() bool { return e.ag.Ready() == nil })
	a, b := echoes(t, e.agLocal), echoes(t, e.agLocal)
	refusedTunnel(t, e.agLocal)
	if got := failures(e.srvSide.metrics, server.ReasonTooManyStreams); got != 1 {
		t.Fatalf("too_many_streams refusals = %v, want 1", got)
	}
	if !containsAll(e.srvSide.logs.String(), "reason="+server.ReasonTooManyStreams, "already has 2 streams") {
		t.Fatalf("the refusal is not logged with its reason:\n%s", tail(e.srvSide.logs.String(), 10))
	}
	for _, c := range []net.Conn{a, b} {
		if err := roundTrip(c); err != nil {
			t.Fatalf("an open tunnel broke when another stream was refused: %v", err)
		}
	}
	// Same cluster, another connection: its own streams.
	echoes(t, e.extraAgent(cluster))
}

// In tls mode a client that finishes the TLS handshake but never
// authenticates a stream is closed at --auth-timeout, and one that does not
// even finish the handshake is closed with handshake_timeout; the
// authenticated agent keeps its connection.
func TestUnauthenticatedConnectionsAreClosed(t *testing.T) {
	const timeout = 700 * time.Millisecond
	up, _ := echoUpstream(t)
	e := newEnv(t, envOpts{mode: access.ModeTLS, upstream: up, authTimeout: timeout})
	waitFor(t, "the agent to connect", 20*time.Second, func() bool { return e.ag.Ready() == nil })
	conn0 := e.ag.Status().ConnID
	tunnel := echoes(t, e.agLocal)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.PEM)
	idleTLS := must[*tls.Conn](t)(tls.Dial("tcp", e.srvAddr, &tls.Config{RootCAs: pool, ServerName: serverName,
		NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}))
	defer idleTLS.Close()
	idleTCP := must[net.Conn](t)(net.Dial("tcp", e.srvAddr))
	defer idleTCP.Close()

	start := time.Now()
	for _, c := range []net.Conn{idleTLS, idleTCP} {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("an unauthenticated connection was still open after 20s (auth timeout %s)", timeout)
		}
	}
	waited := time.Since(start)
	if waited < timeout/2 {
		t.Fatalf("the connections were closed after %s, before the %s auth timeout", waited, timeout)
	}
	waitFor(t, "both closes to be counted", 5*time.Second, func() bool {
		return failures(e.srvSide.metrics, server.ReasonAuthTimeout) == 1 &&
			failures(e.srvSide.metrics, server.ReasonHandshakeTimeout) == 1
	})
	time.Sleep(timeout) // past the deadline of the agent's own connection too
	if err := roundTrip(tunnel); err != nil {
		t.Fatalf("the authenticated agent's tunnel broke: %v", err)
	}
	if id := e.ag.Status().ConnID; id != conn0 || testutil.ToFloat64(e.agSide.metrics.Reconnects) != 0 {
		t.Fatalf("the authenticated agent lost its connection (conn %d -> %d)", conn0, id)
	}
}

// When the upstream cannot be reached, the local client gets a FIN after
// its bytes were read, not a reset.
func TestUpstreamDownIsACleanClose(t *testing.T) {
	dead := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	addr := dead.Addr().String()
	dead.Close()
	for _, resume := range []time.Duration{0, 30 * time.Second} {
		e := newEnv(t, envOpts{mode: access.ModeMTLS, upstream: addr, resume: resume})
		waitFor(t, "the agent to connect", 20*time.Second, func() bool { return e.ag.Ready() == nil })
		c := must[net.Conn](t)(net.Dial("tcp", e.agLocal))
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		_, err := c.Read(make([]byte, 1))
		if errors.Is(err, syscall.ECONNRESET) || !errors.Is(err, io.EOF) {
			t.Fatalf("resume window %s: the local client got %v when the upstream is down; want EOF (a FIN)", resume, err)
		}
		c.Close()
	}
}

// The 200-tunnel attack: one cluster's tunnels all have upstreams that
// send without end and local clients that never read. The server holds at
// most --max-unacked-bytes-per-cluster plus one read per tunnel for that
// cluster, and another cluster still streams.
func TestClusterUnackedBytesCap(t *testing.T) {
	const (
		tunnels   = 40
		perTunnel = 256 << 10
		cap       = 1 << 20
	)
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	e := newEnv(t, envOpts{mode: access.ModeMTLS, upstream: lis.Addr().String(), resume: 30 * time.Second,
		resumeBuffer: perTunnel, maxUnacked: cap, maxTunnels: tunnels + 1})
	waitFor(t, "the agent to connect", 20*time.Second, func() bool { return e.ag.Ready() == nil })
	for range tunnels {
		c := must[net.Conn](t)(net.Dial("tcp", e.agLocal))
		t.Cleanup(func() { c.Close() })
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
	}
	bound := float64(cap + tunnels*(resume.BudgetReserve+frame.MaxPayload))
	peak := 0.0
	sample := func() {
		peak = max(peak, testutil.ToFloat64(e.srvSide.metrics.Buffered))
		if peak > bound {
			t.Fatalf("the server holds %v unacknowledged bytes for one cluster, above %v (cap %d + reserve and one read per tunnel)", peak, bound, cap)
		}
	}
	waitFor(t, "the server to fill the cluster's budget", 30*time.Second, func() bool { sample(); return peak >= cap })
	for range 50 {
		sample()
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("unacknowledged bytes held at most %v for %d tunnels (without the cap: up to %d)", peak, tunnels, tunnels*perTunnel)

	// Another cluster streams while cluster-a is at its cap.
	c := must[net.Conn](t)(net.Dial("tcp", e.extraAgent("cluster-b")))
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.CopyN(io.Discard, c, 8<<20)
	if err != nil {
		t.Fatalf("cluster-b got %d bytes while cluster-a was at its cap: %v", n, err)
	}
	sample()
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
