// Command relay-sidecar carries an agent's local TCP connections to the
// management server over one authenticated, kept-alive gRPC (HTTP/2)
// connection, and keeps those tunnels up while Kubernetes rotates the TLS
// material under it. Run it with --role=server beside the management server
// and with --role=agent beside each agent; --mode must match on both sides.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/clusterlist"
	"github.com/relaytls/relaytls/internal/command"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/internal/version"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/config"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	command.Exit("relay-sidecar", err)
}

// run is the whole command: flags from args, the version and usage to
// stdout and stderr, logs to stderr; it serves until ctx ends, then drains.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("relay-sidecar", flag.ContinueOnError)
	cfg := config.Register(fs)
	showVersion := version.AddFlag(fs)
	if err := command.ParseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *showVersion {
		version.Print(stdout, "relay-sidecar")
		return nil
	}
	if err := cfg.Finish(fs); err != nil {
		return fmt.Errorf("invalid flags:\n%w", err)
	}
	log, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}

	var reloader *creds.Reloader
	m := metrics.New(cfg.Role, func() map[string]time.Time { return expiries(reloader) })
	if reloader, err = startCreds(ctx, cfg, m, log); err != nil {
		return err
	}
	r, err := newRole(ctx, cfg, reloader, m, log)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, r, m, log)
}

// startCreds loads the TLS material and token the mode needs and keeps them
// reloaded until ctx ends; nil in insecure mode.
func startCreds(ctx context.Context, cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*creds.Reloader, error) {
	if cfg.Mode == access.ModeInsecure {
		return nil, nil
	}
	exp := creds.Expect{Role: creds.RoleServer}
	if cfg.Role == "agent" {
		exp.Role = creds.RoleAgent
		if cfg.Cluster != "" {
			exp.Names = []string{cfg.Cluster}
		}
	} else if cfg.ServerName != "" {
		exp.Names = []string{cfg.ServerName}
	}
	src := creds.Sources{CertDir: cfg.CertDir, BundleFile: cfg.TrustBundle, TokenFile: cfg.TokenFile}
	reloader, err := creds.NewReloader(src, exp, creds.Options{Poll: cfg.ReloadPoll, Log: log, OnResult: m.Reload})
	if err != nil {
		return nil, err
	}
	go reloader.Run(ctx)
	return reloader, nil
}

// role is the server or the agent.
type role interface {
	Serve(net.Listener) error
	Ready() error
	Drain(context.Context)
}

// newRole makes the server (with its cluster list, when given) or the agent.
func newRole(ctx context.Context, cfg *config.Config, reloader *creds.Reloader, m *metrics.Metrics, log *slog.Logger) (role, error) {
	tlsOpts := creds.TLSOptions{MinVersion: cfg.TLSVersion()}
	if cfg.Role != "server" {
		return agent.New(agent.Config{
			Mode: cfg.Mode, ServerAddr: cfg.ServerAddr, ServerName: cfg.ServerName, Cluster: cfg.Cluster,
			Creds: reloader, TLS: tlsOpts, KeepaliveTime: cfg.KeepaliveTime, KeepaliveTimeout: cfg.KeepaliveTimeout,
			BackoffMax: cfg.ReconnectMaxDelay, ResumeWindow: cfg.Window(), ResumeBuffer: cfg.ResumeBuffer,
			Metrics: m, Log: log,
		})
	}
	var clusters server.ClusterList
	if cfg.ClusterList != "" {
		cl, err := clusterlist.NewReader(cfg.ClusterList, log)
		if err != nil {
			return nil, err
		}
		cl.OnResult = func(result string) { m.Reload(result, "cluster_list") }
		go func() { _ = cl.Run(ctx, cfg.ReloadPoll) }()
		clusters = cl
	}
	return server.New(server.Config{
		TokenScope: cfg.Scope(), Clusters: clusters,
		Mode: cfg.Mode, Upstream: cfg.Upstream, ProxyProtocol: cfg.ProxyProtocol,
		Creds: reloader, TLS: tlsOpts, KeepaliveMinTime: cfg.KeepaliveMinTime,
		PingInterval: cfg.ServerPingInterval, ResumeWindow: cfg.Window(), ResumeBuffer: cfg.ResumeBuffer,
		MaxStreamsPerConn: cfg.MaxStreamsPerConn, MaxTunnelsPerCluster: cfg.MaxTunnelsPerCluster,
		MaxUnackedPerCluster: cfg.MaxUnackedPerCluster, AuthTimeout: cfg.AuthTimeout,
		Metrics: m, Log: log,
	})
}

// serve listens, serves the role and the health endpoint until ctx ends or
// serving fails, then drains within --drain-timeout.
func serve(ctx context.Context, cfg *config.Config, r role, m *metrics.Metrics, log *slog.Logger) error {
	lis, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	health, err := metrics.ServeHealth(cfg.HealthListen, m, r.Ready)
	if err != nil {
		lis.Close()
		return err
	}
	log.Info("relay-sidecar started", "role", cfg.Role, "mode", string(cfg.Mode), "listen", lis.Addr().String(),
		"health_listen", health.Addr())

	errc := make(chan error, 1)
	go func() { errc <- r.Serve(lis) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("serving %s: %w", cfg.Listen, err)
		}
		return nil
	case <-ctx.Done():
	}
	log.Info("draining", "deadline", cfg.DrainTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	r.Drain(dctx)
	_ = health.Shutdown(dctx)
	log.Info("stopped")
	return nil
}

func listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return listenUnix(addr, p)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen=%s: %w", addr, err)
	}
	return l, nil
}

// listenUnix listens on a unix socket at p that only this user can
// connect to. A stale socket from a previous run is replaced; any other
// file at p is refused, never deleted.
func listenUnix(addr, p string) (net.Listener, error) {
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("--listen=%s: %s exists and is not a socket (%s); refusing to replace it", addr, p, fi.Mode().Type())
		}
		if err := os.Remove(p); err != nil {
			return nil, fmt.Errorf("--listen=%s: removing the stale socket: %w", addr, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("--listen=%s: %w", addr, err)
	}
	// The socket is created owner-only: the umask covers the moment
	// between bind and chmod. Nothing else creates files at startup.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", p)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("--listen=%s: %w", addr, err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("--listen=%s: %w", addr, err)
	}
	return l, nil
}

func expiries(r *creds.Reloader) map[string]time.Time {
	if r == nil {
		return nil
	}
	g := r.Current()
	out := map[string]time.Time{}
	if g.Leaf != nil {
		out["leaf"] = g.Leaf.NotAfter
	}
	for _, c := range g.BundleCerts {
		if t := out["trust_bundle"]; t.IsZero() || c.NotAfter.Before(t) {
			out["trust_bundle"] = c.NotAfter
		}
	}
	return out
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level=%q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format=%q is not json or text", format)
}
