package suite

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/e2e/harness"
	"github.com/relaytls/relaytls/e2e/provider"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/test/faultproxy"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/poll"
	"github.com/relaytls/relaytls/test/testpki"
)

const (
	// renewEvery is how often cert-manager renews each renewed certificate
	// (duration 1h, renewBefore 1h minus this: cert-manager's webhook
	// refuses durations under 1h, so renewals come from renewBefore).
	renewEvery = 10 * time.Second
	// wantRenewals is how many renewals of each renewed certificate the
	// stream must survive.
	wantRenewals = 3
)

// env is one mode installed on its two clusters with the relay running.
type env struct {
	t        *testing.T
	mode     harness.Mode
	clusters []provider.Cluster
	in       *harness.Installation
	relay    *harness.Relay
	watch    *harness.RotationWatcher
}

// TestModes runs each of the six modes end to end on its own two clusters.
func TestModes(t *testing.T) {
	for _, m := range harness.Modes {
		t.Run(fmt.Sprintf("%d-%s", m.Number, m.Profile), func(t *testing.T) {
			t.Parallel()
			e := setUp(t, m)
			e.survivesRenewals()
			switch m.Number {
			case 2:
				t.Run("an agent with the wrong token never gets a stream", e.wrongTokenAgent)
				t.Run("a full root rotation, the bundle placed by relayctl register --secrets-only, keeps the stream", e.tlsRootRotation)
			case 3:
				t.Run("a BYO install naming the reserved server Secret is refused", e.reservedServerSecret)
			case 4:
				t.Run("a workload cluster with the wrong token never gets a certificate", e.wrongTokenEnrollment)
				t.Run("a client certificate from another CA is refused", e.otherCAClient)
				t.Run("a network cut is survived by resuming the tunnel", e.networkCut)
				t.Run("a full root rotation with relayctl rotate-root keeps the stream", e.rootRotation)
				t.Run("a workload cluster offline through prepare holds activate back and recovers with relayctl register --secrets-only", e.offlineCluster)
				t.Run("an issuance endpoint that is down during activate delays the rotation and breaks nothing", e.endpointDown)
			case 5:
				t.Run("a garbage CA Secret leaves the stream up and the issuer not Ready, then it recovers", e.garbageCASecret)
				t.Run("telemetry gateway verified against telemetry-root-secret", e.telemetryGateway)
				t.Run("an install on the shared root token moves to per-cluster tokens with relayctl migrate-scope", e.scopeMigration)
				t.Run("a full root rotation with relayctl rotate-root keeps the stream", e.rootRotation)
			case 6:
				t.Run("a client certificate from another CA is refused", e.otherCAClient)
			}
			e.streamIntact()
			e.stopRelay()
			e.noSecretLeaks()
		})
	}
}

func setUp(t *testing.T, m harness.Mode) *env {
	ctx := t.Context()
	clusters := prov.Start(t, "management", "workload")
	in, err := harness.Install(ctx, harness.Options{
		T: t, Mode: m, Mgmt: clusters[0], Workload: clusters[1], Bins: bins, Dir: t.TempDir(),
		RenewEvery: renewEvery, Progress: func(s string) { t.Log(s) },
	})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := harness.StartRelay(ctx, harness.RelayOptions{Mode: m, Bins: bins, LogDir: in.LogDir, Server: in.Server, Agent: in.Agent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Stop() })
	t.Cleanup(func() {
		if t.Failed() {
			keepLogs(t, in.LogDir)
		}
	})
	e := &env{t: t, mode: m, clusters: clusters, in: in, relay: relay}
	e.watch = harness.WatchRotations(ctx, in.Renewed, nil)
	t.Logf("mode %s: relay up; cert-manager renews %d certificate(s)", m, len(in.Renewed))
	return e
}

// eventually is poll.Eventually for a condition that cannot fail.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	poll.Eventually(t, timeout, what, poll.Seen(cond))
}

// heartbeatsAdvance waits until both sides received n more heartbeats.
func (e *env) heartbeatsAdvance(n int64, why string) {
	e.t.Helper()
	s0, a0 := e.relay.Stats()
	eventually(e.t, time.Minute, fmt.Sprintf("%d more heartbeats each way %s", n, why), func(context.Context) (bool, string) {
		s, a := e.relay.Stats()
		return s.Received >= s0.Received+n && a.Received >= a0.Received+n, fmt.Sprintf("server %+v agent %+v", s, a)
	})
}

// survivesRenewals waits for wantRenewals renewals of every certificate
// cert-manager renews in the mode, then checks that the sidecars took the
// new material: new handshakes are served the newest server certificate and
// reloads were counted.
func (e *env) survivesRenewals() {
	t, in := e.t, e.in
	t.Helper()
	if len(in.Renewed) == 0 {
		e.heartbeatsAdvance(500, "in a mode without certificates")
		return
	}
	for _, r := range in.Renewed {
		eventually(t, 3*time.Minute, fmt.Sprintf("%d renewals of %s/%s", wantRenewals, r.Cluster.Name(), r.Certificate), func(context.Context) (bool, string) {
			n := e.watch.Renewals(r)
			return n >= wantRenewals, fmt.Sprintf("%d renewals", n)
		})
		serials := e.watch.Serials(r)
		seen := map[string]bool{}
		for _, s := range serials {
			if seen[s.String()] {
				t.Fatalf("%s: serial %s issued twice", r.Certificate, harness.Serial(s))
			}
			seen[s.String()] = true
		}
		t.Logf("%s/%s serials: %s", r.Cluster.Name(), r.Certificate, serialList(serials))
	}
	e.heartbeatsAdvance(50, "after the renewals")

	for _, r := range in.Renewed {
		switch r.Secret {
		case relayv1.ServerSecretName, relayv1.CustomServerSecretName:
			eventually(t, 30*time.Second, "a new handshake to be served the newest server certificate", func(ctx context.Context) (bool, string) {
				want := latestLeaf(ctx, r)
				got, err := harness.ServedServerCert(ctx, e.relay.ServerAddr, in.Agent.Bundle)
				if err != nil || want == nil {
					return false, fmt.Sprint(err)
				}
				return got.SerialNumber.Cmp(want.SerialNumber) == 0, "served " + harness.Serial(got.SerialNumber) + ", newest " + harness.Serial(want.SerialNumber)
			})
			e.metricAtLeast(e.relay.ServerHealth, "relay_sidecar_credential_reloads_total", 1+wantRenewals, `result="success"`)
		case relayv1.ClientSecretName, relayv1.BYOClientSecretName:
			e.metricAtLeast(e.relay.AgentHealth, "relay_sidecar_credential_reloads_total", 1+wantRenewals, `result="success"`)
			// The agent opens a new connection with each new client
			// certificate (make-before-break); the server counts them.
			e.metricAtLeast(e.relay.ServerHealth, "relay_sidecar_handshakes_total", 1+wantRenewals)
		}
	}
	if e.mode.Enrolls() {
		eventually(t, 30*time.Second, "no enrollment CertificateRequests left in the management cluster", func(ctx context.Context) (bool, string) {
			var l cmapi.CertificateRequestList
			if err := in.Mgmt.Client().List(ctx, &l, client.InNamespace(harness.Namespace), client.MatchingLabels{endpoint.LabelEnrollment: "true"}); err != nil {
				return false, err.Error()
			}
			return len(l.Items) == 0, fmt.Sprintf("%d left", len(l.Items))
		})
	}
}

func serialList(s []*big.Int) string {
	out := make([]string, len(s))
	for i, n := range s {
		out[i] = harness.Serial(n)
	}
	return strings.Join(out, " → ")
}

func latestLeaf(ctx context.Context, r harness.Renewed) *x509.Certificate {
	s, err := harness.GetSecret(ctx, r.Cluster, r.Secret)
	if err != nil {
		return nil
	}
	leaf, err := pki.DecodeX509CertificateBytes(s.Data["tls.crt"])
	if err != nil {
		return nil
	}
	return leaf
}

func (e *env) metricAtLeast(addr, name string, min float64, labels ...string) {
	e.t.Helper()
	eventually(e.t, 30*time.Second, fmt.Sprintf("%s%v ≥ %v on %s", name, labels, min, addr), func(ctx context.Context) (bool, string) {
		v, err := harness.Metric(ctx, addr, name, labels...)
		return err == nil && v >= min, fmt.Sprintf("%v (%v)", v, err)
	})
}

// streamIntact checks the sample app's stream: one stream, never broken,
// no sequence gap on either side.
func (e *env) streamIntact() {
	e.t.Helper()
	e.heartbeatsAdvance(20, "before the final check")
	s, a := e.relay.Stats()
	if s.Gaps != 0 || a.Gaps != 0 || s.Breaks != 0 || a.Breaks != 0 || s.Streams != 1 || a.Streams != 1 {
		e.t.Fatalf("the stream did not survive: server %+v, agent %+v (logs: %s)", s, a, e.in.LogDir)
	}
	e.t.Logf("stream intact: agent received %d, server received %d heartbeats; 0 gaps, 0 breaks, 1 stream", a.Received, s.Received)
}

// stopRelay stops the relay processes and requires that each stopped on
// SIGTERM.
func (e *env) stopRelay() {
	if err := e.relay.Stop(); err != nil {
		e.t.Errorf("stopping the relay: %v", err)
	}
}

// noSecretLeaks scans every log line, Event and status message.
func (e *env) noSecretLeaks() {
	t := e.t
	var s harness.Sensitive
	var projectors []*harness.Projector
	projectors = append(projectors, e.in.Server.Projectors...)
	projectors = append(projectors, e.in.Agent.Projectors...)
	if err := s.Collect(t.Context(), e.clusters, projectors); err != nil {
		t.Fatal(err)
	}
	if e.mode.Number > 1 && s.Len() == 0 {
		t.Fatal("the leak check found no token or key to look for")
	}
	found, err := s.Leaks(t.Context(), e.in.LogDir, e.clusters)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("secret leaked: %s", f)
	}
	files, _ := filepath.Glob(filepath.Join(e.in.LogDir, "*"))
	t.Logf("leak check: %d token, key-line and proof values looked for in %d log files and every Event and status message of both clusters", s.Len(), len(files))
}

// extraAgent starts an agent sidecar and a sample agent behind it with the
// given mounts, and stops them when the test ends.
func (e *env) extraAgent(t *testing.T, name string, mounts harness.Mounts) (*harness.Relay, func()) {
	t.Helper()
	health, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	listen, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--role=agent", "--mode=" + e.mode.Sidecar, "--listen=" + listen, "--server-addr=" + e.relay.ServerAddr,
		"--health-listen=" + health, "--server-name=" + harness.ServerName, "--trust-bundle=" + mounts.Bundle,
		"--cluster=" + harness.ClusterName, "--log-format=json", "--reconnect-max-delay=1s", "--drain-timeout=3s"}
	if mounts.Token != "" {
		args = append(args, "--token-file="+mounts.Token)
	}
	if mounts.CertDir != "" {
		args = append(args, "--cert-dir="+mounts.CertDir)
	}
	side, err := harness.StartProc(name+"-sidecar-agent", e.in.LogDir, bins.Sidecar, args, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &harness.Relay{AgentSidecar: side, AgentHealth: health}
	app, err := harness.StartProc(name+"-app-agent", e.in.LogDir, bins.RelayApp, []string{"--role=agent", "--connect=" + listen, "--stats-interval=200ms"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.App = app
	stop := func() {
		for _, p := range []*harness.Proc{app, side} {
			if err := p.Stop(25 * time.Second); err != nil && !strings.Contains(err.Error(), "terminated") {
				t.Errorf("stopping %s: %v", p.Name, err)
			}
		}
	}
	t.Cleanup(stop)
	return r, stop
}

// refused waits until the server sidecar counted two more refusals for
// reason, then checks that the extra agent is not ready, that its sample
// agent got no heartbeat through it, that the legitimate agent saw no
// failure, and that the refused agent's log gives the reason.
func (e *env) refused(t *testing.T, extra *harness.Relay, reason, agentSays string) {
	t.Helper()
	label := `reason="` + reason + `"`
	before, err := harness.Metric(t.Context(), e.relay.ServerHealth, "relay_sidecar_handshake_failures_total", label)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the server sidecar to refuse the agent twice with "+label, func(ctx context.Context) (bool, string) {
		after, err := harness.Metric(ctx, e.relay.ServerHealth, "relay_sidecar_handshake_failures_total", label)
		all, _ := harness.Metric(ctx, e.relay.ServerHealth, "relay_sidecar_handshake_failures_total")
		return err == nil && after >= before+2, fmt.Sprintf("%v refusals with %s (was %v), %v in all", after, label, before, all)
	})
	code, _, _ := harness.HTTPGet(t.Context(), "http://"+extra.AgentHealth+"/readyz")
	if code == 200 {
		t.Fatal("the refused agent sidecar reports ready")
	}
	if done, err := extra.AgentSidecar.Exited(); done {
		t.Fatalf("the refused agent sidecar exited (%v) instead of retrying", err)
	}
	if n := appReceived(extra.App.LogPath); n != 0 {
		t.Fatalf("the sample agent behind the refused sidecar received %d heartbeats", n)
	}
	if n, _ := harness.Metric(t.Context(), e.relay.AgentHealth, "relay_sidecar_handshake_failures_total"); n != 0 {
		t.Fatalf("the legitimate agent counted %v failures", n)
	}
	if !logMentions(extra.AgentSidecar.LogPath, agentSays) {
		t.Errorf("the refused agent's log does not say %q (%s)", agentSays, extra.AgentSidecar.LogPath)
	}
}

func (e *env) wrongTokenAgent(t *testing.T) {
	dir, err := kubeletdir.New(filepath.Join(t.TempDir(), "wrong-token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Write(map[string][]byte{"token": harness.NewToken()}); err != nil {
		t.Fatal(err)
	}
	extra, stop := e.extraAgent(t, "wrong-token", harness.Mounts{Bundle: e.in.Agent.Bundle, Token: dir.File("token")})
	defer stop()
	e.refused(t, extra, "invalid_proof", "does not match the relay identity token")
}

func (e *env) otherCAClient(t *testing.T) {
	other := testpki.Root(t, "another CA")
	leaf := testpki.Issue(t, other, testpki.Options{CommonName: harness.ClusterName, DNSNames: []string{harness.ClusterName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	dir, err := kubeletdir.New(filepath.Join(t.TempDir(), "other-ca"))
	if err != nil {
		t.Fatal(err)
	}
	// The agent trusts the real root for the server; only its own
	// certificate is from another CA. It validates its own material against
	// its bundle, so give it a bundle with both roots.
	bundle := append(readFile(t, e.in.Agent.Bundle), other.CertPEM()...)
	if err := dir.Write(map[string][]byte{"tls.crt": leaf.CertPEM(), "tls.key": leaf.KeyPEM(t), "ca.crt": bundle}); err != nil {
		t.Fatal(err)
	}
	extra, stop := e.extraAgent(t, "other-ca", harness.Mounts{CertDir: dir.Path(), Bundle: dir.File("ca.crt")})
	defer stop()
	e.refused(t, extra, "untrusted", "relay connection failed")
}

func (e *env) wrongTokenEnrollment(t *testing.T) {
	ctx := t.Context()
	wl := e.in.Workload
	// workload-2 is registered, so the profile's requireRegistration lets the
	// request reach the proof check: the token is what is refused here.
	rc := &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: harness.Namespace, Name: "workload-2"}}
	if err := e.in.Mgmt.Client().Create(ctx, rc); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.in.Mgmt.Client().Delete(context.Background(), rc) }()
	if err := harness.PutSecret(ctx, wl, "wrong-token", map[string][]byte{"token": harness.NewToken()}); err != nil {
		t.Fatal(err)
	}
	iss := &relayv1.RelayIssuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: harness.Namespace, Name: "wrong"},
		Spec: relayv1.RelayIssuerSpec{Remote: &relayv1.RemoteIssuerSpec{
			Endpoint: e.in.IssuanceAddr, ServerName: harness.ServerName, Cluster: "workload-2",
			TokenSecretRef: &relayv1.TokenSecretRef{Name: "wrong-token", Key: "token"},
		}},
	}
	if err := wl.Client().Create(ctx, iss); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitIssuerReady(ctx, wl, "wrong", time.Minute); err != nil {
		t.Fatal(err)
	}
	crt := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: harness.Namespace, Name: "wrong-client"},
		Spec: cmapi.CertificateSpec{
			SecretName: "wrong-client-tls", DNSNames: []string{"workload-2"},
			Usages:    []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
			IssuerRef: cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: "RelayIssuer", Name: "wrong"},
		},
	}
	if err := wl.Client().Create(ctx, crt); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the wrong-token request to fail with the refusal", func(ctx context.Context) (bool, string) {
		var l cmapi.CertificateRequestList
		if err := wl.Client().List(ctx, &l, client.InNamespace(harness.Namespace)); err != nil {
			return false, err.Error()
		}
		for _, cr := range l.Items {
			if !strings.HasPrefix(cr.Name, "wrong-client") {
				continue
			}
			if c := apiutil.GetCertificateRequestCondition(&cr, cmapi.CertificateRequestConditionReady); c != nil && c.Reason == cmapi.CertificateRequestReasonFailed {
				if len(cr.Status.Certificate) > 0 {
					return false, "a failed request carries a certificate"
				}
				return strings.Contains(c.Message, "identity proof"), c.Message
			}
		}
		return false, "no failed request yet"
	})
	s, err := harness.GetSecret(ctx, wl, "wrong-client-tls")
	if err == nil && len(s.Data["tls.crt"]) > 0 {
		t.Fatal("a certificate was written for the wrong token")
	}
}

func (e *env) reservedServerSecret(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), bins.Relayctl, "init", "--mode=tls-byo-server",
		"--server-secret="+relayv1.ServerSecretName, "--kubeconfig="+e.in.Mgmt.AdminKubeconfig())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("relayctl init accepted the reserved Secret name; output:\n%s", out)
	}
	if !strings.Contains(string(out), relayv1.ServerSecretName) || !strings.Contains(string(out), "reserved") {
		t.Fatalf("the refusal does not name the reserved Secret: %s", out)
	}
	t.Logf("refused: %s", strings.TrimSpace(string(out)))
}

func (e *env) garbageCASecret(t *testing.T) {
	ctx := t.Context()
	mgmt := e.in.Mgmt
	orig, err := harness.GetSecret(ctx, mgmt, relayv1.DefaultSigningSecretName)
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.PutSecret(ctx, mgmt, relayv1.DefaultSigningSecretName, map[string][]byte{"tls.crt": []byte("garbage"), "tls.key": []byte("garbage")}); err != nil {
		t.Fatal(err)
	}
	waitIssuer(t, mgmt, metav1.ConditionFalse, relayv1.DefaultSigningSecretName)
	e.heartbeatsAdvance(50, "while the issuer is not Ready")
	if err := harness.PutSecret(ctx, mgmt, relayv1.DefaultSigningSecretName, orig.Data); err != nil {
		t.Fatal(err)
	}
	waitIssuer(t, mgmt, metav1.ConditionTrue, "")
	// Renewals go on after the recovery.
	r := e.in.Renewed[0]
	n := e.watch.Renewals(r)
	eventually(t, 2*time.Minute, "a client renewal after the recovery", func(context.Context) (bool, string) {
		return e.watch.Renewals(r) > n, fmt.Sprintf("%d renewals", e.watch.Renewals(r))
	})
}

func waitIssuer(t *testing.T, c provider.Cluster, status metav1.ConditionStatus, msg string) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("RelayIssuer relay Ready=%s mentioning %q", status, msg), func(ctx context.Context) (bool, string) {
		var iss relayv1.RelayIssuer
		if err := c.Client().Get(ctx, client.ObjectKey{Namespace: harness.Namespace, Name: "relay"}, &iss); err != nil {
			return false, err.Error()
		}
		if cond := meta.FindStatusCondition(iss.Status.Conditions, string(cmapi.IssuerConditionReady)); cond != nil {
			return cond.Status == status && strings.Contains(cond.Message, msg), fmt.Sprintf("%s %s: %s", cond.Status, cond.Reason, cond.Message)
		}
		return false, "no Ready condition"
	})
}

// telemetryGateway runs a second server sidecar with the telemetry gateway
// Secret in front of a stand-in collector (the sample server), and an agent
// side that verifies it against telemetry-root-secret.
func (e *env) telemetryGateway(t *testing.T) {
	ctx := t.Context()
	server, err := e.in.Mount(ctx, e.in.Mgmt, harness.TelemetrySecret, "telemetry-server", "tls.crt", "tls.key")
	if err != nil {
		t.Fatal(err)
	}
	root, err := e.in.Mount(ctx, e.in.Workload, harness.TelemetryRoot, "telemetry-root", "ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	relay, err := harness.StartRelay(ctx, harness.RelayOptions{
		Mode: e.mode, Bins: bins, LogDir: e.in.LogDir, Name: "telemetry",
		Server: harness.Mounts{CertDir: server.CertDir, Bundle: e.in.Server.Bundle},
		Agent:  harness.Mounts{CertDir: e.in.Agent.CertDir, Bundle: filepath.Join(root.CertDir, "ca.crt")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := relay.Stop(); err != nil {
			t.Error(err)
		}
	}()
	got, err := harness.ServedServerCert(ctx, relay.ServerAddr, filepath.Join(root.CertDir, "ca.crt"))
	if err != nil {
		t.Fatalf("the telemetry gateway does not verify against telemetry-root-secret: %v", err)
	}
	s, err := harness.GetSecret(ctx, e.in.Mgmt, harness.TelemetrySecret)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pki.DecodeX509CertificateBytes(s.Data["tls.crt"])
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Fatal("the telemetry gateway serves another certificate than gloo-telemetry-gateway-tls-secret's")
	}
	st, a := relay.Stats()
	if st.Received == 0 || a.Received == 0 || st.Gaps+a.Gaps+st.Breaks+a.Breaks != 0 {
		t.Fatalf("telemetry stream: server %+v agent %+v", st, a)
	}
}

// networkCut runs a second relay whose agent dials the server through a
// loopback fault proxy, resets every connection through it, and checks
// that the sample app's stream goes on without a gap or a break: the agent
// reconnects and resumes the tunnel.
func (e *env) networkCut(t *testing.T) {
	ctx := t.Context()
	var proxy *faultproxy.Proxy
	relay, err := harness.StartRelay(ctx, harness.RelayOptions{
		Mode: e.mode, Bins: bins, LogDir: e.in.LogDir, Name: "cut", Server: e.in.Server, Agent: e.in.Agent,
		AgentDial: func(server string) (string, error) {
			var err error
			proxy, err = faultproxy.New("127.0.0.1:0", server)
			if err != nil {
				return "", err
			}
			return proxy.Addr(), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	defer func() {
		if err := relay.Stop(); err != nil {
			t.Error(err)
		}
	}()
	accepted := proxy.Accepted()
	s0, a0 := relay.Stats()
	proxy.SetMode(faultproxy.Reset)
	proxy.SetMode(faultproxy.Pass)
	eventually(t, time.Minute, "the agent to reconnect through the proxy and heartbeats to go on", func(context.Context) (bool, string) {
		s, a := relay.Stats()
		return proxy.Accepted() > accepted && s.Received >= s0.Received+50 && a.Received >= a0.Received+50,
			fmt.Sprintf("proxy accepted %d (was %d); server %+v agent %+v", proxy.Accepted(), accepted, s, a)
	})
	e.metricAtLeast(relay.ServerHealth, "relay_sidecar_tunnel_resumes_total", 1, `result="ok"`)
	s, a := relay.Stats()
	if s.Gaps != 0 || a.Gaps != 0 || s.Breaks != 0 || a.Breaks != 0 || s.Streams != 1 || a.Streams != 1 {
		t.Fatalf("the stream did not survive the cut: server %+v, agent %+v", s, a)
	}
}
