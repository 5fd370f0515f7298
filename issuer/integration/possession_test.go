package integration

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/metrics"
	"github.com/relaytls/relaytls/issuer/policy"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/testpki"
)

// logBuffer keeps every line a relay-issuer logged, for the leak scan, at
// verbosity 4: what the binary's most verbose --log-level (debug, slog
// level -4) writes.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		b.lines = append(b.lines, prefix+" "+args)
		b.mu.Unlock()
	}, funcr.Options{Verbosity: 4})
}

func (b *logBuffer) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

// createdRequests records the annotations of every CertificateRequest
// created in c's namespace from now on, by name.
func createdRequests(t *testing.T, c *localcluster.Cluster) func() map[string]map[string]string {
	t.Helper()
	cm, err := cmclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	crs := cm.CertmanagerV1().CertificateRequests(ns)
	list, err := crs.List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]map[string]string{}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	w, err := crs.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if cr, ok := ev.Object.(*cmapi.CertificateRequest); ok && ev.Type == watch.Added {
				mu.Lock()
				seen[cr.Name] = cr.Annotations
				mu.Unlock()
			}
		}
	}()
	return func() map[string]map[string]string {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]map[string]string{}
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// mtlsClient dials the endpoint presenting cert, as a renewing cluster does.
func (f *endpointFixture) mtlsClient(t *testing.T, cert tls.Certificate) issuancev1.IssuanceClient {
	t.Helper()
	cc, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool(f.root.Cert), ServerName: serverName, Certificates: []tls.Certificate{cert},
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return issuancev1.NewIssuanceClient(cc)
}

// keyPair is a certificate chain and its key as a TLS client certificate.
func keyPair(key crypto.Signer, chain ...*x509.Certificate) tls.Certificate {
	c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// renewalRequest asks for a certificate for cluster with a CSR naming
// csrName and no token proof.
func renewalRequest(t *testing.T, cluster, csrName string) *issuancev1.SignRequest {
	t.Helper()
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{csrName}})
	return &issuancev1.SignRequest{Cluster: cluster, Csr: testpki.CSRPEM(der), Usages: []string{"digital signature", "client auth"}, DurationSeconds: 3600}
}

// signFor sends a request with a fresh key's CSR for cluster and returns the
// issued chain as a client certificate.
func signFor(t *testing.T, cl issuancev1.IssuanceClient, cluster string, withProof bool) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	der, key := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{cluster}})
	req := &issuancev1.SignRequest{Cluster: cluster, Csr: testpki.CSRPEM(der), Usages: []string{"digital signature", "client auth"}, DurationSeconds: 3600}
	if withProof {
		req.Proof = clusterProof(t, token, cluster, der)
	}
	resp, err := cl.Sign(t.Context(), req)
	if err != nil {
		t.Fatalf("signing for %s (token proof: %v): %v", cluster, withProof, err)
	}
	chain := parseChain(t, resp.Certificate)
	if chain[0].DNSNames[0] != cluster {
		t.Fatalf("signed for %v, want %s", chain[0].DNSNames, cluster)
	}
	return keyPair(key, chain...), chain[0]
}

func keyLines(t *testing.T, pemBytes []byte) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(string(pemBytes), "\n") {
		if len(l) >= 40 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

// noLeaks fails when any secret value appears in a log line, an Event or a
// CertificateRequest condition of c.
func noLeaks(t *testing.T, c *localcluster.Cluster, logs []string, secrets []string) {
	t.Helper()
	var evs corev1.EventList
	if err := c.Client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var crs cmapi.CertificateRequestList
	if err := c.Client.List(t.Context(), &crs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	texts := append([]string(nil), logs...)
	for _, e := range evs.Items {
		texts = append(texts, e.Message, e.Reason)
	}
	for _, cr := range crs.Items {
		for _, cond := range cr.Status.Conditions {
			texts = append(texts, cond.Message)
		}
	}
	if len(logs) == 0 || len(secrets) == 0 {
		t.Fatalf("nothing to scan: %d log lines, %d secret values", len(logs), len(secrets))
	}
	for _, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Fatalf("a token, proof, attestation or key line appears in %q", text)
			}
		}
	}
	t.Logf("leak scan: %d secret values looked for in %d log lines, %d Events and %d requests' conditions", len(secrets), len(logs), len(evs.Items), len(crs.Items))
}

// TestRenewalByPossession calls the issuance endpoint of a real control plane
// over real mTLS: a cluster renews with its current certificate and no token,
// and every certificate that must not renew is refused before anything is
// created.
func TestRenewalByPossession(t *testing.T) {
	logs := &logBuffer{}
	f := startEndpoint(t, endpoint.Config{Timeout: time.Minute, RatePerCluster: 10, Burst: 10}, app.Options{Logger: logs.logger()})
	ctx := t.Context()
	for _, name := range []string{"poss-1", "poss-2"} {
		if err := f.c.Client.Create(ctx, &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	created := createdRequests(t, f.c)
	tokenClient := f.client(t, "127.0.0.1")
	first, firstLeaf := signFor(t, tokenClient, "poss-1", true)
	renewals := func(result, reason string) float64 {
		return testutil.ToFloat64(metrics.Renewals.WithLabelValues(result, reason))
	}
	signedBefore := renewals("signed", "")
	var attestations []string
	var second tls.Certificate
	var secondLeaf, thirdLeaf *x509.Certificate

	t.Run("the current certificate renews without a token, and the request records which", func(t *testing.T) {
		second, secondLeaf = signFor(t, f.mtlsClient(t, first), "poss-1", false)
		if secondLeaf.SerialNumber.Cmp(firstLeaf.SerialNumber) == 0 {
			t.Fatal("the renewal returned the same serial")
		}
		// The renewed certificate renews in its turn.
		_, thirdLeaf = signFor(t, f.mtlsClient(t, second), "poss-1", false)
		if thirdLeaf.SerialNumber.Cmp(secondLeaf.SerialNumber) == 0 {
			t.Fatal("the second renewal returned the same serial")
		}
		want := map[string]bool{firstLeaf.SerialNumber.Text(16): false, secondLeaf.SerialNumber.Text(16): false}
		eventually(t, 10*time.Second, "the renewal requests with relaytls.io/renewal-of", func(context.Context) (bool, string, error) {
			for _, ann := range created() {
				if serial, ok := ann[relayv1.RenewalOfAnnotation]; ok {
					if _, proofToo := ann[relayv1.IdentityProofAnnotation]; proofToo || ann[relayv1.ClusterAnnotation] != "poss-1" || ann[relayv1.RenewalAttestationAnnotation] == "" {
						return false, "", fmt.Errorf("renewal request annotations %v: want the cluster, renewal-of and an attestation, no identity proof", ann)
					}
					want[serial] = true
					attestations = append(attestations, ann[relayv1.RenewalAttestationAnnotation])
				}
			}
			return want[firstLeaf.SerialNumber.Text(16)] && want[secondLeaf.SerialNumber.Text(16)], fmt.Sprint(want), nil
		})
		if got := renewals("signed", "") - signedBefore; got != 2 {
			t.Fatalf("relay_issuer_possession_renewals_total{result=signed} grew by %v, want 2", got)
		}
	})

	var current tls.Certificate
	t.Run("a certificate renewed twice since renews nothing; the one before the last renews once more, with a Warning", func(t *testing.T) {
		var rc relayv1.RelayCluster
		if err := f.c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "poss-1"}, &rc); err != nil {
			t.Fatal(err)
		}
		if rc.Status.LastCertificateSerial != thirdLeaf.SerialNumber.Text(16) || rc.Status.PreviousCertificateSerial != secondLeaf.SerialNumber.Text(16) {
			t.Fatalf("status serials last %s previous %s; want %s and %s", rc.Status.LastCertificateSerial, rc.Status.PreviousCertificateSerial,
				thirdLeaf.SerialNumber.Text(16), secondLeaf.SerialNumber.Text(16))
		}
		before := len(created())
		_, err := f.mtlsClient(t, first).Sign(ctx, renewalRequest(t, "poss-1", "poss-1"))
		if status.Code(err) != codes.PermissionDenied || issuance.ReasonOf(err) != policy.ReasonRenewalCertificateSuperseded ||
			!strings.Contains(status.Convert(err).Message(), firstLeaf.SerialNumber.Text(16)) {
			t.Fatalf("the first certificate, renewed twice since: got %v (reason %q); want PermissionDenied %s naming its serial", err, issuance.ReasonOf(err), policy.ReasonRenewalCertificateSuperseded)
		}
		time.Sleep(200 * time.Millisecond) // let a stray create reach the watch
		if after := len(created()); after != before {
			t.Fatalf("a refused renewal created a CertificateRequest (%d -> %d)", before, after)
		}
		// The second certificate: its renewal (the third) may not have
		// reached the cluster, so it renews, and says so on the RelayCluster.
		current, _ = signFor(t, f.mtlsClient(t, second), "poss-1", false)
		eventually(t, 10*time.Second, "a Warning RenewalFromPreviousCertificate on RelayCluster poss-1", func(ctx context.Context) (bool, string, error) {
			var evs corev1.EventList
			if err := f.c.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, "", err
			}
			var seen []string
			for _, ev := range evs.Items {
				if ev.InvolvedObject.Kind == "RelayCluster" && ev.InvolvedObject.Name == "poss-1" {
					seen = append(seen, ev.Reason)
					if ev.Type == corev1.EventTypeWarning && ev.Reason == "RenewalFromPreviousCertificate" && strings.Contains(ev.Message, secondLeaf.SerialNumber.Text(16)) {
						return true, "", nil
					}
				}
			}
			return false, fmt.Sprint(seen), nil
		})
		// The third is now the one before the last; the second is two
		// behind and refused.
		_, err = f.mtlsClient(t, second).Sign(ctx, renewalRequest(t, "poss-1", "poss-1"))
		if issuance.ReasonOf(err) != policy.ReasonRenewalCertificateSuperseded {
			t.Fatalf("the second certificate after two more renewals: got %v; want %s", err, policy.ReasonRenewalCertificateSuperseded)
		}
	})

	now := time.Now()
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	issue := func(parent *testpki.Cert, o testpki.Options) tls.Certificate {
		c := testpki.Issue(t, parent, o)
		if parent == f.inter {
			return keyPair(c.Key, c.Cert, f.inter.Cert)
		}
		return keyPair(c.Key, c.Cert)
	}
	foreignRoot := testpki.Root(t, "some other root")
	foreignInter := testpki.Intermediate(t, foreignRoot, "some other intermediate")
	foreignLeaf := testpki.Issue(t, foreignInter, testpki.Options{DNSNames: []string{"poss-1"}, ExtKeyUsage: clientAuth})
	foreign := keyPair(foreignLeaf.Key, foreignLeaf.Cert, foreignInter.Cert)
	for _, tc := range []struct {
		name            string
		cert            tls.Certificate
		cluster, csrFor string
		reason, message string
	}{
		{"a certificate of another cluster", first, "poss-2", "poss-2", policy.ReasonRenewalIdentityMismatch, `not for cluster "poss-2"`},
		{"a CSR for another cluster", first, "poss-1", "poss-2", policy.ReasonRenewalIdentityMismatch, "the new CSR names [poss-2]"},
		{"an expired certificate", issue(f.inter, testpki.Options{DNSNames: []string{"poss-1"}, ExtKeyUsage: clientAuth, NotBefore: now.Add(-3 * time.Hour), NotAfter: now.Add(-time.Hour)}), "poss-1", "poss-1", policy.ReasonRenewalCertificateInvalid, "expired at"},
		{"a CA certificate", issue(f.inter, testpki.Options{DNSNames: []string{"poss-1"}, IsCA: true, ExtKeyUsage: clientAuth}), "poss-1", "poss-1", policy.ReasonRenewalCertificateInvalid, "is a CA certificate"},
		{"a certificate with no extended key usage", issue(f.inter, testpki.Options{DNSNames: []string{"poss-1"}}), "poss-1", "poss-1", policy.ReasonRenewalCertificateInvalid, "has no extended key usage"},
		{"a server certificate", issue(f.inter, testpki.Options{DNSNames: []string{"poss-1"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), "poss-1", "poss-1", policy.ReasonRenewalCertificateInvalid, "lacks the client-auth"},
		{"a certificate of another PKI", foreign, "poss-1", "poss-1", policy.ReasonRenewalCertificateInvalid, "does not chain"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			before := len(created())
			refusedBefore := renewals("refused", tc.reason)
			_, err := f.mtlsClient(t, tc.cert).Sign(ctx, renewalRequest(t, tc.cluster, tc.csrFor))
			if status.Code(err) != codes.PermissionDenied || issuance.ReasonOf(err) != tc.reason || !strings.Contains(status.Convert(err).Message(), tc.message) {
				t.Fatalf("got %v (reason %q); want PermissionDenied %s saying %q", err, issuance.ReasonOf(err), tc.reason, tc.message)
			}
			if got := renewals("refused", tc.reason) - refusedBefore; got != 1 {
				t.Fatalf("relay_issuer_possession_renewals_total{result=refused,reason=%s} grew by %v, want 1", tc.reason, got)
			}
			time.Sleep(200 * time.Millisecond) // let a stray create reach the watch
			if after := len(created()); after != before {
				t.Fatalf("a refused renewal created a CertificateRequest (%d -> %d)", before, after)
			}
		})
	}

	t.Run("no token proof and no certificate is refused", func(t *testing.T) {
		_, err := tokenClient.Sign(ctx, renewalRequest(t, "poss-1", "poss-1"))
		if status.Code(err) != codes.InvalidArgument || issuance.ReasonOf(err) != policy.ReasonMissingIdentityProof {
			t.Fatalf("got %v; want InvalidArgument %s", err, policy.ReasonMissingIdentityProof)
		}
	})

	t.Run("a revoked cluster is refused despite a valid certificate", func(t *testing.T) {
		patchRelayCluster(t, f.c, "poss-1", func(rc *relayv1.RelayCluster) { rc.Spec.Revoked = true })
		eventually(t, 10*time.Second, "the endpoint refuses the revoked cluster's renewal", func(ctx context.Context) (bool, string, error) {
			_, err := f.mtlsClient(t, current).Sign(ctx, renewalRequest(t, "poss-1", "poss-1"))
			return issuance.ReasonOf(err) == policy.ReasonClusterRevoked && status.Code(err) == codes.PermissionDenied, fmt.Sprintf("got %v", err), nil
		})
		patchRelayCluster(t, f.c, "poss-1", func(rc *relayv1.RelayCluster) { rc.Spec.Revoked = false })
		eventually(t, 10*time.Second, "the re-admitted cluster renews again", func(ctx context.Context) (bool, string, error) {
			_, err := f.mtlsClient(t, current).Sign(ctx, renewalRequest(t, "poss-1", "poss-1"))
			return err == nil, fmt.Sprintf("got %v", err), nil
		})
	})

	t.Run("a request claiming a renewal without the endpoint's attestation is refused by the issuer", func(t *testing.T) {
		for name, att := range map[string]string{"renewal-no-attestation": "", "renewal-forged-attestation": clusterProof(t, token, "poss-1", []byte("x"))} {
			der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"poss-1"}})
			ann := map[string]string{relayv1.ClusterAnnotation: "poss-1", relayv1.RenewalOfAnnotation: firstLeaf.SerialNumber.Text(16)}
			if att != "" {
				ann[relayv1.RenewalAttestationAnnotation] = att
			}
			cr := &cmapi.CertificateRequest{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
				Spec: cmapi.CertificateRequestSpec{
					Request: testpki.CSRPEM(der), Usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
					Duration:  &metav1.Duration{Duration: time.Hour},
					IssuerRef: cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: "RelayIssuer", Name: "relay"},
				},
			}
			if err := f.c.Client.Create(ctx, cr); err != nil {
				t.Fatal(err)
			}
			got := waitCR(t, f.c, name)
			if len(got.Status.Certificate) > 0 {
				t.Fatalf("%s was signed", name)
			}
			if inv := apiutil.GetCertificateRequestCondition(got, cmapi.CertificateRequestConditionInvalidRequest); inv == nil || inv.Reason != policy.ReasonRenewalCertificateInvalid || !strings.Contains(inv.Message, "no valid attestation") {
				t.Fatalf("%s: InvalidRequest condition %+v, want reason %s", name, inv, policy.ReasonRenewalCertificateInvalid)
			}
		}
	})

	t.Run("no token, proof, attestation or key in any log, Event or condition", func(t *testing.T) {
		secrets := append([]string{token, wrongToken, string(clusterToken(t, []byte(token), "poss-1", 1))}, attestations...)
		if len(attestations) == 0 {
			t.Fatal("no attestation was collected")
		}
		keyPEM, err := x509.MarshalPKCS8PrivateKey(first.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, keyLines(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyPEM}))...)
		secrets = append(secrets, keyLines(t, f.inter.KeyPEM(t))...)
		noLeaks(t, f.c, logs.all(), secrets)
	})
}

// TestSingleUseToken runs a management and a workload cluster with real
// cert-manager: a cluster whose token is single-use enrols once with it,
// after which the token is refused; it renews by possession with no token
// Secret at all; and when its certificate has lapsed it re-enrols with the
// fresh token relayctl gives for the advanced generation.
func TestSingleUseToken(t *testing.T) {
	e := &enrollment{mgmt: startCluster(t, "management"), wl: startCluster(t, "workload"), t: t}
	ctx := t.Context()
	root := testpki.Root(t, "single-use root")
	inter := testpki.Intermediate(t, root, "single-use intermediate")
	server := testpki.Issue(t, root, testpki.Options{CommonName: serverName, DNSNames: []string{serverName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	createSecret(t, e.mgmt, "relay-root-tls-secret", map[string][]byte{"ca.crt": root.CertPEM()})
	createSecret(t, e.mgmt, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, e.mgmt, "relay-server-tls-secret", map[string][]byte{"tls.crt": server.CertPEM(), "tls.key": server.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, e.mgmt, "relay-identity-token-secret", map[string][]byte{"token": []byte(token)})
	createIssuer(t, e.mgmt, "relay", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}, RequireRegistration: true})
	const cluster = "single-1"
	if err := e.mgmt.Client.Create(ctx, &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cluster}, Spec: relayv1.RelayClusterSpec{SingleUseToken: true}}); err != nil {
		t.Fatal(err)
	}
	e.serve(t)
	waitIssuer(t, e.mgmt, "relay", metav1.ConditionTrue, "")
	mgmtRequests := createdRequests(t, e.mgmt)
	gen1 := clusterToken(t, []byte(token), cluster, 1)

	// First enrollment, with the generation-1 token.
	e.register(t, cluster)
	waitCertificateReady(t, e.wl, "relay-client")
	first := verifyClientSecret(t, e.wl, "relay-tls-client-secret", cluster, root.Cert)
	waitRelayCluster(t, e.mgmt, cluster, func(rc *relayv1.RelayCluster) bool {
		return rc.TokenGeneration() == 2 && strings.HasPrefix(rc.Annotations[relayv1.TokenUsedByAnnotation], "1/")
	})
	var evs corev1.EventList
	eventually(t, 20*time.Second, "a TokenGenerationAdvanced Event on the RelayCluster", func(ctx context.Context) (bool, string, error) {
		if err := e.mgmt.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "TokenGenerationAdvanced" && ev.InvolvedObject.Kind == "RelayCluster" && ev.InvolvedObject.Name == cluster {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d Events", len(evs.Items)), nil
	})

	t.Run("the used token is refused the second time", func(t *testing.T) {
		cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool(root.Cert), ServerName: serverName})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		before := len(mgmtRequests())
		_, err = issuancev1.NewIssuanceClient(cc).Sign(ctx, signRequestWithToken(t, cluster, gen1))
		if status.Code(err) != codes.PermissionDenied || issuance.ReasonOf(err) != policy.ReasonStaleTokenGeneration {
			t.Fatalf("second use of the single-use token: got %v; want PermissionDenied %s", err, policy.ReasonStaleTokenGeneration)
		}
		time.Sleep(200 * time.Millisecond)
		if after := len(mgmtRequests()); after != before {
			t.Fatalf("the refused token created a CertificateRequest (%d -> %d)", before, after)
		}
	})

	t.Run("it renews by possession with no token Secret present", func(t *testing.T) {
		var tok corev1.Secret
		if err := e.wl.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "relay-identity-token-secret"}, &tok); err != nil {
			t.Fatal(err)
		}
		if err := e.wl.Client.Delete(ctx, &tok); err != nil {
			t.Fatal(err)
		}
		renew(t, e.wl, "relay-client")
		waitSecretSerial(t, e.wl.Client, "relay-tls-client-secret", first.SerialNumber)
		waitCertificateReady(t, e.wl, "relay-client")
		second := verifyClientSecret(t, e.wl, "relay-tls-client-secret", cluster, root.Cert)
		if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
			t.Fatal("no new certificate")
		}
		eventually(t, 10*time.Second, "the management request recording the renewal", func(context.Context) (bool, string, error) {
			for _, ann := range mgmtRequests() {
				if ann[relayv1.RenewalOfAnnotation] == first.SerialNumber.Text(16) {
					return true, "", nil
				}
			}
			return false, fmt.Sprint(mgmtRequests()), nil
		})
		var rc relayv1.RelayCluster
		if err := e.mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: cluster}, &rc); err != nil {
			t.Fatal(err)
		}
		if rc.TokenGeneration() != 2 {
			t.Fatalf("a renewal by possession moved tokenGeneration to %d; it uses no token", rc.TokenGeneration())
		}
		waitIssuer(t, e.wl, "relay", metav1.ConditionTrue, "")
	})

	t.Run("after its certificate lapsed it re-enrols with the fresh token from relayctl", func(t *testing.T) {
		// The cluster still holds its used token, and its certificate has
		// expired (written into the Secret, as if it had been down).
		createSecret(t, e.wl, "relay-identity-token-secret", map[string][]byte{"token": gen1})
		cur := getSecret(t, e.wl.Client, "relay-tls-client-secret")
		before := parseChain(t, cur.Data["tls.crt"])[0]
		lapsed := testpki.Issue(t, inter, testpki.Options{DNSNames: []string{cluster}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			NotBefore: time.Now().Add(-3 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		cur.Data["tls.crt"] = append(lapsed.CertPEM(), inter.CertPEM()...)
		cur.Data["tls.key"] = lapsed.KeyPEM(t)
		if err := e.wl.Client.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
		// cert-manager renews the expired certificate; the used token is
		// refused.
		var failed *cmapi.CertificateRequest
		eventually(t, 60*time.Second, "the renewal with the used token to be refused", func(ctx context.Context) (bool, string, error) {
			crs, err := requestsFor(ctx, e.wl, "relay-client")
			if err != nil {
				return false, err.Error(), nil
			}
			for i := range crs {
				if inv := apiutil.GetCertificateRequestCondition(&crs[i], cmapi.CertificateRequestConditionInvalidRequest); inv != nil && inv.Reason == policy.ReasonStaleTokenGeneration {
					failed = &crs[i]
					return true, "", nil
				}
			}
			return false, fmt.Sprintf("%d requests, none refused as StaleTokenGeneration", len(crs)), nil
		})
		if !strings.Contains(apiutil.GetCertificateRequestCondition(failed, cmapi.CertificateRequestConditionInvalidRequest).Message, "relayctl token --cluster "+cluster) {
			t.Fatalf("the refusal does not say how to get the new token: %+v", failed.Status.Conditions)
		}

		fresh := relayctlToken(t, e.mgmt, cluster)
		if want := clusterToken(t, []byte(token), cluster, 2); string(fresh) != string(want) {
			t.Fatal("relayctl token did not give the generation-2 token")
		}
		putSecret(t, e.wl, "relay-identity-token-secret", map[string][]byte{"token": fresh})
		retryIssuance(t, e.wl, "relay-client")
		waitSecretSerial(t, e.wl.Client, "relay-tls-client-secret", lapsed.Cert.SerialNumber)
		waitCertificateReady(t, e.wl, "relay-client")
		third := verifyClientSecret(t, e.wl, "relay-tls-client-secret", cluster, root.Cert)
		if third.SerialNumber.Cmp(before.SerialNumber) == 0 {
			t.Fatal("the re-enrolment kept the old certificate")
		}
		waitRelayCluster(t, e.mgmt, cluster, func(rc *relayv1.RelayCluster) bool {
			return rc.TokenGeneration() == 3 && strings.HasPrefix(rc.Annotations[relayv1.TokenUsedByAnnotation], "2/")
		})
		secrets := []string{token, string(gen1), string(fresh)}
		secrets = append(secrets, keyLines(t, inter.KeyPEM(t))...)
		secrets = append(secrets, keyLines(t, getSecret(t, e.wl.Client, "relay-tls-client-secret").Data["tls.key"])...)
		for _, c := range []*localcluster.Cluster{e.mgmt, e.wl} {
			noLeaksNoLogs(t, c, secrets)
		}
	})
}

// signRequestWithToken is a token call of cluster made with the cluster
// token tok itself.
func signRequestWithToken(t *testing.T, cluster string, tok []byte) *issuancev1.SignRequest {
	t.Helper()
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{cluster}})
	ct, err := proof.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return &issuancev1.SignRequest{Cluster: cluster, Csr: testpki.CSRPEM(der), Proof: proof.Identity(ct, cluster, der),
		Usages: []string{"digital signature", "client auth"}, DurationSeconds: 3600}
}

// noLeaksNoLogs scans Events and conditions only (the issuers of the
// two-cluster tests log to the test's own output).
func noLeaksNoLogs(t *testing.T, c *localcluster.Cluster, secrets []string) {
	t.Helper()
	noLeaks(t, c, []string{"(no log lines collected)"}, secrets)
}

// retryIssuance starts a new issuance of a Certificate now, as `cmctl
// renew` does after a failure: a fresh Issuing condition, so cert-manager
// deletes the request that failed and makes a new one.
func retryIssuance(t *testing.T, c *localcluster.Cluster, name string) {
	t.Helper()
	eventually(t, 10*time.Second, "starting a new issuance of "+name, func(ctx context.Context) (bool, string, error) {
		var cur cmapi.Certificate
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cur); err != nil {
			return false, err.Error(), nil
		}
		conds := cur.Status.Conditions[:0]
		for _, cond := range cur.Status.Conditions {
			if cond.Type != cmapi.CertificateConditionIssuing {
				conds = append(conds, cond)
			}
		}
		now := metav1.Now()
		cur.Status.Conditions = append(conds, cmapi.CertificateCondition{
			Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue, LastTransitionTime: &now,
			Reason: "ManuallyTriggered", Message: "re-enrolment requested by the test",
		})
		if err := c.Client.Status().Update(ctx, &cur); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}

var (
	relayctlOnce sync.Once
	relayctlBin  string
	relayctlErr  error
)

// relayctlToken runs `relayctl token --cluster NAME --stdout` against the
// management cluster, as an operator would.
func relayctlToken(t *testing.T, mgmt *localcluster.Cluster, cluster string) []byte {
	t.Helper()
	relayctlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "relayctl-")
		if err != nil {
			relayctlErr = err
			return
		}
		relayctlBin = filepath.Join(dir, "relayctl")
		out, err := exec.Command("go", "build", "-o", relayctlBin, repoPath(t, "relayctl")).CombinedOutput()
		if err != nil {
			relayctlErr = fmt.Errorf("building relayctl: %v\n%s", err, out)
		}
	})
	if relayctlErr != nil {
		t.Fatal(relayctlErr)
	}
	cmd := exec.Command(relayctlBin, "token", "--cluster", cluster, "--mgmt-kubeconfig", mgmt.KubeconfigPath, "--stdout")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("relayctl token: %v\n%s", err, stderr.String())
	}
	return []byte(strings.TrimSpace(string(out)))
}
