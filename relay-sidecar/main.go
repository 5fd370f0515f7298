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
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/internal/version"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/config"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
)

func main() {
	fs := flag.NewFlagSet("relay-sidecar", flag.ContinueOnError)
	cfg := config.Register(fs)
	showVersion := version.AddFlag(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *showVersion {
		version.Print(os.Stdout, "relay-sidecar")
		return
	}
	if err := run(fs, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "relay-sidecar: %v\n", err)
		os.Exit(1)
	}
}

func run(fs *flag.FlagSet, cfg *config.Config) error {
	if err := cfg.Finish(fs); err != nil {
		return fmt.Errorf("invalid flags:\n%w", err)
	}
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	var reloader *creds.Reloader
	m := metrics.New(cfg.Role, func() map[string]time.Time { return expiries(reloader) })
	if cfg.Mode != access.ModeInsecure {
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
		reloader, err = creds.NewReloader(src, exp, creds.Options{Poll: cfg.ReloadPoll, Log: log, OnResult: m.Reload})
		if err != nil {
			return err
		}
		go reloader.Run(ctx)
	}
	tlsOpts := creds.TLSOptions{MinVersion: cfg.TLSVersion()}

	type role interface {
		Serve(net.Listener) error
		Ready() error
		Drain(context.Context)
	}
	var r role
	if cfg.Role == "server" {
		var clusters server.ClusterList
		if cfg.ClusterList != "" {
			cl, err := clusterlist.NewReader(cfg.ClusterList, log)
			if err != nil {
				return err
			}
			cl.OnResult = func(result string) { m.Reload(result, "cluster_list") }
			go func() { _ = cl.Run(ctx, cfg.ReloadPoll) }()
			clusters = cl
		}
		s, err := server.New(server.Config{
			TokenScope: cfg.Scope(), Clusters: clusters,
			Mode: cfg.Mode, Upstream: cfg.Upstream, ProxyProtocol: cfg.ProxyProtocol,
			Creds: reloader, TLS: tlsOpts, KeepaliveMinTime: cfg.KeepaliveMinTime,
			PingInterval: cfg.ServerPingInterval, ResumeWindow: cfg.Window(), ResumeBuffer: cfg.ResumeBuffer,
			MaxStreamsPerConn: cfg.MaxStreamsPerConn, MaxTunnelsPerCluster: cfg.MaxTunnelsPerCluster,
			MaxUnackedPerCluster: cfg.MaxUnackedPerCluster, AuthTimeout: cfg.AuthTimeout,
			Metrics: m, Log: log,
		})
		if err != nil {
			return err
		}
		r = s
	} else {
		a, err := agent.New(agent.Config{
			Mode: cfg.Mode, ServerAddr: cfg.ServerAddr, ServerName: cfg.ServerName, Cluster: cfg.Cluster,
			Creds: reloader, TLS: tlsOpts, KeepaliveTime: cfg.KeepaliveTime, KeepaliveTimeout: cfg.KeepaliveTimeout,
			BackoffMax: cfg.ReconnectMaxDelay, ResumeWindow: cfg.Window(), ResumeBuffer: cfg.ResumeBuffer,
			Metrics: m, Log: log,
		})
		if err != nil {
			return err
		}
		r = a
	}

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

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level=%q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format=%q is not json or text", format)
}
