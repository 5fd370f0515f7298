package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/clusterlist"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/test/kubeletdir"
)

// TestRevocationCutsTheClusterWithinOneReload revokes the agent's cluster in
// the mounted relay-cluster-list while a tunnel is streaming, in each mode:
// the live tunnel is cut and new connections and resumes are refused within
// one reload interval, and un-revoking admits the cluster again. The time
// from the list update to the cut is printed against the interval.
func TestRevocationCutsTheClusterWithinOneReload(t *testing.T) {
	const interval = 500 * time.Millisecond
	for _, tc := range []struct {
		mode   access.Mode
		resume time.Duration
	}{
		{mode: access.ModeInsecure},
		{mode: access.ModeTLS, resume: 5 * time.Second},
		{mode: access.ModeMTLS, resume: 5 * time.Second},
	} {
		t.Run(fmt.Sprintf("%s resume=%s", tc.mode, tc.resume), func(t *testing.T) {
			dir := must[*kubeletdir.Dir](t)(kubeletdir.New(filepath.Join(t.TempDir(), "cluster-list")))
			write := func(revoked bool) {
				b := must[[]byte](t)(clusterlist.Encode([]clusterlist.Cluster{{Name: cluster, Generation: 1, Revoked: revoked}, {Name: "bystander", Generation: 1}}))
				if err := dir.Write(map[string][]byte{"clusters.json": b}); err != nil {
					t.Fatal(err)
				}
			}
			write(false)
			list := must[*clusterlist.Reader](t)(clusterlist.NewReader(dir.File("clusters.json"), nil))
			ctx, cancel := contextWithCancel(t)
			defer cancel()
			go func() { _ = list.Run(ctx, interval) }()

			e := newEnv(t, envOpts{mode: tc.mode, resume: tc.resume, clusters: list})
			app := e.startApp()
			e.streaming(20)

			before := app.Stats()
			start := time.Now()
			write(true)
			waitFor(t, "the revoked cluster's stream to be cut", 2*interval+2*time.Second, func() bool {
				s := app.Stats()
				return s.Breaks > before.Breaks || s.Streams > before.Streams || app.LastError() != ""
			})
			cut := time.Since(start)
			t.Logf("revocation: list updated -> tunnel cut in %s (reload interval %s, ratio %.2f)", cut.Round(time.Millisecond), interval, float64(cut)/float64(interval))
			waitFor(t, "new connections of the revoked cluster to be refused", 10*time.Second, func() bool {
				return failures(e.srvSide.metrics, access.ReasonRevoked) > 0 && strings.Contains(e.srvSide.logs.String(), "reason="+access.ReasonRevoked)
			})
			received := e.up.Stats().Received
			time.Sleep(3 * interval) // nothing can be waited for: the assertion is that nothing arrives
			if got := e.up.Stats().Received; got > received+1 {
				t.Fatalf("the upstream still receives from the revoked cluster (%d -> %d)", received, got)
			}

			write(false)
			e.streaming(10)
		})
	}
}

// TestTLSGenerationBump: after the list raises the cluster's generation, the
// agent's old cluster token is refused as stale.
func TestTLSGenerationBump(t *testing.T) {
	dir := must[*kubeletdir.Dir](t)(kubeletdir.New(filepath.Join(t.TempDir(), "cluster-list")))
	b := must[[]byte](t)(clusterlist.Encode([]clusterlist.Cluster{{Name: cluster, Generation: 2}}))
	if err := dir.Write(map[string][]byte{"clusters.json": b}); err != nil {
		t.Fatal(err)
	}
	list := must[*clusterlist.Reader](t)(clusterlist.NewReader(dir.File("clusters.json"), nil))
	e := newEnv(t, envOpts{mode: access.ModeTLS, clusters: list})
	old := must[proof.Token](t)(proof.ClusterToken(e.tok, cluster, 1))
	if err := rawHello(t, e.srvAddr, clientTLS(e), &mdCreds{mode: "tls", cluster: cluster, token: old}); err == nil {
		t.Fatal("the generation-1 token was accepted after a bump to 2")
	}
	waitFor(t, "a stale-generation refusal", 5*time.Second, func() bool { return failures(e.srvSide.metrics, access.ReasonStaleGeneration) > 0 })
	cur := must[proof.Token](t)(proof.ClusterToken(e.tok, cluster, 2))
	if err := rawHello(t, e.srvAddr, clientTLS(e), &mdCreds{mode: "tls", cluster: cluster, token: cur}); err != nil {
		t.Fatalf("the generation-2 token was refused: %v", err)
	}
}
