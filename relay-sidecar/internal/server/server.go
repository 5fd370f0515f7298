// Package server is the server role of the relay sidecar: it accepts agent
// connections (h2c, TLS or mutual TLS), authenticates each agent, and
// forwards every tunnel to the one configured upstream, optionally behind a
// PROXY protocol v2 header naming the verified cluster. It closes an agent's
// connection no later than the agent certificate's expiry.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/relay-sidecar/internal/resume"
)

// Config configures a Server.
type Config struct {
	Mode access.Mode
	// Upstream is the only address tunnels are forwarded to: host:port, or
	// unix:/path for a unix socket.
	Upstream string
	// ProxyProtocol prepends a PROXY protocol v2 header to each upstream
	// connection, with the verified cluster in TLV ClusterTLV.
	ProxyProtocol bool
	// Creds holds the server certificate, the trust bundle (mtls) and the
	// relay identity token (tls). Nil in insecure mode.
	Creds *creds.Reloader
	TLS   creds.TLSOptions

	// KeepaliveMinTime is the shortest ping interval agents may use; it
	// must not exceed the agents' --keepalive-time, or the server would
	// answer too_many_pings. Default 5s.
	KeepaliveMinTime time.Duration
	// PingInterval and PingTimeout are the server's own keepalive (default
	// 30s and 10s).
	PingInterval, PingTimeout time.Duration
	// DialTimeout bounds the upstream dial (default 10s).
	DialTimeout time.Duration
	// ExpiryGrace is how long before a peer certificate's expiry its
	// streams are told and the connection is closed (default 1s).
	ExpiryGrace time.Duration
	// ResumeWindow is how long a tunnel that lost its stream keeps its
	// upstream connection and buffer for the agent to resume it; zero
	// turns resumable tunnels off.
	ResumeWindow time.Duration
	// ResumeBuffer is the most unacknowledged bytes kept per tunnel and
	// direction (default resume.DefaultLimit).
	ResumeBuffer int

	// TokenScope is how tls-mode tunnel proofs are checked: PerCluster (the
	// default) with the cluster token derived from the root token in Creds,
	// Shared with the root token itself.
	TokenScope proof.Scope
	// Clusters, when set, is the mounted relay-cluster-list: revoked
	// clusters are refused and cut in every mode, and a cluster's token
	// generation enters its derived token.
	Clusters ClusterList
	// MaxStreamsPerConn caps the concurrent streams (tunnels and hellos)
	// of one agent connection (default DefaultMaxStreamsPerConn).
	MaxStreamsPerConn int
	// MaxTunnelsPerCluster caps the tunnels one cluster has open,
	// including those waiting for a resume, over all its connections
	// (default DefaultMaxTunnelsPerCluster).
	MaxTunnelsPerCluster int
	// MaxUnackedPerCluster caps the unacknowledged upstream bytes the
	// server holds for one cluster's resumable tunnels; past it their
	// upstreams are not read (backpressure) until the agent acknowledges
	// (default DefaultMaxUnackedPerCluster).
	MaxUnackedPerCluster int
	// AuthTimeout is how long an accepted connection has to finish its
	// handshake and then to authenticate one stream before it is closed
	// (default DefaultAuthTimeout).
	AuthTimeout time.Duration

	Metrics *metrics.Metrics
	Log     *slog.Logger
	// OnHandshake, if set, observes every accepted connection.
	OnHandshake func(HandshakeInfo)
}

// HandshakeInfo describes an accepted agent connection.
type HandshakeInfo struct {
	// PeerSerial is the agent certificate serial in hex (mtls).
	PeerSerial string
	// Identity is the agent's verified cluster (mtls).
	Identity string
	// ServerSerial is the serial of the certificate this server presented.
	ServerSerial string
	Remote       net.Addr
}

// WindowSize is the HTTP/2 stream flow-control window both roles use.
const WindowSize = 1 << 20

// ReadBufferSize is the gRPC read buffer per agent connection: none, as
// measured by the bench (it was the largest part of an idle connection's
// heap, and reads come from tls.Conn's own record buffer).
const ReadBufferSize = 0

// HeaderTableSize is the HPACK dynamic table the server lets agents use
// for the headers they send it: none.
const HeaderTableSize = 0

// Defaults of the server's bounds.
const (
	DefaultMaxStreamsPerConn    = 512
	DefaultMaxTunnelsPerCluster = 256
	DefaultMaxUnackedPerCluster = 16 << 20
	DefaultAuthTimeout          = 10 * time.Second
)

// Refusal reasons of the server's bounds
// (relay_sidecar_handshake_failures_total{reason}).
const (
	ReasonTooManyStreams   = "too_many_streams"
	ReasonTooManyTunnels   = "too_many_tunnels"
	ReasonAuthTimeout      = "auth_timeout"
	ReasonHandshakeTimeout = "handshake_timeout"
)

// Server is the server role.
type Server struct {
	cfg      Config
	g        *grpc.Server
	draining atomic.Bool
	serving  atomic.Bool
	tunnels  registry
	cuts     cuts
}

var _ frame.Handlers = (*Server)(nil)

// New builds a server. It does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Metrics == nil {
		return nil, errors.New("server: metrics are required")
	}
	if cfg.KeepaliveMinTime <= 0 {
		cfg.KeepaliveMinTime = 5 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.ExpiryGrace <= 0 {
		cfg.ExpiryGrace = time.Second
	}
	if cfg.MaxStreamsPerConn <= 0 {
		cfg.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if cfg.MaxTunnelsPerCluster <= 0 {
		cfg.MaxTunnelsPerCluster = DefaultMaxTunnelsPerCluster
	}
	if cfg.MaxUnackedPerCluster <= 0 {
		cfg.MaxUnackedPerCluster = DefaultMaxUnackedPerCluster
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.Upstream == "" {
		return nil, errors.New("server: an upstream address is required")
	}
	if cfg.Mode != access.ModeInsecure && cfg.Creds == nil {
		return nil, fmt.Errorf("server: mode %s needs credentials", cfg.Mode)
	}
	s := &Server{cfg: cfg}
	tc := &transportCreds{s: s}
	if cfg.Mode != access.ModeInsecure {
		tc.tls = creds.ServerTLS(cfg.Creds, cfg.Mode == access.ModeMTLS, cfg.TLS)
	}
	s.g = grpc.NewServer(
		grpc.Creds(tc),
		grpc.ForceServerCodecV2(frame.Codec{}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.PingInterval, Timeout: cfg.PingTimeout}),
		// Tunnels are bulk byte streams: larger flow-control windows than
		// gRPC's 64 KiB start keep a single tunnel from stalling on acks.
		grpc.InitialWindowSize(WindowSize),
		grpc.InitialConnWindowSize(4*WindowSize),
		// Idle agents cost little: no per-connection read buffer (TLS
		// already buffers a record), and the write buffer is taken from a
		// pool only while there is something to write (gRPC's default shared
		// write buffer, on since grpc-go deprecated the option).
		grpc.ReadBufferSize(ReadBufferSize),
		// gRPC's default 32 KiB write buffer, not the agent's 128 KiB one
		// (frame.WriteBufferSize): a burst of handshakes leaves about one
		// pooled buffer per connection that wrote at once in gRPC's pool,
		// and a reused large buffer is cleared (touched) whole.
		// Agents send few, mostly identical headers: an HPACK dynamic table
		// kept per connection (up to 4 KiB, about 1 KiB once an agent said
		// hello) costs more than the literal headers of a tunnel open.
		grpc.HeaderTableSize(HeaderTableSize),
		// Received HTTP/2 data frames go into the tunnel payload pool,
		// which does not clear the buffers it hands out (gRPC's does:
		// about 3% of the relay's CPU time).
		experimental.BufferPool(frame.Pool()),
		// Streams past the cap are refused by limitStreams with a reason;
		// the transport's own ceiling stops a peer that ignores refusals.
		grpc.StreamInterceptor(s.limitStreams),
		grpc.MaxConcurrentStreams(uint32(2*cfg.MaxStreamsPerConn)),
	)
	s.g.RegisterService(frame.ServiceDesc(s), s)
	if cfg.Clusters != nil {
		go s.enforceRevocations(cfg.Clusters.Subscribe())
	}
	return s, nil
}

// Serve accepts connections on lis until Stop or Drain.
func (s *Server) Serve(lis net.Listener) error {
	s.serving.Store(true)
	defer s.serving.Store(false)
	return s.g.Serve(lis)
}

// Ready reports whether the server can accept agents.
func (s *Server) Ready() error {
	switch {
	case s.draining.Load():
		return errors.New("draining")
	case !s.serving.Load():
		return errors.New("not serving yet")
	}
	if s.cfg.Creds != nil {
		return s.cfg.Creds.Valid(time.Now())
	}
	return nil
}

// Drain stops accepting, lets tunnels finish until ctx ends, then closes
// whatever is left.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	done := make(chan struct{})
	go func() { s.g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cfg.Log.Warn("drain deadline reached; closing remaining tunnels")
		s.g.Stop()
		<-done
	}
	s.closeTunnels("the server sidecar stopped")
}

// Stop closes everything at once.
func (s *Server) Stop() {
	s.g.Stop()
	s.closeTunnels("the server sidecar stopped")
}

func (s *Server) refuse(ctx context.Context, err error) error {
	reason := access.ReasonOf(err)
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	// Logged before it is counted, so whoever sees the count finds the log.
	s.cfg.Log.Warn("refused agent", "reason", reason, "error", err.Error(), "remote", remote)
	s.cfg.Metrics.Failures.WithLabelValues(reason).Inc()
	code := codes.Unauthenticated
	if reason == access.ReasonModeMismatch || reason == access.ReasonClusterMismatch {
		code = codes.PermissionDenied
	}
	return status.Error(code, err.Error())
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// authenticate checks the agent behind a stream and returns its cluster.
func (s *Server) authenticate(ctx context.Context) (string, *ConnInfo, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", nil, status.Error(codes.Internal, "no peer on stream")
	}
	info, ok := p.AuthInfo.(*ConnInfo)
	if !ok {
		return "", nil, status.Error(codes.Internal, "unexpected connection type")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if err := access.CheckMode(s.cfg.Mode, first(md, frame.MDMode)); err != nil {
		return "", nil, s.refuse(ctx, err)
	}
	cluster := first(md, frame.MDCluster)
	switch s.cfg.Mode {
	case access.ModeInsecure:
		if err := access.CheckCluster(cluster); err != nil {
			return "", nil, s.refuse(ctx, err)
		}
	case access.ModeTLS:
		if err := access.CheckCluster(cluster); err != nil {
			return "", nil, s.refuse(ctx, err)
		}
		ekm, err := info.TLS.ExportKeyingMaterial(proof.ExporterLabel, nil, proof.ExporterLength)
		if err != nil {
			return "", nil, s.refuse(ctx, &access.Refusal{Reason: access.ReasonTLS, Msg: "cannot derive the TLS exporter for the tunnel proof: " + err.Error()})
		}
		gen, err := s.checkListed(cluster)
		if err != nil {
			return "", nil, s.refuse(ctx, err)
		}
		keys, err := s.tunnelKeys(cluster, gen)
		if err != nil {
			return "", nil, s.refuse(ctx, &access.Refusal{Reason: access.ReasonNoMaterial, Msg: "cannot derive the cluster token: " + err.Error()})
		}
		if err := access.CheckTunnelProof(keys, s.cfg.TokenScope, s.cfg.Creds.Current().VerifyTokens(), cluster, gen, ekm, first(md, frame.MDProof)); err != nil {
			return "", nil, s.refuse(ctx, err)
		}
	case access.ModeMTLS:
		if cluster != "" && cluster != info.Identity {
			return "", nil, s.refuse(ctx, &access.Refusal{Reason: access.ReasonClusterMismatch,
				Msg: fmt.Sprintf("the agent says it is cluster %q but its certificate names %q", cluster, info.Identity)})
		}
		cluster = info.Identity
	}
	if _, err := s.checkListed(cluster); err != nil {
		return "", nil, s.refuse(ctx, err)
	}
	return cluster, info, nil
}

// limitStreams refuses a stream past --max-streams-per-connection.
func (s *Server) limitStreams(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	p, ok := peer.FromContext(ss.Context())
	if !ok {
		return h(srv, ss)
	}
	info, ok := p.AuthInfo.(*ConnInfo)
	if !ok {
		return h(srv, ss)
	}
	n := info.streams.Add(1)
	defer info.streams.Add(-1)
	if n > int64(s.cfg.MaxStreamsPerConn) {
		return s.overLimit(ss.Context(), codes.ResourceExhausted, ReasonTooManyStreams,
			"this connection already has %d streams, the --max-streams-per-connection cap", s.cfg.MaxStreamsPerConn)
	}
	return h(srv, ss)
}

// overLimit logs, counts and returns the refusal of a stream past a bound.
func (s *Server) overLimit(ctx context.Context, code codes.Code, reason, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	s.cfg.Log.Warn("refused stream", "reason", reason, "error", msg, "remote", remote)
	s.cfg.Metrics.Failures.WithLabelValues(reason).Inc()
	return status.Error(code, msg+" ("+reason+")")
}

// admitTunnel counts a new tunnel of cluster against
// --max-tunnels-per-cluster and returns the cluster's budget of
// unacknowledged bytes; release uncounts it.
func (s *Server) admitTunnel(ctx context.Context, cluster string) (*resume.Budget, error) {
	b, n, ok := s.tunnels.admit(cluster, s.cfg.MaxTunnelsPerCluster, s.cfg.MaxUnackedPerCluster)
	if !ok {
		s.cfg.Metrics.Tunnels.WithLabelValues("refused").Inc()
		return nil, s.overLimit(ctx, codes.ResourceExhausted, ReasonTooManyTunnels,
			"cluster %q already has %d tunnels open, the --max-tunnels-per-cluster cap", cluster, n)
	}
	return b, nil
}

// Hello answers an agent's authentication check with the identity the
// server verified.
func (s *Server) Hello(stream grpc.ServerStream) error {
	cluster, info, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	info.authenticated()
	var f frame.Frame
	if err := stream.RecvMsg(&f); err != nil {
		return err
	}
	if f.Kind != frame.KindHello {
		return status.Errorf(codes.InvalidArgument, "expected a hello frame, got %s", f.Kind)
	}
	reply := &frame.Frame{Kind: frame.KindHello, Reason: cluster}
	if s.cfg.ResumeWindow > 0 {
		// The agent may then send a resumable tunnel's first bytes with
		// its open, without waiting for the answer.
		reply.Flags = frame.FlagResumable
	}
	return stream.SendMsg(reply)
}

// Tunnel carries one agent connection to the upstream.
func (s *Server) Tunnel(stream grpc.ServerStream) error {
	ctx := stream.Context()
	cluster, info, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	info.authenticated()
	var f frame.Frame
	if err := stream.RecvMsg(&f); err != nil {
		return err
	}
	if f.Kind == frame.KindResume {
		return s.resume(stream, cluster, info, &f)
	}
	if f.Kind != frame.KindOpen {
		return status.Errorf(codes.InvalidArgument, "a tunnel must start with an open or resume frame, got %s", f.Kind)
	}
	ctx, release := s.cuts.track(ctx, cluster)
	defer release()
	budget, err := s.admitTunnel(ctx, cluster)
	if err != nil {
		return err
	}
	if f.Flags&frame.FlagResumable != 0 && s.cfg.ResumeWindow > 0 {
		return s.openResumable(ctx, stream, cluster, info, budget)
	}
	defer s.tunnels.leave(cluster)
	up, err := s.dialUpstream(ctx, stream, cluster)
	if err != nil {
		s.cfg.Metrics.Tunnels.WithLabelValues("upstream_error").Inc()
		s.cfg.Log.Warn("upstream unavailable", "upstream", s.cfg.Upstream, "cluster", cluster, "error", err.Error())
		return status.Errorf(codes.Unavailable, "connecting to the upstream: %v", err)
	}
	defer up.Close()
	if err := stream.SendMsg(&frame.Frame{Kind: frame.KindOpen}); err != nil {
		return err
	}
	s.cfg.Metrics.ActiveTunnels.Inc()
	defer s.cfg.Metrics.ActiveTunnels.Dec()
	err = s.pump(ctx, stream, up, info)
	result := "ok"
	if err != nil {
		result = "error"
		if status.Code(err) == codes.Unauthenticated {
			result = "peer_expired"
		}
	}
	s.cfg.Metrics.Tunnels.WithLabelValues(result).Inc()
	return err
}

func (s *Server) dialUpstream(ctx context.Context, stream grpc.ServerStream, cluster string) (net.Conn, error) {
	network, addr := "tcp", s.cfg.Upstream
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", rest
	}
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	up, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if s.cfg.ProxyProtocol {
		var src net.Addr
		if p, ok := peer.FromContext(stream.Context()); ok {
			src = p.Addr
		}
		if err := writeProxyHeader(up, src, cluster); err != nil {
			up.Close()
			return nil, fmt.Errorf("writing the PROXY protocol header: %w", err)
		}
	}
	return up, nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// pump copies both ways until both directions end, the agent certificate
// expires or the stream ends.
func (s *Server) pump(ctx context.Context, stream grpc.ServerStream, up net.Conn, info *ConnInfo) error {
	errc := make(chan error, 2)
	go func() {
		for {
			var f frame.Frame
			err := stream.RecvMsg(&f)
			if errors.Is(err, io.EOF) {
				closeWrite(up)
				errc <- nil
				return
			}
			if err != nil {
				errc <- err
				return
			}
			switch f.Kind {
			case frame.KindData:
				_, err := up.Write(f.Payload)
				f.Release()
				if err != nil {
					errc <- status.Errorf(codes.Unavailable, "writing to the upstream: %v", err)
					return
				}
			case frame.KindClose:
				closeWrite(up)
			default:
				errc <- status.Errorf(codes.InvalidArgument, "unexpected %s frame in a tunnel", f.Kind)
				return
			}
		}
	}()
	go func() {
		var rd frame.Reader
		for {
			// The pooled buffer goes to gRPC without a copy.
			b, err := rd.Read(up, frame.MaxPayload)
			if b != nil {
				if serr := stream.SendMsg(&frame.Frame{Kind: frame.KindData, Data: b}); serr != nil {
					errc <- serr
					return
				}
			}
			if errors.Is(err, io.EOF) {
				errc <- stream.SendMsg(&frame.Frame{Kind: frame.KindClose, Reason: "upstream closed"})
				return
			}
			if err != nil {
				errc <- status.Errorf(codes.Unavailable, "reading from the upstream: %v", err)
				return
			}
		}
	}()
	for done := 0; done < 2; {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			done++
		case <-info.expired:
			return status.Errorf(codes.Unauthenticated, "the agent certificate (serial %s) expires at %s; the server closes its connection",
				info.PeerSerial, info.NotAfter.UTC().Format(time.RFC3339))
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}
