// Package bench measures the relay sidecar against direct TLS on loopback:
// throughput of one and of many streams, small round-trip latency and the
// time to open a tunnel on a warm connection. Both paths end at the same
// upstream logic, so the only difference is the transport in between.
package bench

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/testpki"
)

// Upstream protocol: the first byte picks the behaviour.
const (
	// OpSink reads until EOF, then writes the byte count (8 bytes).
	OpSink = 'S'
	// OpEcho echoes every byte back.
	OpEcho = 'E'
	// OpCount reads an 8-byte count, then that many bytes, then writes the
	// count back: a sink for proxies that do not carry a half-close.
	OpCount = 'N'
)

// ServeUpstream handles one upstream connection.
func ServeUpstream(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	op, err := br.ReadByte()
	if err != nil {
		return
	}
	switch op {
	case OpSink:
		n, _ := io.Copy(io.Discard, br)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		_, _ = c.Write(b[:])
	case OpCount:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return
		}
		want := int64(binary.BigEndian.Uint64(b[:]))
		n, _ := io.CopyN(io.Discard, br, want)
		binary.BigEndian.PutUint64(b[:], uint64(n))
		_, _ = c.Write(b[:])
	case OpEcho:
		buf := make([]byte, 32<<10)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

func serve(lis net.Listener, wrap func(net.Conn) net.Conn) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go ServeUpstream(wrap(c))
	}
}

// Material is a CA with a server and a client certificate on disk in
// kubelet layout.
type Material struct {
	CA                  *testpki.CA
	Server, Client      *testpki.Issued
	ServerDir, AgentDir string // hold tls/, ca/
}

// ServerName is the name in the server certificate.
const ServerName = "relay.bench"

// Cluster is the client certificate's cluster.
const Cluster = "bench-cluster"

// NewMaterial writes fresh material under dir.
func NewMaterial(dir string) (*Material, error) {
	ca, err := testpki.NewCA("bench root", 48*time.Hour)
	if err != nil {
		return nil, err
	}
	srv, err := ca.Issue(testpki.Leaf{DNSNames: []string{ServerName}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, err
	}
	cli, err := ca.Issue(testpki.Leaf{DNSNames: []string{Cluster}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, err
	}
	m := &Material{CA: ca, Server: srv, Client: cli, ServerDir: filepath.Join(dir, "server"), AgentDir: filepath.Join(dir, "agent")}
	for _, x := range []struct {
		dir  string
		leaf *testpki.Issued
	}{{m.ServerDir, srv}, {m.AgentDir, cli}} {
		d, err := kubeletdir.New(filepath.Join(x.dir, "tls"))
		if err != nil {
			return nil, err
		}
		if err := d.Write(map[string][]byte{"tls.crt": x.leaf.CertPEM, "tls.key": x.leaf.KeyPEM}); err != nil {
			return nil, err
		}
		b, err := kubeletdir.New(filepath.Join(x.dir, "ca"))
		if err != nil {
			return nil, err
		}
		if err := b.Write(map[string][]byte{"ca.crt": ca.PEM}); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Sources returns the creds sources of one side's directory.
func Sources(dir string) creds.Sources {
	return creds.Sources{CertDir: filepath.Join(dir, "tls"), BundleFile: filepath.Join(dir, "ca", "ca.crt")}
}

// Setup is both paths, ready to dial.
type Setup struct {
	M *Material
	// DirectAddr is a TLS (mutual) server running the upstream logic.
	DirectAddr string
	// AgentLocal is the agent sidecar's local listener; behind it the
	// server sidecar forwards to a plain upstream. Resume is off on this
	// pair (the baseline).
	AgentLocal string
	// ResumeLocal is the same through a second pair of sidecars with
	// resumable tunnels on.
	ResumeLocal string
	ClientTLS   *tls.Config

	closers []func()
}

// NewSetup starts the direct TLS server, the upstream, and both sidecars
// (mtls) in this process.
func NewSetup(dir string) (*Setup, error) {
	m, err := NewMaterial(dir)
	if err != nil {
		return nil, err
	}
	s := &Setup{M: m}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	srvPair, _ := tls.X509KeyPair(m.Server.CertPEM, m.Server.KeyPEM)
	cliPair, _ := tls.X509KeyPair(m.Client.CertPEM, m.Client.KeyPEM)
	pool := x509.NewCertPool()
	pool.AddCert(m.CA.Cert)
	direct := &tls.Config{Certificates: []tls.Certificate{srvPair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
	s.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cliPair}, RootCAs: pool, ServerName: ServerName, MinVersion: tls.VersionTLS13}

	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { dl.Close() })
	go serve(dl, func(c net.Conn) net.Conn { return tls.Server(c, direct) })
	s.DirectAddr = dl.Addr().String()

	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { ul.Close() })
	go serve(ul, func(c net.Conn) net.Conn { return c })

	for _, window := range []time.Duration{0, 30 * time.Second} {
		local, err := s.startPair(ul.Addr().String(), window, quiet)
		if err != nil {
			s.Close()
			return nil, err
		}
		if window == 0 {
			s.AgentLocal = local
		} else {
			s.ResumeLocal = local
		}
	}
	return s, nil
}

// startPair starts a server and an agent sidecar (mtls) with the given
// resume window (0: resume off) and returns the agent's local address.
func (s *Setup) startPair(upstream string, window time.Duration, quiet *slog.Logger) (string, error) {
	m := s.M
	srvCreds, err := creds.NewReloader(Sources(m.ServerDir), creds.Expect{Role: creds.RoleServer}, creds.Options{Log: quiet})
	if err != nil {
		return "", err
	}
	srv, err := server.New(server.Config{Mode: access.ModeMTLS, Upstream: upstream, Creds: srvCreds,
		ResumeWindow: window, Metrics: metrics.New("server", nil), Log: quiet})
	if err != nil {
		return "", err
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go srv.Serve(sl)
	s.closers = append(s.closers, srv.Stop)

	agCreds, err := creds.NewReloader(Sources(m.AgentDir), creds.Expect{Role: creds.RoleAgent}, creds.Options{Log: quiet})
	if err != nil {
		return "", err
	}
	ag, err := agent.New(agent.Config{Mode: access.ModeMTLS, ServerAddr: sl.Addr().String(), ServerName: ServerName,
		Creds: agCreds, ResumeWindow: window, Metrics: metrics.New("agent", nil), Log: quiet})
	if err != nil {
		return "", err
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go ag.Serve(al)
	s.closers = append(s.closers, ag.Close)
	deadline := time.Now().Add(20 * time.Second)
	for ag.Ready() != nil {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("agent sidecar not ready: %v", ag.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return al.Addr().String(), nil
}

// Close stops everything.
func (s *Setup) Close() {
	for _, c := range slices.Backward(s.closers) {
		c()
	}
}

// Dialer opens a connection to the upstream through one path.
type Dialer func() (net.Conn, error)

// Direct dials the TLS server and completes the handshake.
func (s *Setup) Direct() (net.Conn, error) {
	c, err := tls.Dial("tcp", s.DirectAddr, s.ClientTLS)
	if err != nil {
		return nil, err
	}
	return c, c.Handshake()
}

// Sidecar dials the agent sidecar's local listener (resume off).
func (s *Setup) Sidecar() (net.Conn, error) { return net.Dial("tcp", s.AgentLocal) }

// Resumable dials the local listener of the sidecars with resume on.
func (s *Setup) Resumable() (net.Conn, error) { return net.Dial("tcp", s.ResumeLocal) }

// Throughput sends bytesPer bytes on each of streams connections at once and
// returns the total rate in bytes per second.
func Throughput(dial Dialer, streams int, bytesPer int64) (float64, error) {
	conns := make([]net.Conn, streams)
	for i := range conns {
		c, err := dial()
		if err != nil {
			return 0, err
		}
		defer c.Close()
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make([]error, streams)
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sink(c, bytesPer)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(bytesPer*int64(streams)) / elapsed.Seconds(), nil
}

// sink sends n counted bytes (OpCount: no half-close needed, as some
// proxies close both directions when one ends) and waits for the count.
func sink(c net.Conn, n int64) error {
	buf := make([]byte, 32<<10)
	buf[0] = OpCount
	binary.BigEndian.PutUint64(buf[1:9], uint64(n))
	if _, err := c.Write(buf[:9]); err != nil {
		return err
	}
	for left := n; left > 0; {
		k := min(int64(len(buf)), left)
		if _, err := c.Write(buf[:k]); err != nil {
			return err
		}
		left -= k
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("reading the sink's count: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(b[:])); got != n {
		return fmt.Errorf("sink counted %d bytes, sent %d", got, n)
	}
	return nil
}

// Latency measures n round trips of size bytes on one connection and
// returns the 50th and 99th percentiles.
func Latency(dial Dialer, n, size int) (p50, p99 time.Duration, err error) {
	c, err := dial()
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{OpEcho}); err != nil {
		return 0, 0, err
	}
	out, in := make([]byte, size), make([]byte, size)
	d := make([]time.Duration, 0, n)
	for i := range n + n/10 {
		start := time.Now()
		if _, err := c.Write(out); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, in); err != nil {
			return 0, 0, err
		}
		if i >= n/10 { // warm-up excluded
			d = append(d, time.Since(start))
		}
	}
	return percentile(d, 50), percentile(d, 99), nil
}

// OpenTime measures n times how long it takes from dialling to the first
// echoed byte, and returns the median.
func OpenTime(dial Dialer, n int) (time.Duration, error) {
	d := make([]time.Duration, 0, n)
	b := []byte{OpEcho, 'x'}
	for range n {
		start := time.Now()
		c, err := dial()
		if err != nil {
			return 0, err
		}
		if _, err := c.Write(b); err != nil {
			c.Close()
			return 0, err
		}
		if _, err := io.ReadFull(c, b[1:]); err != nil {
			c.Close()
			return 0, err
		}
		d = append(d, time.Since(start))
		c.Close()
	}
	return percentile(d, 50), nil
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i]
}

// RSS returns the resident set size of process pid in bytes (Linux).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range splitLines(string(b)) {
		var kb int64
		if n, _ := fmt.Sscanf(line, "VmRSS: %d kB", &kb); n == 1 {
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
