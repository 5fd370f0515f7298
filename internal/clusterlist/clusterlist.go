// Package clusterlist is the cluster list relay-issuer publishes for the
// server sidecar (SPEC section 8, the relay-cluster-list Secret): every
// registered cluster with its token generation and whether it is revoked.
// The issuer encodes it; the sidecar, which stays free of Kubernetes, reads
// the mounted file and re-reads it on a poll, keeping the last good list when
// a new one does not parse. The list holds no token.
package clusterlist

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
)

// Version is the format version written in every list.
const Version = 1

// Cluster is one entry.
type Cluster struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	Revoked    bool   `json:"revoked,omitempty"`
}

// List is the published document.
type List struct {
	Version  int       `json:"version"`
	Clusters []Cluster `json:"clusters"`
}

// Encode writes a list in a stable order, so an unchanged inventory gives
// the same bytes (and the Secret is not rewritten).
func Encode(clusters []Cluster) ([]byte, error) {
	cs := slices.Clone(clusters)
	slices.SortFunc(cs, func(a, b Cluster) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	if cs == nil {
		cs = []Cluster{}
	}
	return json.MarshalIndent(List{Version: Version, Clusters: cs}, "", "  ")
}

// Parse reads and checks a list. Every error names what is wrong.
func Parse(b []byte) (map[string]Cluster, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("the cluster list is empty (expected a JSON document with a clusters array)")
	}
	var l List
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("the cluster list is not valid JSON of the expected shape: %v", err)
	}
	if l.Version != Version {
		return nil, fmt.Errorf("the cluster list has version %d; this sidecar reads version %d", l.Version, Version)
	}
	out := make(map[string]Cluster, len(l.Clusters))
	for i, c := range l.Clusters {
		if err := proof.ValidateCluster(c.Name); err != nil {
			return nil, fmt.Errorf("the cluster list's entry %d: %v", i, err)
		}
		if c.Generation < 1 {
			return nil, fmt.Errorf("the cluster list's entry %q has generation %d; it must be at least 1", c.Name, c.Generation)
		}
		if _, dup := out[c.Name]; dup {
			return nil, fmt.Errorf("the cluster list names %q twice", c.Name)
		}
		out[c.Name] = c
	}
	return out, nil
}

// Reader keeps the current list of a file.
type Reader struct {
	path string
	log  *slog.Logger
	// OnResult, if set, is called after each read that found a change or an
	// error, with "ok" or "error".
	OnResult func(result string)

	cur     atomic.Pointer[map[string]Cluster]
	last    []byte
	mu      sync.Mutex
	subs    []chan struct{}
	lastErr string
}

// NewReader reads path once; an unreadable or invalid file at start is an
// error (a sidecar told to honour a list must not run without one).
func NewReader(path string, log *slog.Logger) (*Reader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reader{path: path, log: log}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--cluster-list %s: %w", path, err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("--cluster-list %s: %w", path, err)
	}
	r.cur.Store(&m)
	r.last = b
	return r, nil
}

// Lookup returns the cluster's token generation and whether it is revoked.
// A cluster the list does not name has generation 1 and is not revoked.
func (r *Reader) Lookup(cluster string) (generation int64, revoked, listed bool) {
	m := *r.cur.Load()
	c, ok := m[cluster]
	if !ok {
		return proof.DefaultGeneration, false, false
	}
	return c.Generation, c.Revoked, true
}

// Revoked lists the revoked clusters.
func (r *Reader) Revoked() []string {
	var out []string
	for name, c := range *r.cur.Load() {
		if c.Revoked {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Subscribe returns a channel that receives (without blocking the reader)
// after each change of the list.
func (r *Reader) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	return ch
}

// Reload reads the file again. A change is swapped in and announced; a bad
// file is logged and counted, and the last good list stays.
func (r *Reader) Reload() {
	b, err := os.ReadFile(r.path)
	if err == nil && bytes.Equal(b, r.last) {
		return
	}
	var m map[string]Cluster
	if err == nil {
		m, err = Parse(b)
	}
	if err != nil {
		if msg := err.Error(); msg != r.lastErr {
			r.log.Warn("cluster list refused; the last good one stays in use", "path", r.path, "error", msg)
			r.lastErr = msg
		}
		if r.OnResult != nil {
			r.OnResult("error")
		}
		return
	}
	r.lastErr = ""
	r.last = b
	r.cur.Store(&m)
	r.log.Info("cluster list loaded", "path", r.path, "clusters", len(m), "revoked", len(r.Revoked()))
	if r.OnResult != nil {
		r.OnResult("ok")
	}
	r.mu.Lock()
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	r.mu.Unlock()
}

// Run re-reads the file every interval until ctx ends. A kubelet Secret
// update swaps the file atomically, so a poll never sees half a list.
func (r *Reader) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Reload()
		}
	}
}
