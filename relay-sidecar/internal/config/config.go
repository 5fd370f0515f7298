// Package config defines the relay-sidecar command-line flags and checks
// them as a whole: required flags per role and mode, flags that only make
// sense for the other role or another mode, and unsafe listen addresses.
// Every refusal names the flags involved.
package config

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/proof"
)

// Config is the parsed command line.
type Config struct {
	Role string
	Mode access.Mode

	Listen       string
	HealthListen string

	// Server role.
	Upstream           string
	ProxyProtocol      bool
	KeepaliveMinTime   time.Duration
	ServerPingInterval time.Duration
	// Bounds (server role).
	MaxStreamsPerConn    int
	MaxTunnelsPerCluster int
	MaxUnackedPerCluster int
	AuthTimeout          time.Duration

	// TokenScope (server, tls) is per-cluster or shared; ClusterList
	// (server) is the mounted relay-cluster-list file.
	TokenScope  string
	ClusterList string

	// Agent role.
	ServerAddr             string
	ServerName             string
	Cluster                string
	AllowNonLoopbackListen bool
	KeepaliveTime          time.Duration
	KeepaliveTimeout       time.Duration
	ReconnectMaxDelay      time.Duration

	// Credentials.
	CertDir     string
	TrustBundle string
	TokenFile   string
	ReloadPoll  time.Duration
	TLSMin      string

	// Resumable tunnels (both roles).
	Resume       bool
	ResumeWindow time.Duration
	ResumeBuffer int

	DrainTimeout time.Duration
	LogLevel     string
	LogFormat    string

	set  map[string]bool
	mode string
}

// Register defines the flags on fs.
func Register(fs *flag.FlagSet) *Config {
	c := &Config{}
	fs.StringVar(&c.Role, "role", "", "server or agent (required)")
	fs.StringVar(&c.mode, "mode", "", "insecure, tls or mtls (required, the same on both sides)")
	fs.StringVar(&c.Listen, "listen", "", "server: relay listen address (host:port); agent: local listen address (host:port or unix:/path)")
	fs.StringVar(&c.HealthListen, "health-listen", "127.0.0.1:9090", "address for /livez, /readyz and /metrics (must differ from --listen)")
	fs.StringVar(&c.Upstream, "upstream", "", "server: the only address tunnels are forwarded to (host:port or unix:/path)")
	fs.BoolVar(&c.ProxyProtocol, "proxy-protocol", false, "server: prepend a PROXY protocol v2 header naming the verified cluster")
	fs.DurationVar(&c.KeepaliveMinTime, "keepalive-min-time", 5*time.Second, "server: shortest ping interval agents may use (keep it at or below the agents' --keepalive-time)")
	fs.DurationVar(&c.ServerPingInterval, "server-ping-interval", 30*time.Second, "server: ping idle agents this often")
	fs.IntVar(&c.MaxStreamsPerConn, "max-streams-per-connection", 512, "server: most concurrent streams (tunnels and hellos) on one agent connection; more are refused with reason too_many_streams")
	fs.IntVar(&c.MaxTunnelsPerCluster, "max-tunnels-per-cluster", 256, "server: most open tunnels of one cluster over all its connections, counting those waiting for a resume; more are refused with reason too_many_tunnels")
	fs.IntVar(&c.MaxUnackedPerCluster, "max-unacked-bytes-per-cluster", 16<<20, "server: most unacknowledged bytes held for one cluster's resumable tunnels together; past it their upstreams are not read until the agent acknowledges (each tunnel keeps a 64 KiB reserve)")
	fs.DurationVar(&c.AuthTimeout, "auth-timeout", 10*time.Second, "server: a connection must finish its handshake within this time, and then authenticate a stream within this time of being accepted, or it is closed")
	fs.StringVar(&c.TokenScope, "token-scope", "per-cluster", "server, mode tls: per-cluster (each agent proves itself with its own cluster token, derived from the root token in --token-file) or shared (every agent holds the root token; any holder can claim any cluster)")
	fs.StringVar(&c.ClusterList, "cluster-list", "", "server: the mounted relay-cluster-list file (clusters.json); revoked clusters are refused and cut within one --reload-poll-interval, in every mode, and token generations enter the cluster tokens")
	fs.StringVar(&c.ServerAddr, "server-addr", "", "agent: server sidecar address (host:port)")
	fs.StringVar(&c.ServerName, "server-name", "", "agent: name the server certificate must carry (default: host of --server-addr); server: name its own certificate must carry")
	fs.StringVar(&c.Cluster, "cluster", "", "agent: this cluster's name (insecure and tls; in mtls the certificate's DNS SAN, which it must match if given)")
	fs.BoolVar(&c.AllowNonLoopbackListen, "allow-non-loopback-listen", false, "agent: allow --listen on an address other than loopback")
	fs.DurationVar(&c.KeepaliveTime, "keepalive-time", 30*time.Second, "agent: ping the server after this much silence (minimum 10s)")
	fs.DurationVar(&c.KeepaliveTimeout, "keepalive-timeout", 10*time.Second, "agent: drop the connection when a ping is not answered in this time")
	fs.DurationVar(&c.ReconnectMaxDelay, "reconnect-max-delay", 30*time.Second, "agent: longest delay between reconnect attempts")
	fs.StringVar(&c.CertDir, "cert-dir", "", "directory holding tls.crt and tls.key (a Secret mount)")
	fs.StringVar(&c.TrustBundle, "trust-bundle", "", "PEM file of trusted CA certificates (e.g. a mounted ca.crt)")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the relay identity token (mode tls)")
	fs.DurationVar(&c.ReloadPoll, "reload-poll-interval", 10*time.Second, "re-read the credentials this often besides watching them")
	fs.StringVar(&c.TLSMin, "tls-min-version", "1.3", "1.3, or 1.2 (AEAD cipher suites only)")
	fs.BoolVar(&c.Resume, "resume", true, "resumable tunnels: a tunnel survives rotation, the server's expiry close and network cuts by resuming on a new connection (both sides must allow it; --resume=false is the baseline)")
	fs.DurationVar(&c.ResumeWindow, "resume-window", 30*time.Second, "server: how long a tunnel that lost its stream keeps its upstream connection and buffer for a resume; agent: how long it keeps trying to resume")
	fs.IntVar(&c.ResumeBuffer, "resume-buffer", 1<<20, "most unacknowledged bytes kept per tunnel and direction for a resume; a peer that does not acknowledge gets backpressure")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 20*time.Second, "on SIGTERM, wait this long for tunnels to finish")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or text")
	return c
}

// Finish records which flags were set and validates the whole.
func (c *Config) Finish(fs *flag.FlagSet) error {
	c.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return c.Validate()
}

// Window is the resume window handed to the roles: zero when resuming is
// off.
func (c *Config) Window() time.Duration {
	if !c.Resume {
		return 0
	}
	return c.ResumeWindow
}

// Scope is the parsed --token-scope.
func (c *Config) Scope() proof.Scope {
	sc, _ := proof.ParseScope(c.TokenScope)
	return sc
}

// TLSVersion is the parsed --tls-min-version.
func (c *Config) TLSVersion() uint16 {
	if c.TLSMin == "1.2" {
		return tls.VersionTLS12
	}
	return tls.VersionTLS13
}

var (
	serverOnly = []string{"upstream", "proxy-protocol", "keepalive-min-time", "server-ping-interval",
		"max-streams-per-connection", "max-tunnels-per-cluster", "max-unacked-bytes-per-cluster", "auth-timeout", "token-scope", "cluster-list"}
	agentOnly = []string{"server-addr", "cluster", "allow-non-loopback-listen", "keepalive-time", "keepalive-timeout", "reconnect-max-delay"}
)

// problems collects every refusal of a config, in the order found.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// Validate checks the configuration: role and mode first (nothing else can
// be judged without them), then every other refusal at once.
func (c *Config) Validate() error {
	if err := c.roleAndMode(); err != nil {
		return err
	}
	var p problems
	c.checkCommon(&p)
	c.checkMaterial(&p)
	if c.Role == "server" {
		c.checkServer(&p)
	} else {
		c.checkAgent(&p)
	}
	return errors.Join(p...)
}

// roleAndMode checks --role and parses --mode into c.Mode.
func (c *Config) roleAndMode() error {
	switch c.Role {
	case "server", "agent":
	case "":
		return errors.New("--role is required (server or agent)")
	default:
		return fmt.Errorf("--role=%q is not server or agent", c.Role)
	}
	if c.mode == "" && c.Mode != "" {
		c.mode = string(c.Mode)
	}
	if c.mode == "" {
		return errors.New("--mode is required (insecure, tls or mtls) and must be the same on both sides")
	}
	m, err := access.ParseMode(c.mode)
	if err != nil {
		return err
	}
	c.Mode = m
	return nil
}

// checkCommon checks the flags of both roles: the other role's flags,
// the listen addresses, TLS version, reload, drain and resume.
func (c *Config) checkCommon(p *problems) {
	other, otherRole := agentOnly, "agent"
	if c.Role == "agent" {
		other, otherRole = serverOnly, "server"
	}
	for _, f := range other {
		if c.set[f] {
			p.add("--%s is only for --role=%s and conflicts with --role=%s", f, otherRole, c.Role)
		}
	}
	if c.Listen == "" {
		p.add("--listen is required")
	}
	if c.HealthListen == "" {
		p.add("--health-listen must not be empty")
	} else if c.HealthListen == c.Listen {
		p.add("--health-listen and --listen are both %s; the probes need their own address", c.Listen)
	}
	switch c.TLSMin {
	case "1.3", "1.2":
	default:
		p.add("--tls-min-version=%q is not 1.3 or 1.2", c.TLSMin)
	}
	if c.ReloadPoll <= 0 {
		p.add("--reload-poll-interval must be positive")
	}
	if c.DrainTimeout < 0 {
		p.add("--drain-timeout must not be negative")
	}
	if !c.Resume {
		for _, f := range []string{"resume-window", "resume-buffer"} {
			if c.set[f] {
				p.add("--%s conflicts with --resume=false", f)
			}
		}
	} else {
		if c.ResumeWindow <= 0 {
			p.add("--resume-window must be positive (use --resume=false to turn resuming off)")
		}
		if c.ResumeBuffer < 64<<10 {
			p.add("--resume-buffer=%d is below 65536 bytes", c.ResumeBuffer)
		}
	}
}

// checkMaterial checks the credential flags and the token scope against
// what the mode and role use.
func (c *Config) checkMaterial(p *problems) {
	m := c.Mode
	need := map[string]bool{}
	switch {
	case m == access.ModeTLS && c.Role == "server":
		need = map[string]bool{"cert-dir": true, "token-file": true, "trust-bundle": false}
	case m == access.ModeTLS && c.Role == "agent":
		need = map[string]bool{"trust-bundle": true, "token-file": true}
	case m == access.ModeMTLS:
		need = map[string]bool{"cert-dir": true, "trust-bundle": true}
	}
	values := map[string]string{"cert-dir": c.CertDir, "trust-bundle": c.TrustBundle, "token-file": c.TokenFile}
	for _, f := range []string{"cert-dir", "trust-bundle", "token-file"} {
		required, allowed := need[f]
		switch {
		case !allowed && values[f] != "":
			p.add("--%s conflicts with --mode=%s --role=%s, which does not use it", f, m, c.Role)
		case required && values[f] == "":
			p.add("--%s is required with --mode=%s --role=%s", f, m, c.Role)
		}
	}
	if _, err := proof.ParseScope(c.TokenScope); err != nil {
		p.add("--token-scope=%q is not per-cluster or shared", c.TokenScope)
	} else if c.set["token-scope"] && m != access.ModeTLS {
		p.add("--token-scope conflicts with --mode=%s: only mode tls checks tokens on the relay", m)
	}
	for _, f := range []string{"tls-min-version", "server-name"} {
		if m == access.ModeInsecure && c.set[f] {
			p.add("--%s conflicts with --mode=insecure", f)
		}
	}
}

// checkServer checks the server role's upstream and bounds.
func (c *Config) checkServer(p *problems) {
	if c.Upstream == "" {
		p.add("--upstream is required with --role=server")
	} else if err := checkAddr(c.Upstream, true); err != nil {
		p.add("--upstream: %v", err)
	}
	if c.KeepaliveMinTime <= 0 {
		p.add("--keepalive-min-time must be positive")
	}
	if c.MaxStreamsPerConn < 2 {
		p.add("--max-streams-per-connection=%d is below 2 (an agent needs a hello and a tunnel)", c.MaxStreamsPerConn)
	}
	if c.MaxTunnelsPerCluster < 1 {
		p.add("--max-tunnels-per-cluster=%d must be at least 1", c.MaxTunnelsPerCluster)
	}
	if c.Resume && c.MaxUnackedPerCluster < c.ResumeBuffer {
		p.add("--max-unacked-bytes-per-cluster=%d is below --resume-buffer=%d; one tunnel could not fill its own buffer", c.MaxUnackedPerCluster, c.ResumeBuffer)
	}
	if c.AuthTimeout < 100*time.Millisecond {
		p.add("--auth-timeout=%s is below 100ms", c.AuthTimeout)
	}
}

// checkAgent checks the agent role's server address (and defaults
// --server-name from it), cluster, listen address and keepalives.
func (c *Config) checkAgent(p *problems) {
	m := c.Mode
	if c.ServerAddr == "" {
		p.add("--server-addr is required with --role=agent")
	} else if _, _, err := net.SplitHostPort(c.ServerAddr); err != nil {
		p.add("--server-addr=%q: %v", c.ServerAddr, err)
	} else if c.ServerName == "" && m != access.ModeInsecure {
		c.ServerName, _, _ = net.SplitHostPort(c.ServerAddr)
	}
	if m != access.ModeMTLS || c.Cluster != "" {
		if err := proof.ValidateCluster(c.Cluster); err != nil {
			p.add("--cluster: %v", err)
		}
	}
	if c.Listen != "" {
		if err := checkAddr(c.Listen, true); err != nil {
			p.add("--listen: %v", err)
		} else if !c.AllowNonLoopbackListen && !isLoopbackOrUnix(c.Listen) {
			p.add("--listen=%s is not a loopback address or unix socket; pass --allow-non-loopback-listen to expose local tunnels to the network", c.Listen)
		}
	}
	if c.KeepaliveTime < 10*time.Second {
		p.add("--keepalive-time=%s is below gRPC's 10s minimum", c.KeepaliveTime)
	}
	if c.KeepaliveTimeout <= 0 {
		p.add("--keepalive-timeout must be positive")
	}
	if c.ReconnectMaxDelay <= 0 {
		p.add("--reconnect-max-delay must be positive")
	}
}

func checkAddr(a string, allowUnix bool) error {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		if !allowUnix || p == "" {
			return fmt.Errorf("%q: a unix socket needs a path", a)
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		return fmt.Errorf("%q: %v", a, err)
	}
	return nil
}

func isLoopbackOrUnix(a string) bool {
	if strings.HasPrefix(a, "unix:") {
		return true
	}
	host, _, _ := net.SplitHostPort(a)
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
