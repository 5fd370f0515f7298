// Package agent is the agent role of the relay sidecar: it listens for the
// agent's local TCP (or unix socket) connections and carries each one as a
// tunnel over one kept-alive gRPC connection to the server sidecar. It
// reconnects with jittered exponential backoff, and when its client
// certificate rotates it connects again with the new certificate, moves new
// tunnels to that connection once it is authenticated, and closes the old
// one when its last tunnel ends (make-before-break).
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relay-sidecar/internal/cork"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
)

// Config configures an Agent.
type Config struct {
	Mode access.Mode
	// ServerAddr is the server sidecar's address (host:port).
	ServerAddr string
	// ServerName is the name the server certificate must carry.
	ServerName string
	// Cluster is this agent's cluster name (required in insecure and tls
	// modes; in mtls the certificate's DNS SAN is the identity).
	Cluster string
	// Creds holds the trust bundle, the client certificate (mtls) and the
	// token (tls). Nil in insecure mode.
	Creds *creds.Reloader
	TLS   creds.TLSOptions

	// KeepaliveTime and KeepaliveTimeout are the HTTP/2 ping interval and
	// ack timeout (gRPC raises Time below 10s to 10s). Defaults 30s, 10s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// BackoffBase and BackoffMax bound the reconnect backoff (defaults 1s
	// and 30s; multiplier 1.6, jitter 0.2).
	BackoffBase, BackoffMax time.Duration
	// OpenTimeout bounds how long a new tunnel waits for the relay (default
	// 30s).
	OpenTimeout time.Duration
	// ResumeWindow is how long a tunnel that lost its stream keeps trying
	// to resume; zero turns resumable tunnels off.
	ResumeWindow time.Duration
	// ResumeBuffer is the most unacknowledged bytes kept per tunnel
	// (default resume.DefaultLimit).
	ResumeBuffer int

	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// windowSize is the HTTP/2 stream flow-control window (as the server's).
const windowSize = 1 << 20

// Agent is the agent role.
type Agent struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cur      *relayConn
	pending  *relayConn
	retiring map[*relayConn]struct{}
	live     map[*tunnel]struct{}
	nextID   int
	lis      []net.Listener
	tunnels  sync.WaitGroup

	everReady atomic.Bool
	draining  atomic.Bool
}

type relayConn struct {
	id           int
	cc           *grpc.ClientConn
	clientSerial string
	active       atomic.Int64
	ready        atomic.Bool
	retired      atomic.Bool
	closeOnce    sync.Once
	serverSerial atomic.Pointer[string]
	// resumable: the server said in its hello that it keeps resumable
	// tunnels, so a tunnel opens in one round trip.
	resumable atomic.Bool
	lastErr   atomic.Pointer[string]
}

// New builds an agent and starts connecting to the server.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		return nil, errors.New("agent: metrics are required")
	}
	if cfg.KeepaliveTime <= 0 {
		cfg.KeepaliveTime = 30 * time.Second
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = 10 * time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 30 * time.Second
	}
	if cfg.Mode != access.ModeInsecure && cfg.Creds == nil {
		return nil, fmt.Errorf("agent: mode %s needs credentials", cfg.Mode)
	}
	if cfg.Mode == access.ModeMTLS {
		id, err := access.IdentityOf(cfg.Creds.Current().Leaf)
		if err != nil {
			return nil, err
		}
		if cfg.Cluster != "" && cfg.Cluster != id {
			return nil, fmt.Errorf("--cluster=%s does not match the client certificate's DNS SAN %q", cfg.Cluster, id)
		}
		cfg.Cluster = id
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{cfg: cfg, ctx: ctx, cancel: cancel, retiring: map[*relayConn]struct{}{}, live: map[*tunnel]struct{}{}}
	rc, err := a.dial()
	if err != nil {
		cancel()
		return nil, err
	}
	a.cur = rc
	go a.monitor(rc)
	if cfg.Creds != nil && cfg.Mode == access.ModeMTLS {
		cfg.Creds.Subscribe(a.credsChanged)
	}
	return a, nil
}

func (a *Agent) dial() (*relayConn, error) {
	a.nextID++
	rc := &relayConn{id: a.nextID}
	var tc credentials.TransportCredentials
	if a.cfg.Mode == access.ModeInsecure {
		tc = insecure.NewCredentials()
	} else {
		tc = cork.Credentials(credentials.NewTLS(creds.ClientTLS(a.cfg.Creds, a.cfg.ServerName, a.cfg.Mode == access.ModeMTLS, a.cfg.TLS)))
		rc.clientSerial = a.cfg.Creds.Current().Serial()
	}
	cc, err := grpc.NewClient(a.cfg.ServerAddr,
		grpc.WithTransportCredentials(tc),
		grpc.WithPerRPCCredentials(&callCreds{a: a}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: a.cfg.KeepaliveTime, Timeout: a.cfg.KeepaliveTimeout, PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: a.cfg.BackoffBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: a.cfg.BackoffMax},
			// Handshakes may take a while on a loaded machine.
			MinConnectTimeout: 10 * time.Second,
		}),
		grpc.WithIdleTimeout(0),
		grpc.WithWriteBufferSize(frame.WriteBufferSize),
		// The tunnel payload pool, which does not clear buffers (see
		// server.New).
		experimental.WithBufferPool(frame.Pool()),
		grpc.WithInitialWindowSize(windowSize),
		grpc.WithInitialConnWindowSize(4*windowSize),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frame.Codec{})),
	)
	if err != nil {
		return nil, fmt.Errorf("relay client for %s: %w", a.cfg.ServerAddr, err)
	}
	rc.cc = cc
	return rc, nil
}

var _ credentials.PerRPCCredentials = (*callCreds)(nil)

// callCreds puts the mode, the cluster and (tls mode) the channel-bound
// proof on every call.
type callCreds struct{ a *Agent }

func (c *callCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	md := map[string]string{frame.MDMode: string(c.a.cfg.Mode), frame.MDCluster: c.a.cfg.Cluster}
	if c.a.cfg.Mode != access.ModeTLS {
		return md, nil
	}
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, errors.New("no connection information for the tunnel proof")
	}
	ti, ok := ri.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, errors.New("the relay connection is not TLS; cannot bind the tunnel proof")
	}
	ekm, err := ti.State.ExportKeyingMaterial(proof.ExporterLabel, nil, proof.ExporterLength)
	if err != nil {
		return nil, fmt.Errorf("deriving the TLS exporter for the tunnel proof: %w", err)
	}
	md[frame.MDProof] = proof.Tunnel(c.a.cfg.Creds.Current().Token, c.a.cfg.Cluster, ekm)
	return md, nil
}

func (c *callCreds) RequireTransportSecurity() bool { return c.a.cfg.Mode != access.ModeInsecure }

// monitor keeps rc connected and authenticated until it is closed.
func (a *Agent) monitor(rc *relayConn) {
	retry := a.backoff()
	for {
		st := rc.cc.GetState()
		switch st {
		case connectivity.Shutdown:
			return
		case connectivity.Idle:
			rc.cc.Connect()
		case connectivity.Ready:
			if !rc.ready.Load() {
				if err := a.hello(rc); err != nil {
					a.report(rc, err)
					select {
					case <-a.ctx.Done():
						return
					case <-time.After(retry.Step()):
					}
					continue
				}
				retry = a.backoff()
				a.connected(rc)
			}
		case connectivity.TransientFailure:
			a.lost(rc)
			// A fail-fast call returns the last connection error: the
			// reason the server refused us, or why the network failed.
			if err := a.hello(rc); err != nil {
				a.report(rc, err)
			}
		default:
			a.lost(rc)
		}
		if !rc.cc.WaitForStateChange(a.ctx, st) {
			return
		}
	}
}

// backoff is the delay between the agent's own retries (a refused hello, a
// tunnel resume): BackoffBase growing 1.6 times to BackoffMax, each wait up
// to 20% longer at random, as gRPC's reconnects on the same settings.
func (a *Agent) backoff() *wait.Backoff {
	return &wait.Backoff{Duration: a.cfg.BackoffBase, Factor: 1.6, Jitter: 0.2, Steps: math.MaxInt32, Cap: a.cfg.BackoffMax}
}

func (a *Agent) lost(rc *relayConn) {
	if rc.ready.Load() {
		a.cfg.Log.Warn("relay connection lost; reconnecting", "conn", rc.id, "server", a.cfg.ServerAddr)
		rc.ready.Store(false)
	}
}

// report logs a connection or authentication failure once per distinct
// cause and counts it.
func (a *Agent) report(rc *relayConn, err error) {
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Message()
	}
	if p := rc.lastErr.Load(); p != nil && *p == msg {
		return
	}
	reason := access.ClassifyHandshake(errors.New(msg))
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		reason = "refused_by_server"
	}
	attrs := []any{"conn", rc.id, "server", a.cfg.ServerAddr, "reason", reason, "error", msg}
	if hint := a.hint(msg); hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	// Logged first: whoever sees the state or the count finds the log.
	a.cfg.Log.Warn("relay connection failed", attrs...)
	rc.lastErr.Store(&msg)
	a.cfg.Metrics.Failures.WithLabelValues(reason).Inc()
}

func (a *Agent) hint(msg string) string {
	if a.cfg.Creds != nil {
		if err := a.cfg.Creds.Valid(time.Now()); err != nil && a.cfg.Mode == access.ModeMTLS {
			return "our client " + err.Error()
		}
	}
	switch {
	case a.cfg.Mode == access.ModeInsecure && (strings.Contains(msg, "preface") || strings.Contains(msg, "EOF")):
		return "the server closed the connection before HTTP/2 began; it may not be running --mode=insecure"
	case a.cfg.Mode != access.ModeInsecure && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the server does not speak TLS; it may be running --mode=insecure"
	case a.cfg.Mode != access.ModeInsecure && strings.Contains(msg, "handshake failed: EOF"):
		return "the server closed the connection during the TLS handshake; it may be running --mode=insecure"
	case strings.Contains(msg, "certificate required"):
		return "the server requires a client certificate; it may be running --mode=mtls"
	}
	return ""
}

// hello authenticates on rc's current transport.
func (a *Agent) hello(rc *relayConn) error {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	s, err := rc.cc.NewStream(ctx, &frame.HelloStreamDesc, frame.HelloMethod)
	if err != nil {
		return err
	}
	if err := s.SendMsg(&frame.Frame{Kind: frame.KindHello}); err != nil {
		return recvErr(s, err)
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	var f frame.Frame
	if err := s.RecvMsg(&f); err != nil {
		return err
	}
	if f.Kind != frame.KindHello {
		return fmt.Errorf("the server answered hello with a %s frame", f.Kind)
	}
	rc.resumable.Store(f.Flags&frame.FlagResumable != 0)
	p, _ := peer.FromContext(s.Context())
	if p == nil {
		return nil
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		serial := ti.State.PeerCertificates[0].SerialNumber.Text(16)
		rc.serverSerial.Store(&serial)
	}
	return nil
}

// recvErr returns the stream's status when a send failed because the
// stream ended.
func recvErr(s grpc.ClientStream, err error) error {
	if errors.Is(err, io.EOF) {
		var f frame.Frame
		if rerr := s.RecvMsg(&f); rerr != nil {
			return rerr
		}
	}
	return err
}

// connected marks rc ready; a pending connection replaces the current one.
func (a *Agent) connected(rc *relayConn) {
	if a.everReady.Swap(true) {
		a.cfg.Metrics.Reconnects.Inc()
	}
	serverSerial := ""
	if p := rc.serverSerial.Load(); p != nil {
		serverSerial = *p
	}
	a.cfg.Log.Info("relay connected", "conn", rc.id, "server", a.cfg.ServerAddr, "cluster", a.cfg.Cluster,
		"server_serial", serverSerial, "client_serial", rc.clientSerial)
	rc.lastErr.Store(nil)
	rc.ready.Store(true)
	a.mu.Lock()
	var old *relayConn
	if a.pending == rc {
		old, a.cur, a.pending = a.cur, rc, nil
	}
	a.mu.Unlock()
	if old != nil {
		a.cfg.Log.Info("new tunnels use the new connection; the old one closes after its last tunnel",
			"new_conn", rc.id, "old_conn", old.id, "old_tunnels", old.active.Load())
		a.moveTunnels(old)
		a.retire(old)
	}
}

// credsChanged starts a new connection when the client certificate changed.
func (a *Agent) credsChanged(_, g *creds.Generation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining.Load() || a.ctx.Err() != nil {
		return
	}
	if a.cur.clientSerial == g.Serial() || (a.pending != nil && a.pending.clientSerial == g.Serial()) {
		return
	}
	rc, err := a.dial()
	if err != nil {
		a.cfg.Log.Error("cannot start a connection with the new client certificate", "error", err.Error())
		return
	}
	if a.pending != nil {
		// Superseded before it was ready.
		go a.closeConn(a.pending)
	}
	a.pending = rc
	a.cfg.Log.Info("client certificate rotated; connecting with it", "conn", rc.id, "client_serial", rc.clientSerial)
	go a.monitor(rc)
}

func (a *Agent) retire(rc *relayConn) {
	a.mu.Lock()
	a.retiring[rc] = struct{}{}
	a.mu.Unlock()
	rc.retired.Store(true)
	if rc.active.Load() == 0 {
		a.closeConn(rc)
	}
}

func (a *Agent) closeConn(rc *relayConn) {
	rc.closeOnce.Do(func() {
		a.cfg.Log.Debug("closing relay connection", "conn", rc.id)
		_ = rc.cc.Close()
		a.mu.Lock()
		delete(a.retiring, rc)
		a.mu.Unlock()
	})
}

// pick returns the connection new tunnels use and counts a tunnel on it.
func (a *Agent) pick() *relayConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	rc := a.cur
	rc.active.Add(1)
	return rc
}

func (a *Agent) release(rc *relayConn) {
	if rc.active.Add(-1) == 0 && rc.retired.Load() {
		a.closeConn(rc)
	}
}

// Status describes the connection new tunnels use.
type Status struct {
	Ready        bool
	ConnID       int
	ServerSerial string
	ClientSerial string
	// Conns is the number of open relay connections (current, pending and
	// those finishing their tunnels).
	Conns int
}

// Status reports the agent's current connection.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Status{Ready: a.cur.ready.Load(), ConnID: a.cur.id, ClientSerial: a.cur.clientSerial, Conns: 1}
	if p := a.cur.serverSerial.Load(); p != nil {
		s.ServerSerial = *p
	}
	if a.pending != nil {
		s.Conns++
	}
	s.Conns += len(a.retiring)
	return s
}

// Ready is nil when the agent has a valid identity and an authenticated
// connection.
func (a *Agent) Ready() error {
	if a.draining.Load() {
		return errors.New("draining")
	}
	if a.cfg.Creds != nil {
		if err := a.cfg.Creds.Valid(time.Now()); err != nil {
			return err
		}
	}
	a.mu.Lock()
	rc := a.cur
	a.mu.Unlock()
	if !rc.ready.Load() {
		if p := rc.lastErr.Load(); p != nil {
			return fmt.Errorf("not connected to %s: %s", a.cfg.ServerAddr, *p)
		}
		return fmt.Errorf("not connected to %s yet", a.cfg.ServerAddr)
	}
	return nil
}

// Serve accepts local connections on lis until Drain or Close.
func (a *Agent) Serve(lis net.Listener) error {
	a.mu.Lock()
	a.lis = append(a.lis, lis)
	a.mu.Unlock()
	for {
		c, err := lis.Accept()
		if err != nil {
			if a.draining.Load() || a.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting local connections: %w", err)
		}
		a.tunnels.Add(1)
		go func() {
			defer a.tunnels.Done()
			a.handle(c)
		}()
	}
}

// Drain stops accepting local connections, waits for tunnels until ctx
// ends, then closes everything.
func (a *Agent) Drain(ctx context.Context) {
	a.draining.Store(true)
	a.mu.Lock()
	for _, l := range a.lis {
		_ = l.Close()
	}
	a.mu.Unlock()
	done := make(chan struct{})
	go func() { a.tunnels.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		a.cfg.Log.Warn("drain deadline reached; closing remaining tunnels")
	}
	a.Close()
}

// Close closes every connection and tunnel at once.
func (a *Agent) Close() {
	a.draining.Store(true)
	a.cancel()
	a.mu.Lock()
	for _, l := range a.lis {
		_ = l.Close()
	}
	conns := []*relayConn{a.cur}
	if a.pending != nil {
		conns = append(conns, a.pending)
	}
	for rc := range a.retiring {
		conns = append(conns, rc)
	}
	a.mu.Unlock()
	for _, rc := range conns {
		a.closeConn(rc)
	}
}
