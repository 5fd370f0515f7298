package server

import (
	"context"
	"sync"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/proof"
)

// ClusterList is what the server needs of the mounted relay-cluster-list
// (internal/clusterlist.Reader): each cluster's token generation and
// revocation, and a signal after every change.
type ClusterList interface {
	Lookup(cluster string) (generation int64, revoked, listed bool)
	Revoked() []string
	Subscribe() <-chan struct{}
}

// cuts cancels the live streams of clusters that get revoked.
type cuts struct {
	mu     sync.Mutex
	next   uint64
	byName map[string]map[uint64]context.CancelFunc
}

// track returns a context cancelled when cluster is revoked, and a release
// func to call when the stream ends.
func (c *cuts) track(ctx context.Context, cluster string) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	if c.byName == nil {
		c.byName = map[string]map[uint64]context.CancelFunc{}
	}
	c.next++
	id := c.next
	if c.byName[cluster] == nil {
		c.byName[cluster] = map[uint64]context.CancelFunc{}
	}
	c.byName[cluster][id] = cancel
	c.mu.Unlock()
	return ctx, func() {
		cancel()
		c.mu.Lock()
		delete(c.byName[cluster], id)
		if len(c.byName[cluster]) == 0 {
			delete(c.byName, cluster)
		}
		c.mu.Unlock()
	}
}

func (c *cuts) cut(cluster string) int {
	c.mu.Lock()
	fs := c.byName[cluster]
	delete(c.byName, cluster)
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
	return len(fs)
}

// checkListed refuses a revoked cluster (every mode) and returns its token
// generation.
func (s *Server) checkListed(cluster string) (int64, error) {
	if s.cfg.Clusters == nil {
		return proof.DefaultGeneration, nil
	}
	gen, revoked, _ := s.cfg.Clusters.Lookup(cluster)
	if revoked {
		return 0, &access.Refusal{Reason: access.ReasonRevoked, Msg: "cluster " + quote(cluster) + " is revoked (relay-cluster-list)"}
	}
	return gen, nil
}

func quote(s string) string { return "\"" + s + "\"" }

// tunnelKeys are the keys a tls-mode tunnel proof of cluster is checked with.
// During a token rotation they come from both the token and token.previous.
func (s *Server) tunnelKeys(cluster string, gen int64) ([]proof.Token, error) {
	roots := s.cfg.Creds.Current().VerifyTokens()
	if len(roots) == 0 {
		return nil, nil
	}
	return proof.Keys(s.cfg.TokenScope, roots, cluster, gen)
}

// enforceRevocations cuts, after each change of the cluster list, every live
// stream and resumable tunnel of a revoked cluster. New streams and resumes
// are refused by authenticate, so a revoked cluster is out within one reload
// of the list.
func (s *Server) enforceRevocations(changed <-chan struct{}) {
	for range changed {
		for _, cluster := range s.cfg.Clusters.Revoked() {
			streams := s.cuts.cut(cluster)
			tunnels := s.abortCluster(cluster, "cluster "+quote(cluster)+" was revoked")
			if streams+tunnels > 0 {
				s.cfg.Metrics.Failures.WithLabelValues(access.ReasonRevoked).Add(float64(streams))
				s.cfg.Log.Warn("revoked cluster cut", "cluster", cluster, "streams", streams, "tunnels", tunnels)
			}
		}
	}
}

// abortCluster ends the resumable tunnels of one cluster.
func (s *Server) abortCluster(cluster, reason string) int {
	s.tunnels.mu.Lock()
	var ts []*tunnel
	for _, t := range s.tunnels.live {
		if t.cluster == cluster {
			ts = append(ts, t)
		}
	}
	s.tunnels.mu.Unlock()
	for _, t := range ts {
		t.sess.Abort(reason, false)
	}
	return len(ts)
}
