package integration

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/poll"
)

const ns = "relaytls-system"

// repoPath resolves a path from the repository root.
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot find the test's source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", rel)
}

// startCluster starts a control plane with cert-manager and applies the
// namespace, ServiceAccount and RBAC that relay-issuer gets from an install:
// those of the mtls-self-signed profile rendered from the Helm chart
// (deploy/profiles, whose RBAC rules deploy/render's tests hold equal to
// deploy/rbac/role.yaml). A cluster named "workload" gets the workload
// profile's, any other the management profile's.
func startCluster(t *testing.T, name string) *localcluster.Cluster {
	t.Helper()
	return startClusterWith(t, name, nil)
}

// startClusterWith is startCluster with changes to the cluster's options.
func startClusterWith(t *testing.T, name string, change func(*localcluster.Options)) *localcluster.Cluster {
	t.Helper()
	opts := localcluster.Options{
		Name:    name,
		CRDDirs: []string{repoPath(t, "deploy/crds")},
	}
	if change != nil {
		change(&opts)
	}
	c := localcluster.Start(t, opts)
	if err := relayv1.AddToScheme(c.Scheme); err != nil {
		t.Fatal(err)
	}
	role := "management"
	if name == "workload" {
		role = "workload"
	}
	identity, err := profiles.IssuerIdentity("mtls-self-signed", role)
	if err != nil {
		t.Fatal(err)
	}
	// In the profile's order: the namespace first, then what lives in it.
	for _, obj := range identity {
		manifest, err := obj.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(t.Context(), manifest); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// runIssuer runs relay-issuer against c as its ServiceAccount, with the
// RBAC deploy/rbac ships. The returned stop ends it and waits for it; it is
// also called when the test ends.
func runIssuer(t *testing.T, c *localcluster.Cluster, o app.Options) (stop func()) {
	t.Helper()
	cfg, _, err := c.AddServiceAccount(ns, "relay-issuer")
	if err != nil {
		t.Fatal(err)
	}
	o.Namespace = ns
	o.MetricsAddr, o.HealthAddr = "0", "0"
	o.LeaderElect = true
	o.SeveralPerProcess = true
	if o.MaxRetryDuration == 0 {
		o.MaxRetryDuration = time.Minute
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(runCtx, cfg, o) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay-issuer in %s: %v", c.Name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startManagement starts a management cluster running relay-issuer.
func startManagement(t *testing.T) *localcluster.Cluster {
	t.Helper()
	c := startCluster(t, "management")
	runIssuer(t, c, app.Options{})
	return c
}

// The waits of every suite (test/poll).
var eventually, consistently = poll.Eventually, poll.Consistently

func createSecret(t *testing.T, c *localcluster.Cluster, name string, data map[string][]byte) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
	if err := c.Client.Create(t.Context(), s); err != nil {
		t.Fatalf("creating Secret %s: %v", name, err)
	}
}

func putSecret(t *testing.T, c *localcluster.Cluster, name string, data map[string][]byte) {
	t.Helper()
	var s corev1.Secret
	err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &s)
	if err != nil {
		createSecret(t, c, name, data)
		return
	}
	s.Data = data
	if err := c.Client.Update(t.Context(), &s); err != nil {
		t.Fatalf("updating Secret %s: %v", name, err)
	}
}

func readyCondition(conds []metav1.Condition) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == "Ready" {
			return &conds[i]
		}
	}
	return nil
}

// waitIssuer waits for a RelayIssuer's Ready condition to have status and a
// message containing msg, for the issuer's current generation.
func waitIssuer(t *testing.T, c *localcluster.Cluster, name string, status metav1.ConditionStatus, msg string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("RelayIssuer %s Ready=%s %q", name, status, msg), func(ctx context.Context) (bool, string, error) {
		var iss relayv1.RelayIssuer
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &iss); err != nil {
			return false, err.Error(), nil
		}
		r := readyCondition(iss.Status.Conditions)
		if r == nil {
			return false, "no Ready condition", nil
		}
		seen := fmt.Sprintf("Ready=%s reason=%s message=%q generation=%d/%d", r.Status, r.Reason, r.Message, r.ObservedGeneration, iss.Generation)
		return r.Status == status && strings.Contains(r.Message, msg) && r.ObservedGeneration == iss.Generation, seen, nil
	})
}

func createIssuer(t *testing.T, c *localcluster.Cluster, name string, spec relayv1.CAIssuerSpec) {
	t.Helper()
	iss := &relayv1.RelayIssuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       relayv1.RelayIssuerSpec{CA: &spec},
	}
	if err := c.Client.Create(t.Context(), iss); err != nil {
		t.Fatalf("creating RelayIssuer %s: %v", name, err)
	}
}

type crOptions struct {
	name, issuer string
	kind         string // default RelayIssuer
	csrPEM       []byte
	cluster      string
	proof        string
	usages       []cmapi.KeyUsage
	isCA         bool
	duration     time.Duration
	annotations  map[string]string // more annotations, as the endpoint sets
}

func createCR(t *testing.T, c *localcluster.Cluster, o crOptions) *cmapi.CertificateRequest {
	t.Helper()
	ann := map[string]string{}
	if o.cluster != "" {
		ann[relayv1.ClusterAnnotation] = o.cluster
	}
	if o.proof != "" {
		ann[relayv1.IdentityProofAnnotation] = o.proof
	}
	maps.Copy(ann, o.annotations)
	if o.usages == nil {
		o.usages = []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth}
	}
	if o.kind == "" {
		o.kind = "RelayIssuer"
	}
	if o.duration == 0 {
		o.duration = time.Hour
	}
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: o.name, Annotations: ann},
		Spec: cmapi.CertificateRequestSpec{
			Request:   o.csrPEM,
			Usages:    o.usages,
			IsCA:      o.isCA,
			Duration:  &metav1.Duration{Duration: o.duration},
			IssuerRef: cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: o.kind, Name: o.issuer},
		},
	}
	if err := c.Client.Create(t.Context(), cr); err != nil {
		t.Fatalf("creating CertificateRequest %s: %v", o.name, err)
	}
	return cr
}

// waitCR waits until the CertificateRequest is Ready=True or failed, and
// returns it.
func waitCR(t *testing.T, c *localcluster.Cluster, name string) *cmapi.CertificateRequest {
	t.Helper()
	var cr cmapi.CertificateRequest
	eventually(t, 30*time.Second, "CertificateRequest "+name+" to finish", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cr); err != nil {
			return false, err.Error(), nil
		}
		r := apiutil.GetCertificateRequestCondition(&cr, cmapi.CertificateRequestConditionReady)
		if r == nil {
			return false, "no Ready condition", nil
		}
		seen := fmt.Sprintf("Ready=%s reason=%s message=%q", r.Status, r.Reason, r.Message)
		done := r.Status == cmmeta.ConditionTrue || r.Reason == cmapi.CertificateRequestReasonFailed || r.Reason == cmapi.CertificateRequestReasonDenied
		return done, seen, nil
	})
	return &cr
}

func parseChain(t *testing.T, pemBytes []byte) []*x509.Certificate {
	t.Helper()
	certs, err := pki.DecodeX509CertificateChainBytes(pemBytes)
	if err != nil {
		t.Fatalf("decoding chain: %v", err)
	}
	return certs
}

// clusterProof is the identity proof a workload cluster holding its own
// cluster token (generation 1, derived from root) makes for a CSR (DER).
func clusterProof(t testing.TB, root, cluster string, csrDER []byte) string {
	t.Helper()
	ct, err := proof.ClusterToken(proof.Token(root), cluster, proof.DefaultGeneration)
	if err != nil {
		t.Fatal(err)
	}
	return proof.Identity(ct, cluster, csrDER)
}

// clusterToken is the cluster token of cluster (generation gen) under root.
func clusterToken(t testing.TB, root []byte, cluster string, gen int64) []byte {
	t.Helper()
	r, err := proof.ParseToken(root)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := proof.ClusterToken(r, cluster, gen)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}
