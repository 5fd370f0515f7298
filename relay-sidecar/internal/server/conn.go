package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/cork"
)

// ConnInfo is the AuthInfo of an accepted agent connection.
type ConnInfo struct {
	credentials.CommonAuthInfo
	// TLS is the connection state (nil in insecure mode).
	TLS *tls.ConnectionState
	// Identity is the verified cluster of an mtls agent.
	Identity   string
	PeerSerial string
	// NotAfter is the agent certificate's expiry (zero without one).
	NotAfter time.Time
	expired  chan struct{}

	streams atomic.Int64
	authed  atomic.Bool
	// conn is the tracked connection, whose auth timer is stopped (and
	// dropped, with its closure) once a stream authenticated.
	conn *trackedConn
}

// authenticated records that a stream of the connection authenticated, so
// that the --auth-timeout close does not apply.
func (c *ConnInfo) authenticated() {
	if c.authed.Swap(true) || c.conn == nil {
		return
	}
	if t := c.conn.authTimer.Swap(nil); t != nil {
		t.Stop()
	}
}

// AuthType names the transport.
func (c *ConnInfo) AuthType() string {
	if c.TLS == nil {
		return "insecure"
	}
	return "tls"
}

// transportCreds wraps the TLS (or h2c) handshake to count and name
// failures, attach a ConnInfo and arm the expiry close.
type transportCreds struct {
	s   *Server
	tls *tls.Config // nil: insecure
}

var _ credentials.TransportCredentials = (*transportCreds)(nil)

func (t *transportCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("the relay server credentials cannot dial")
}

func (t *transportCreds) Info() credentials.ProtocolInfo {
	if t.tls == nil {
		return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
	}
	// The negotiated version is per connection: ConnInfo.TLS has it, and the
	// "agent connected" log names it.
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (t *transportCreds) Clone() credentials.TransportCredentials { c := *t; return &c }

func (t *transportCreds) OverrideServerName(string) error { return nil }

func (t *transportCreds) fail(raw net.Conn, err error) error {
	reason := access.ClassifyHandshake(err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		reason = ReasonHandshakeTimeout
		err = fmt.Errorf("no handshake within the %s --auth-timeout: %w", t.s.cfg.AuthTimeout, err)
	}
	t.s.cfg.Log.Warn("handshake refused", "reason", reason, "error", err.Error(), "remote", raw.RemoteAddr().String())
	t.s.cfg.Metrics.Failures.WithLabelValues(reason).Inc()
	return err
}

func (t *transportCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if t.tls == nil {
		return t.plainHandshake(raw)
	}
	accepted := time.Now()
	_ = raw.SetDeadline(accepted.Add(t.s.cfg.AuthTimeout))
	// Not cloned: tls.Server does not change the config, and a clone per
	// connection stays alive with it (about 1.4 KiB per idle agent).
	// Records of one large write leave in one socket write (cork).
	under := &cork.Raw{Conn: raw}
	conn := tls.Server(under, t.tls)
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return nil, nil, t.fail(raw, err)
	}
	_ = raw.SetDeadline(time.Time{})
	st := conn.ConnectionState()
	info := &ConnInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		TLS:            &st,
		expired:        make(chan struct{}),
	}
	hi := HandshakeInfo{Remote: raw.RemoteAddr()}
	if g := t.s.cfg.Creds.Current(); g != nil {
		hi.ServerSerial = g.Serial()
	}
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		info.PeerSerial = leaf.SerialNumber.Text(16)
		info.NotAfter = leaf.NotAfter
		info.Identity, _ = access.IdentityOf(leaf)
		hi.PeerSerial, hi.Identity = info.PeerSerial, info.Identity
	}
	tc := t.track(cork.New(conn, under), info, accepted)
	t.s.cfg.Log.Debug("agent connected", "remote", raw.RemoteAddr().String(), "tls_version", tls.VersionName(st.Version),
		"identity", info.Identity, "peer_serial", info.PeerSerial, "server_serial", hi.ServerSerial)
	if t.s.cfg.OnHandshake != nil {
		t.s.cfg.OnHandshake(hi)
	}
	return tc, info, nil
}

// plainHandshake is the h2c path. A TLS ClientHello here means the agent
// runs a TLS mode against an insecure server: refused, never downgraded.
func (t *transportCreds) plainHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	accepted := time.Now()
	_ = raw.SetReadDeadline(accepted.Add(t.s.cfg.AuthTimeout))
	br := bufio.NewReader(raw)
	b, err := br.Peek(1)
	if err != nil {
		raw.Close()
		return nil, nil, t.fail(raw, err)
	}
	_ = raw.SetReadDeadline(time.Time{})
	if b[0] == 0x16 { // TLS handshake record
		raw.Close()
		return nil, nil, t.fail(raw, &access.Refusal{Reason: access.ReasonTLSOnInsecure,
			Msg: "the agent started a TLS handshake but this server runs --mode=insecure; refusing instead of downgrading"})
	}
	info := &ConnInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, expired: make(chan struct{})}
	if t.s.cfg.OnHandshake != nil {
		t.s.cfg.OnHandshake(HandshakeInfo{Remote: raw.RemoteAddr()})
	}
	return t.track(&peekedConn{Conn: raw, r: br}, info, accepted), info, nil
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// trackedConn counts the connection, closes it at the peer's expiry and
// closes it when no stream authenticated within the auth timeout.
type trackedConn struct {
	net.Conn
	once sync.Once
	// The timers may fire (and Close) before track stores them.
	timer     atomic.Pointer[time.Timer]
	authTimer atomic.Pointer[time.Timer]
	s         *Server
}

func (t *transportCreds) track(c net.Conn, info *ConnInfo, accepted time.Time) net.Conn {
	s := t.s
	s.cfg.Metrics.Handshakes.Inc()
	s.cfg.Metrics.Connections.Inc()
	tc := &trackedConn{Conn: c, s: s}
	info.conn = tc
	remote := c.RemoteAddr().String()
	tc.authTimer.Store(time.AfterFunc(max(time.Until(accepted.Add(s.cfg.AuthTimeout)), 0), func() {
		if info.authed.Load() {
			return
		}
		s.cfg.Log.Warn("closing a connection that did not authenticate", "reason", ReasonAuthTimeout,
			"timeout", s.cfg.AuthTimeout.String(), "remote", remote)
		s.cfg.Metrics.Failures.WithLabelValues(ReasonAuthTimeout).Inc()
		tc.Close()
	}))
	if !info.NotAfter.IsZero() {
		grace := s.cfg.ExpiryGrace
		wait := time.Until(info.NotAfter) - grace
		tc.timer.Store(time.AfterFunc(max(wait, 0), func() {
			s.cfg.Log.Warn("agent certificate expires; closing its connection",
				"identity", info.Identity, "peer_serial", info.PeerSerial, "not_after", info.NotAfter.UTC().Format(time.RFC3339))
			s.cfg.Metrics.Failures.WithLabelValues(access.ReasonPeerExpired).Inc()
			close(info.expired)
			// Streams are told first; the connection goes at the expiry.
			time.AfterFunc(min(grace, max(time.Until(info.NotAfter), 0)), func() { tc.Close() })
		}))
	}
	return tc
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		for _, t := range []*time.Timer{c.timer.Load(), c.authTimer.Load()} {
			if t != nil {
				t.Stop()
			}
		}
		c.s.cfg.Metrics.Connections.Dec()
	})
	return c.Conn.Close()
}
