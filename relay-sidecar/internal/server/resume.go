package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/resume"
)

// Resume refusal reasons (relay_sidecar_tunnel_resumes_total{result}).
const (
	ResumeOK              = "ok"
	ResumeUnknownTunnel   = "unknown_tunnel"
	ResumeExpiredTunnel   = "expired_tunnel"
	ResumeClosedTunnel    = "closed_tunnel"
	ResumeOtherIdentity   = "other_identity"
	ResumeOffsetNeverSent = "offset_never_sent"
	ResumeIdentityRevoked = "identity_revoked"
	ResumeWindowExpired   = "resume_window_expired"
)

// tunnel is a resumable tunnel on the server: the upstream connection and
// its session outlive any one stream for the resume window.
type tunnel struct {
	id      string
	label   uint64 // logged instead of the ID, which must stay secret
	cluster string
	sess    *resume.Session

	mu    sync.Mutex
	kick  chan struct{} // closed to detach the current stream
	gen   uint64
	timer *time.Timer
}

// gone remembers why a tunnel ended, so a late resume gets that reason.
type gone struct {
	reason string
	at     time.Time
}

type goneEntry struct {
	id string
	at time.Time
}

// registry holds the resumable tunnels, the reasons of recently ended ones
// and, per cluster, the tunnel count and the shared unacknowledged-bytes
// budget.
type registry struct {
	mu   sync.Mutex
	live map[string]*tunnel
	gone map[string]gone
	// order lists gone IDs oldest first, so that forgetting them is O(1)
	// per ended tunnel.
	order    []goneEntry
	clusters map[string]*clusterState
	label    uint64
}

type clusterState struct {
	tunnels int
	budget  *resume.Budget
}

const (
	goneKeep = 10 * time.Minute
	goneMax  = 100000
)

func (r *registry) init() {
	if r.live == nil {
		r.live, r.gone, r.clusters = map[string]*tunnel{}, map[string]gone{}, map[string]*clusterState{}
	}
}

// admit counts a new tunnel of cluster, refusing it past limit, and
// returns the cluster's budget (made with budgetLimit bytes).
func (r *registry) admit(cluster string, limit, budgetLimit int) (*resume.Budget, int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	c := r.clusters[cluster]
	if c == nil {
		c = &clusterState{budget: resume.NewBudget(budgetLimit)}
		r.clusters[cluster] = c
	}
	if c.tunnels >= limit {
		return nil, c.tunnels, false
	}
	c.tunnels++
	return c.budget, c.tunnels, true
}

// leave uncounts a tunnel of cluster.
func (r *registry) leave(cluster string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clusters[cluster]
	if c == nil {
		return
	}
	c.tunnels--
	if c.tunnels <= 0 && c.budget.Used() == 0 {
		delete(r.clusters, cluster)
	}
}

func (r *registry) add(t *tunnel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	r.label++
	t.label = r.label
	r.live[t.id] = t
}

func (r *registry) remove(t *tunnel, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live[t.id] != t {
		return
	}
	delete(r.live, t.id)
	now := time.Now()
	for len(r.order) > 0 && (now.Sub(r.order[0].at) > goneKeep || len(r.order) >= goneMax) {
		old := r.order[0]
		r.order[0] = goneEntry{}
		r.order = r.order[1:]
		if g, ok := r.gone[old.id]; ok && g.at.Equal(old.at) {
			delete(r.gone, old.id)
		}
	}
	if len(r.order) == 0 {
		r.order = nil // let the backing array go
	}
	r.gone[t.id] = gone{reason: reason, at: now}
	r.order = append(r.order, goneEntry{id: t.id, at: now})
}

func (r *registry) lookup(id string) (*tunnel, gone, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.live[id]
	return t, r.gone[id], ok
}

// openResumable starts a resumable tunnel and serves its first stream.
func (s *Server) openResumable(ctx context.Context, stream grpc.ServerStream, cluster string, info *ConnInfo, budget *resume.Budget) error {
	up, err := s.dialUpstream(ctx, stream, cluster)
	if err != nil {
		s.tunnels.leave(cluster)
		s.cfg.Metrics.Tunnels.WithLabelValues("upstream_error").Inc()
		s.cfg.Log.Warn("upstream unavailable", "upstream", s.cfg.Upstream, "cluster", cluster, "error", err.Error())
		return status.Errorf(codes.Unavailable, "connecting to the upstream: %v", err)
	}
	id := make([]byte, frame.IDLen)
	if _, err := rand.Read(id); err != nil {
		up.Close()
		s.tunnels.leave(cluster)
		return status.Errorf(codes.Internal, "tunnel ID: %v", err)
	}
	m := s.cfg.Metrics
	t := &tunnel{id: string(id), cluster: cluster, sess: resume.New(up, resume.Options{Limit: s.cfg.ResumeBuffer,
		Budget: budget, OnBuffered: func(d int) { m.Buffered.Add(float64(d)) }})}
	s.tunnels.add(t)
	gen, _ := t.sess.Takeover()
	kick := t.attach(gen)
	if err := stream.SendMsg(&frame.Frame{Kind: frame.KindOpen, ID: id}); err != nil {
		up.Close()
		s.tunnels.remove(t, "the agent went away while the tunnel opened")
		s.tunnels.leave(cluster)
		return err
	}
	m.ActiveTunnels.Inc()
	t.sess.Start()
	go s.watch(t)
	s.cfg.Log.Debug("resumable tunnel opened", "tunnel", t.label, "cluster", cluster)
	return s.serveAttached(stream, t, gen, 0, kick, info)
}

// watch accounts for a tunnel's end.
func (s *Server) watch(t *tunnel) {
	<-t.sess.Done()
	s.cfg.Metrics.ActiveTunnels.Dec()
	t.mu.Lock()
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Unlock()
	result, reason := "ok", "finished"
	var a *resume.Aborted
	if err := t.sess.Err(); errors.As(err, &a) {
		result, reason = "aborted", a.Reason
		if reason == windowReason(s.cfg.ResumeWindow) {
			result = ResumeWindowExpired
		}
	}
	s.tunnels.remove(t, reason)
	s.tunnels.leave(t.cluster)
	s.cfg.Metrics.Tunnels.WithLabelValues(result).Inc()
}

func windowReason(w time.Duration) string {
	return fmt.Sprintf("no resume within the %s resume window", w)
}

// attach makes gen the tunnel's stream and detaches the previous one.
func (t *tunnel) attach(gen uint64) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kick != nil {
		close(t.kick)
	}
	t.kick = make(chan struct{})
	t.gen = gen
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	return t.kick
}

// serveAttached carries t over stream; when the stream goes, the tunnel
// waits for a resume for the resume window.
func (s *Server) serveAttached(stream grpc.ServerStream, t *tunnel, gen, from uint64, kick chan struct{}, info *ConnInfo) error {
	err := t.sess.Attach(stream, gen, from, kick, info.expired, false, nil)
	if err == nil {
		return nil
	}
	var a *resume.Aborted
	if errors.As(err, &a) {
		s.cfg.Log.Info("tunnel aborted", "tunnel", t.label, "cluster", t.cluster, "reason", a.Reason, "by_agent", a.ByPeer)
		return status.Error(codes.Aborted, a.Reason)
	}
	if errors.Is(err, resume.ErrDetached) {
		select {
		case <-info.expired:
			s.orphan(t, gen, "the agent certificate expires")
			return status.Errorf(codes.Unauthenticated, "the agent certificate (serial %s) expires at %s; the server closes its connection; resume on a new one",
				info.PeerSerial, info.NotAfter.UTC().Format(time.RFC3339))
		default:
		}
		return status.Error(codes.Aborted, "the tunnel moved to another stream")
	}
	s.orphan(t, gen, err.Error())
	return err
}

// orphan starts the resume window of t if gen is still its stream.
func (s *Server) orphan(t *tunnel, gen uint64, why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen != gen || t.timer != nil {
		return
	}
	select {
	case <-t.sess.Done():
		return
	default:
	}
	s.cfg.Log.Info("tunnel lost its stream; waiting for a resume", "tunnel", t.label, "cluster", t.cluster,
		"window", s.cfg.ResumeWindow.String(), "why", why)
	s.cfg.Metrics.Orphaned.Inc()
	t.timer = time.AfterFunc(s.cfg.ResumeWindow, func() {
		t.mu.Lock()
		stale := t.gen != gen
		t.mu.Unlock()
		if stale {
			return
		}
		reason := windowReason(s.cfg.ResumeWindow)
		s.cfg.Log.Warn("tunnel closed", "tunnel", t.label, "cluster", t.cluster, "reason", reason)
		t.sess.Abort(reason, false)
	})
	// The gauge counts the tunnel until a resume or its end.
	resumed := t.kick
	go func() {
		select {
		case <-t.sess.Done():
		case <-resumed:
		}
		s.cfg.Metrics.Orphaned.Dec()
	}()
}

func (s *Server) refuseResume(result string, code codes.Code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.cfg.Log.Warn("tunnel resume refused", "reason", result, "error", msg)
	s.cfg.Metrics.Resumes.WithLabelValues(result).Inc()
	return status.Error(code, "resume refused ("+result+"): "+msg)
}

// resume re-attaches a tunnel to this stream.
func (s *Server) resume(stream grpc.ServerStream, cluster string, info *ConnInfo, f *frame.Frame) error {
	if s.cfg.ResumeWindow <= 0 {
		return s.refuseResume(ResumeUnknownTunnel, codes.NotFound, "this server does not keep tunnels (resume is off)")
	}
	select {
	case <-info.expired:
		// Not refused for good: the agent retries on a newer connection.
		return status.Error(codes.Unavailable, "this connection closes at the agent certificate's expiry; resume on a new one")
	default:
	}
	t, g, ok := s.tunnels.lookup(string(f.ID))
	if !ok {
		switch {
		case g.reason == windowReason(s.cfg.ResumeWindow):
			return s.refuseResume(ResumeExpiredTunnel, codes.NotFound, "the tunnel was closed: %s", g.reason)
		case g.reason != "":
			return s.refuseResume(ResumeClosedTunnel, codes.NotFound, "the tunnel was closed: %s", g.reason)
		}
		return s.refuseResume(ResumeUnknownTunnel, codes.NotFound, "no such tunnel (the server may have restarted)")
	}
	if t.cluster != cluster {
		return s.refuseResume(ResumeOtherIdentity, codes.PermissionDenied,
			"tunnel %d belongs to another cluster than %q", t.label, cluster)
	}
	if s.cfg.Mode == access.ModeMTLS && info.TLS != nil {
		// The connection may be older than a trust bundle change: the
		// identity must still be good now.
		if _, err := access.VerifyClient(info.TLS.PeerCertificates, s.cfg.Creds.Current().Roots, time.Now()); err != nil {
			return s.refuseResume(ResumeIdentityRevoked, codes.PermissionDenied,
				"the identity %q is no longer accepted: %v", cluster, err)
		}
	}
	if err := t.sess.CheckPeerOffset(f.Offset); err != nil {
		return s.refuseResume(ResumeOffsetNeverSent, codes.FailedPrecondition, "tunnel %d: %v", t.label, err)
	}
	gen, delivered := t.sess.Takeover()
	kick := t.attach(gen)
	select {
	case <-t.sess.Done():
		return s.refuseResume(ResumeClosedTunnel, codes.NotFound, "the tunnel was closed")
	default:
	}
	if err := stream.SendMsg(&frame.Frame{Kind: frame.KindResume, Offset: delivered}); err != nil {
		s.orphan(t, gen, err.Error())
		return err
	}
	s.cfg.Metrics.Resumes.WithLabelValues(ResumeOK).Inc()
	s.cfg.Log.Info("tunnel resumed", "tunnel", t.label, "cluster", cluster, "agent_offset", f.Offset, "server_offset", delivered)
	return s.serveAttached(stream, t, gen, f.Offset, kick, info)
}

// closeTunnels ends every resumable tunnel (Stop).
func (s *Server) closeTunnels(reason string) {
	s.tunnels.mu.Lock()
	var ts []*tunnel
	for _, t := range s.tunnels.live {
		ts = append(ts, t)
	}
	s.tunnels.mu.Unlock()
	for _, t := range ts {
		t.sess.Abort(reason, false)
	}
}
