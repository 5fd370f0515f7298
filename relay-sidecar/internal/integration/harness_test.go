package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaytls/relaytls/e2e/relayapp"
	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/testpki"
)

const (
	serverName = "relay.test"
	cluster    = "cluster-a"
)

// logBuf is a concurrency-safe log sink the tests search.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// side is one sidecar's mounted material.
type side struct {
	certs, bundle, token *kubeletdir.Dir
	creds                *creds.Reloader
	metrics              *metrics.Metrics
	logs                 *logBuf
	log                  *slog.Logger
}

type env struct {
	t    *testing.T
	mode access.Mode
	ca   *testpki.CA
	tok  proof.Token

	srvSide, agSide *side

	srv     *server.Server
	srvAddr string
	srvCfg  server.Config

	ag      *agent.Agent
	agCfg   agent.Config
	agLocal string

	up      *relayapp.Server
	upAddr  string
	appAg   *relayapp.Agent
	appStop context.CancelFunc

	raw *rawUpstream

	hsMu       sync.Mutex
	handshakes []server.HandshakeInfo
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func newCA(t *testing.T, name string) *testpki.CA {
	return must[*testpki.CA](t)(testpki.NewCA(name, 48*time.Hour))
}

func issue(t *testing.T, ca *testpki.CA, l testpki.Leaf) *testpki.Issued {
	return must[*testpki.Issued](t)(ca.Issue(l))
}

func serverLeaf() testpki.Leaf {
	return testpki.Leaf{DNSNames: []string{serverName}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

func clientLeaf() testpki.Leaf {
	return testpki.Leaf{DNSNames: []string{cluster}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

func pair(is *testpki.Issued) map[string][]byte {
	return map[string][]byte{"tls.crt": is.CertPEM, "tls.key": is.KeyPEM}
}

func newSide(t *testing.T, name string) *side {
	dir := filepath.Join(t.TempDir(), name)
	s := &side{
		certs:  must[*kubeletdir.Dir](t)(kubeletdir.New(filepath.Join(dir, "tls"))),
		bundle: must[*kubeletdir.Dir](t)(kubeletdir.New(filepath.Join(dir, "ca"))),
		token:  must[*kubeletdir.Dir](t)(kubeletdir.New(filepath.Join(dir, "token"))),
		logs:   &logBuf{},
	}
	s.log = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.metrics = metrics.New(name, nil)
	return s
}

func (s *side) write(t *testing.T, d *kubeletdir.Dir, files map[string][]byte) {
	t.Helper()
	if err := d.Write(files); err != nil {
		t.Fatal(err)
	}
}

func (s *side) load(t *testing.T, src creds.Sources, exp creds.Expect) {
	t.Helper()
	r, err := creds.NewReloader(src, exp, creds.Options{Poll: 50 * time.Millisecond, Log: s.log, OnResult: s.metrics.Reload})
	if err != nil {
		t.Fatal(err)
	}
	s.creds = r
	go r.Run(t.Context())
}

type envOpts struct {
	mode        access.Mode
	agentMode   access.Mode // defaults to mode
	clientLeaf  *testpki.Leaf
	agentToken  proof.Token // defaults to the cluster token derived from the server's root token
	clusters    server.ClusterList
	serverVia   func(addr string) string
	proxyProto  bool
	keepalive   time.Duration
	serverPing  time.Duration
	expiryGrace time.Duration
	upstream    string // instead of the sample app's server
	// resume turns resumable tunnels on with this window on both sides.
	resume       time.Duration
	resumeBuffer int
	// serverResumeOff runs the server with --resume=false.
	serverResumeOff bool
	// Server bounds (zero: the defaults).
	maxStreams, maxTunnels, maxUnacked int
	authTimeout                        time.Duration
	// mux puts a raw byte-stream checker (see rawUpstream) beside the
	// sample app's server on the upstream.
	mux bool
}

// newEnv mounts material, starts the upstream (relayapp server), the server
// sidecar and the agent sidecar. The app agent is started by startApp.
func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.agentMode == "" {
		o.agentMode = o.mode
	}
	e := &env{t: t, mode: o.mode, ca: newCA(t, "relay root"), srvSide: newSide(t, "server"), agSide: newSide(t, "agent")}
	e.tok = must[proof.Token](t)(proof.GenerateToken())

	// Upstream: the sample management server.
	upLis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	e.up = relayapp.NewServer(relayapp.Options{Interval: 5 * time.Millisecond, Log: e.srvSide.log})
	e.upAddr = upLis.Addr().String()
	if o.mux {
		e.raw = newRawUpstream()
		upLis = e.raw.mux(t, upLis)
	}
	go e.up.Serve(upLis)
	t.Cleanup(e.up.Stop)
	if o.upstream != "" {
		e.upAddr = o.upstream
	}

	// Server material.
	ss := e.srvSide
	if o.mode != access.ModeInsecure {
		ss.write(t, ss.certs, pair(issue(t, e.ca, serverLeaf())))
		ss.write(t, ss.bundle, map[string][]byte{"ca.crt": e.ca.PEM})
		src := creds.Sources{CertDir: ss.certs.Path(), BundleFile: ss.bundle.File("ca.crt")}
		if o.mode == access.ModeTLS {
			ss.write(t, ss.token, map[string][]byte{"token": append([]byte(e.tok), '\n')})
			src.TokenFile = ss.token.File("token")
		}
		ss.load(t, src, creds.Expect{Role: creds.RoleServer, Names: []string{serverName}})
	}
	e.srvCfg = server.Config{Mode: o.mode, Upstream: e.upAddr, ProxyProtocol: o.proxyProto, Creds: ss.creds,
		Metrics: ss.metrics, Log: ss.log, ExpiryGrace: o.expiryGrace, PingInterval: o.serverPing, PingTimeout: time.Second,
		ResumeWindow: o.resume, ResumeBuffer: o.resumeBuffer, Clusters: o.clusters,
		MaxStreamsPerConn: o.maxStreams, MaxTunnelsPerCluster: o.maxTunnels, MaxUnackedPerCluster: o.maxUnacked,
		AuthTimeout: o.authTimeout,
		OnHandshake: func(h server.HandshakeInfo) {
			e.hsMu.Lock()
			e.handshakes = append(e.handshakes, h)
			e.hsMu.Unlock()
		}}
	if o.serverResumeOff {
		e.srvCfg.ResumeWindow = 0
	}
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	e.srvAddr = lis.Addr().String()
	e.startServer(lis)

	// Agent material.
	as := e.agSide
	if o.agentMode != access.ModeInsecure {
		as.write(t, as.bundle, map[string][]byte{"ca.crt": e.ca.PEM})
		src := creds.Sources{BundleFile: as.bundle.File("ca.crt")}
		exp := creds.Expect{Role: creds.RoleAgent}
		if o.agentMode == access.ModeMTLS {
			l := clientLeaf()
			if o.clientLeaf != nil {
				l = *o.clientLeaf
			}
			as.write(t, as.certs, pair(issue(t, e.ca, l)))
			src.CertDir = as.certs.Path()
			exp.Names = []string{cluster}
		}
		if o.agentMode == access.ModeTLS {
			// The agent holds its own cluster token, never the root (SPEC §4).
			tok := must[proof.Token](t)(proof.ClusterToken(e.tok, cluster, proof.DefaultGeneration))
			if o.agentToken != nil {
				tok = o.agentToken
			}
			as.write(t, as.token, map[string][]byte{"token": []byte(tok)})
			src.TokenFile = as.token.File("token")
		}
		as.load(t, src, exp)
	}
	addr := e.srvAddr
	if o.serverVia != nil {
		addr = o.serverVia(addr)
	}
	e.agCfg = agent.Config{Mode: o.agentMode, ServerAddr: addr, ServerName: serverName, Cluster: cluster,
		Creds: as.creds, KeepaliveTime: o.keepalive, KeepaliveTimeout: time.Second,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, OpenTimeout: 5 * time.Second,
		ResumeWindow: o.resume, ResumeBuffer: o.resumeBuffer,
		Metrics: as.metrics, Log: as.log}
	e.ag = must[*agent.Agent](t)(agent.New(e.agCfg))
	t.Cleanup(e.ag.Close)
	agLis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	e.agLocal = agLis.Addr().String()
	go e.ag.Serve(agLis)
	t.Cleanup(func() {
		if dir := os.Getenv("RELAYTLS_LOGDIR"); dir != "" && t.Failed() {
			_ = os.WriteFile(filepath.Join(dir, t.Name()+".server.log"), []byte(ss.logs.String()), 0o600)
			_ = os.WriteFile(filepath.Join(dir, t.Name()+".agent.log"), []byte(as.logs.String()), 0o600)
		}
		if t.Failed() {
			t.Logf("server sidecar log:\n%s", tail(ss.logs.String(), 40))
			t.Logf("agent sidecar log:\n%s", tail(as.logs.String(), 40))
		}
		for _, s := range []*side{ss, as} {
			if strings.Contains(s.logs.String(), string(e.tok)) {
				t.Errorf("the relay identity token appears in a log")
			}
		}
	})
	return e
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) startServer(lis net.Listener) {
	e.t.Helper()
	s, err := server.New(e.srvCfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = s
	go s.Serve(lis)
	e.t.Cleanup(s.Stop)
}

// startApp starts the sample app's agent through the agent sidecar.
func (e *env) startApp() *relayapp.Agent {
	ctx, cancel := context.WithCancel(e.t.Context())
	a := relayapp.NewAgent(e.agLocal, relayapp.Options{Interval: 5 * time.Millisecond, Log: e.agSide.log})
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	e.appAg, e.appStop = a, cancel
	return a
}

// streaming waits until both sides of the app received n more heartbeats.
func (e *env) streaming(n int64) {
	e.t.Helper()
	a0, s0 := e.appAg.Stats().Received, e.up.Stats().Received
	waitFor(e.t, fmt.Sprintf("%d more heartbeats both ways", n), 20*time.Second, func() bool {
		return e.appAg.Stats().Received >= a0+n && e.up.Stats().Received >= s0+n
	})
}

// noLoss fails on any gap or break on either side of the app.
func (e *env) noLoss() {
	e.t.Helper()
	a, s := e.appAg.Stats(), e.up.Stats()
	if a.Gaps != 0 || a.Breaks != 0 || s.Gaps != 0 || s.Breaks != 0 || a.Streams != 1 {
		e.t.Fatalf("the app stream lost something: agent %+v (last error %q), server %+v", a, e.appAg.LastError(), s)
	}
}

func (e *env) sawClientSerial(serial string) bool {
	e.hsMu.Lock()
	defer e.hsMu.Unlock()
	for _, h := range e.handshakes {
		if h.PeerSerial == serial {
			return true
		}
	}
	return false
}

func failures(m *metrics.Metrics, reason string) float64 {
	return testutil.ToFloat64(m.Failures.WithLabelValues(reason))
}

func reloads(m *metrics.Metrics, result, reason string) float64 {
	return testutil.ToFloat64(m.Reloads.WithLabelValues(result, reason))
}

func serial(is *testpki.Issued) string { return is.Cert.SerialNumber.Text(16) }

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}

// relisten listens on addr again, waiting for a stopped server to let go
// of it.
func relisten(t *testing.T, addr string) net.Listener {
	t.Helper()
	var lis net.Listener
	waitFor(t, "to listen on "+addr+" again", 10*time.Second, func() bool {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err == nil
	})
	return lis
}
