// Package metrics defines the relay sidecar's Prometheus metrics and serves
// them with the /livez and /readyz probes on their own listen address.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one sidecar's set of metrics, on its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	// Handshakes counts completed TLS (or h2c) connection setups.
	Handshakes prometheus.Counter
	// Failures counts refused handshakes and refused streams, by reason.
	Failures *prometheus.CounterVec
	// Reloads counts credential reload attempts that found new material.
	Reloads *prometheus.CounterVec
	// ActiveTunnels is the number of open tunnels.
	ActiveTunnels prometheus.Gauge
	// Tunnels counts tunnels by how they ended.
	Tunnels *prometheus.CounterVec
	// Reconnects counts the agent's new connections after the first.
	Reconnects prometheus.Counter
	// Connections is the number of live relay connections.
	Connections prometheus.Gauge
	// Resumes counts tunnel resumes by result: ok, or why one was refused
	// or given up.
	Resumes *prometheus.CounterVec
	// Buffered is the number of sent but unacknowledged tunnel bytes held.
	Buffered prometheus.Gauge
	// Orphaned is the number of tunnels waiting for a resume.
	Orphaned prometheus.Gauge
}

// ExpiryFunc returns the NotAfter of the certificates a role watches, by
// kind ("leaf", "trust_bundle"); zero times are skipped.
type ExpiryFunc func() map[string]time.Time

// New makes the metrics of a sidecar running as role.
func New(role string, expiry ExpiryFunc) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c := prometheus.Labels{"role": role}
	m := &Metrics{
		Registry: reg,
		Handshakes: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_sidecar_handshakes_total",
			Help: "Relay connections whose handshake completed.", ConstLabels: c}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_sidecar_handshake_failures_total",
			Help: "Refused handshakes and streams, by reason.", ConstLabels: c}, []string{"reason"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_sidecar_credential_reloads_total",
			Help: "Credential reloads that found new material, by result and reason.", ConstLabels: c}, []string{"result", "reason"}),
		ActiveTunnels: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_sidecar_active_tunnels",
			Help: "Tunnels currently open.", ConstLabels: c}),
		Tunnels: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_sidecar_tunnels_total",
			Help: "Tunnels by outcome.", ConstLabels: c}, []string{"result"}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "relay_sidecar_reconnects_total",
			Help: "Relay connections made after the first (agent).", ConstLabels: c}),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_sidecar_connections",
			Help: "Relay connections currently open.", ConstLabels: c}),
		Resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_sidecar_tunnel_resumes_total",
			Help: "Tunnel resumes by result (ok, or the reason it was refused or given up).", ConstLabels: c}, []string{"result"}),
		Buffered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_sidecar_unacked_bytes",
			Help: "Tunnel bytes sent but not yet acknowledged, kept for a resume.", ConstLabels: c}),
		Orphaned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_sidecar_orphaned_tunnels",
			Help: "Tunnels without a stream, waiting for a resume.", ConstLabels: c}),
	}
	reg.MustRegister(m.Handshakes, m.Failures, m.Reloads, m.ActiveTunnels, m.Tunnels, m.Reconnects, m.Connections,
		m.Resumes, m.Buffered, m.Orphaned)
	if expiry != nil {
		reg.MustRegister(&expiryCollector{role: role, fn: expiry,
			desc: prometheus.NewDesc("relay_sidecar_certificate_expiry_seconds",
				"Seconds until the certificate expires (negative once expired), by role and kind.",
				[]string{"role", "kind"}, nil)})
	}
	return m
}

// Reload is a creds.Options.OnResult that counts reloads.
func (m *Metrics) Reload(result, reason string) { m.Reloads.WithLabelValues(result, reason).Inc() }

type expiryCollector struct {
	role string
	fn   ExpiryFunc
	desc *prometheus.Desc
}

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for kind, t := range e.fn() {
		if t.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, t.Sub(now).Seconds(), e.role, kind)
	}
}

// Health serves /livez, /readyz and /metrics.
type Health struct {
	srv *http.Server
	lis net.Listener
}

// ReadyFunc returns nil when ready, or why not.
type ReadyFunc func() error

// ServeHealth listens on addr and serves the probes and metrics until
// Shutdown.
func ServeHealth(addr string, m *Metrics, ready ReadyFunc) (*Health, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	h := &Health{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, lis: lis}
	go func() {
		if err := h.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener closed; Shutdown reports nothing more useful
		}
	}()
	return h, nil
}

// Addr is the bound address.
func (h *Health) Addr() string { return h.lis.Addr().String() }

// Shutdown stops serving.
func (h *Health) Shutdown(ctx context.Context) error { return h.srv.Shutdown(ctx) }
