package integration

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/clusterlist"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/controller"
	"github.com/relaytls/relaytls/issuer/metrics"
	"github.com/relaytls/relaytls/issuer/policy"
	"github.com/relaytls/relaytls/test/testpki"
)

const (
	token      = "the-management-cluster-relay-identity-token-0001"
	wrongToken = "not-the-relay-identity-token-of-this-cluster-0002"
)

// TestRelayIssuer runs every scenario of the CA-mode issuer against one
// management control plane; each scenario has its own issuer and Secrets.
func TestRelayIssuer(t *testing.T) {
	c := startManagement(t)
	now := time.Now()
	root := testpki.Root(t, "relay root")
	inter := testpki.Issue(t, root, testpki.Options{CommonName: "relay intermediate", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)})
	createSecret(t, c, "relay-root-tls-secret", map[string][]byte{"ca.crt": root.CertPEM()})
	createSecret(t, c, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, c, "relay-identity-token-secret", map[string][]byte{"token": []byte(token + "\n")})
	var proofs []string // every proof made in this test, to check none leaks

	createIssuer(t, c, "relay", relayv1.CAIssuerSpec{
		TokenSecretRef: &relayv1.TokenSecretRef{},
		MaxDuration:    &metav1.Duration{Duration: 24 * time.Hour},
	})
	waitIssuer(t, c, "relay", metav1.ConditionTrue, "")

	t.Run("a CA-mode issuer publishes relay-cluster-list before any cluster is registered", func(t *testing.T) {
		// The server sidecar's relay-cluster-list volume is not optional:
		// without this Secret the management server's pod would not start
		// until the first relayctl register.
		eventually(t, 20*time.Second, "relay-cluster-list exists with an empty list", func(ctx context.Context) (bool, string, error) {
			var sec corev1.Secret
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: relayv1.DefaultClusterListName}, &sec); err != nil {
				return false, err.Error(), nil
			}
			m, err := clusterlist.Parse(sec.Data[relayv1.ClusterListKey])
			if err != nil {
				return false, err.Error(), nil
			}
			return len(m) == 0, fmt.Sprintf("%d clusters listed", len(m)), nil
		})
	})

	t.Run("a request with a valid proof is signed", func(t *testing.T) {
		der, key := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-1"}})
		p := clusterProof(t, token, "cluster-1", der)
		proofs = append(proofs, p)
		createCR(t, c, crOptions{name: "signed", issuer: "relay", csrPEM: testpki.CSRPEM(der), cluster: "cluster-1", proof: p, duration: 2000 * time.Hour})
		cr := waitCR(t, c, "signed")
		if r := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady); r.Status != cmmeta.ConditionTrue {
			t.Fatalf("not signed: %s: %s", r.Reason, r.Message)
		}
		chain := parseChain(t, cr.Status.Certificate)
		if len(chain) != 2 || !chain[1].Equal(inter.Cert) {
			t.Fatalf("tls.crt holds %d certificates; want the leaf followed by the intermediate", len(chain))
		}
		cas := parseChain(t, cr.Status.CA)
		if len(cas) != 1 || !cas[0].Equal(root.Cert) {
			t.Fatalf("ca.crt is not the root")
		}
		leaf := chain[0]
		if ok, err := pki.PublicKeyMatchesCertificate(key.Public(), leaf); err != nil || !ok {
			t.Fatalf("the leaf does not carry the CSR's key")
		}
		roots := x509.NewCertPool()
		roots.AddCert(root.Cert)
		inters := x509.NewCertPool()
		inters.AddCert(chain[1])
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("the leaf does not verify against the root for client auth: %v", err)
		}
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "cluster-1" || len(leaf.URIs)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("leaf SANs: DNS %v URI %v IP %v email %v; want DNS cluster-1 only", leaf.DNSNames, leaf.URIs, leaf.IPAddresses, leaf.EmailAddresses)
		}
		if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
			t.Fatalf("leaf IsCA=%v ExtKeyUsage=%v; want a non-CA client auth certificate", leaf.IsCA, leaf.ExtKeyUsage)
		}
		if max := leaf.NotBefore.Add(24 * time.Hour); leaf.NotAfter.After(max) {
			t.Fatalf("leaf lives until %s, past maxDuration (24h from %s)", leaf.NotAfter, leaf.NotBefore)
		}
		if leaf.NotAfter.After(inter.Cert.NotAfter) {
			t.Fatalf("leaf outlives the intermediate")
		}
	})

	t.Run("a certificate never outlives the signing CA", func(t *testing.T) {
		short := testpki.Issue(t, root, testpki.Options{CommonName: "short intermediate", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(2 * time.Hour)})
		createSecret(t, c, "short-signing", map[string][]byte{"tls.crt": short.CertPEM(), "tls.key": short.KeyPEM(t)})
		createIssuer(t, c, "short", relayv1.CAIssuerSpec{SigningSecretName: "short-signing", MaxDuration: &metav1.Duration{Duration: 720 * time.Hour}})
		waitIssuer(t, c, "short", metav1.ConditionTrue, "")
		der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-1"}})
		createCR(t, c, crOptions{name: "capped", issuer: "short", csrPEM: testpki.CSRPEM(der), cluster: "cluster-1", duration: 100 * time.Hour})
		cr := waitCR(t, c, "capped")
		if r := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady); r.Status != cmmeta.ConditionTrue {
			t.Fatalf("not signed: %s: %s", r.Reason, r.Message)
		}
		leaf := parseChain(t, cr.Status.Certificate)[0]
		if !leaf.NotAfter.Equal(short.Cert.NotAfter.Truncate(time.Second)) {
			t.Fatalf("leaf NotAfter %s; want the intermediate's %s", leaf.NotAfter, short.Cert.NotAfter)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		invalidBefore := testutil.ToFloat64(metrics.Requests.WithLabelValues("refused", policy.ReasonInvalidIdentityProof))
		defer func() {
			// Three cases above present a proof that does not match.
			if got := testutil.ToFloat64(metrics.Requests.WithLabelValues("refused", policy.ReasonInvalidIdentityProof)) - invalidBefore; got != 3 && !t.Failed() {
				t.Errorf("relay_issuer_certificaterequests_total{result=refused,reason=InvalidIdentityProof} grew by %v; want 3", got)
			}
		}()
		rsaWeak, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		type testCase struct {
			name       string
			csr        testpki.CSROptions
			cluster    string // annotation
			proofFor   string // cluster the proof is made for; "" = cluster
			proofToken string // "" = the issuer's token; "-" = no proof
			otherCSR   bool   // proof made for another CSR
			usages     []cmapi.KeyUsage
			isCA       bool
			wantReason string
		}
		one := testpki.CSROptions{DNSNames: []string{"cluster-1"}}
		for _, tc := range []testCase{
			{name: "no proof", csr: one, cluster: "cluster-1", proofToken: "-", wantReason: policy.ReasonMissingIdentityProof},
			{name: "wrong token", csr: one, cluster: "cluster-1", proofToken: wrongToken, wantReason: policy.ReasonInvalidIdentityProof},
			{name: "proof for a different CSR", csr: one, cluster: "cluster-1", otherCSR: true, wantReason: policy.ReasonInvalidIdentityProof},
			{name: "proof for a different cluster", csr: testpki.CSROptions{DNSNames: []string{"cluster-2"}}, cluster: "cluster-2", proofFor: "cluster-1", wantReason: policy.ReasonInvalidIdentityProof},
			{name: "no cluster annotation", csr: one, cluster: "", proofFor: "cluster-1", wantReason: policy.ReasonMissingCluster},
			{name: "SANs beyond the cluster", csr: testpki.CSROptions{DNSNames: []string{"cluster-1", "api.example.com"}}, cluster: "cluster-1", wantReason: policy.ReasonIdentityMismatch},
			{name: "server auth requested", csr: one, cluster: "cluster-1", usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth, cmapi.UsageServerAuth}, wantReason: policy.ReasonForbiddenUsage},
			{name: "CA requested", csr: one, cluster: "cluster-1", isCA: true, usages: []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageClientAuth}, wantReason: policy.ReasonCARequested},
			{name: "weak key", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, Key: rsaWeak}, cluster: "cluster-1", wantReason: policy.ReasonUnsupportedKey},
			{name: "no client auth usage", csr: one, cluster: "cluster-1", usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature}, wantReason: policy.ReasonMissingClientAuth},
		} {
			t.Run(tc.name, func(t *testing.T) {
				der, _ := testpki.CSR(t, tc.csr)
				proofCSR := der
				if tc.otherCSR {
					proofCSR, _ = testpki.CSR(t, tc.csr)
				}
				proofCluster := tc.proofFor
				if proofCluster == "" {
					proofCluster = tc.cluster
				}
				var p string
				switch tc.proofToken {
				case "-":
				case "":
					p = clusterProof(t, token, proofCluster, proofCSR)
				default:
					p = clusterProof(t, tc.proofToken, proofCluster, proofCSR)
				}
				if p != "" {
					proofs = append(proofs, p)
				}
				name := "refused-" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
				createCR(t, c, crOptions{name: name, issuer: "relay", csrPEM: testpki.CSRPEM(der), cluster: tc.cluster, proof: p, usages: tc.usages, isCA: tc.isCA})
				cr := waitCR(t, c, name)
				r := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady)
				if r.Status != cmmeta.ConditionFalse || r.Reason != cmapi.CertificateRequestReasonFailed {
					t.Fatalf("Ready=%s reason=%s; want a permanent failure", r.Status, r.Reason)
				}
				inv := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionInvalidRequest)
				if inv == nil || inv.Status != cmmeta.ConditionTrue || inv.Reason != tc.wantReason {
					t.Fatalf("InvalidRequest condition = %+v; want True with reason %s", inv, tc.wantReason)
				}
				if len(cr.Status.Certificate) != 0 {
					t.Fatal("a refused request carries a certificate")
				}
				if p != "" && (strings.Contains(r.Message, p) || strings.Contains(inv.Message, p)) {
					t.Fatal("the refusal echoes the proof")
				}
			})
		}
	})

	t.Run("a denied request is never signed", func(t *testing.T) {
		// cert-manager's approver approves every relay request it may; deny
		// this one first, as a policy approver would. If the approver wins the
		// race (the Update then conflicts), try again with a new request.
		var name string
		for attempt := 0; ; attempt++ {
			if attempt == 10 {
				t.Fatal("cert-manager's approver approved every attempt first; cannot deny")
			}
			name = fmt.Sprintf("denied-%d", attempt)
			der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-1"}})
			p := clusterProof(t, token, "cluster-1", der)
			proofs = append(proofs, p)
			cr := createCR(t, c, crOptions{name: name, issuer: "relay", csrPEM: testpki.CSRPEM(der), cluster: "cluster-1", proof: p})
			cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
				Type: cmapi.CertificateRequestConditionDenied, Status: cmmeta.ConditionTrue,
				Reason: "PolicyDenied", Message: "denied by the test's policy approver",
			})
			err := c.Client.Status().Update(t.Context(), cr)
			if err == nil {
				break
			}
			if !apierrors.IsConflict(err) {
				t.Fatalf("denying: %v", err)
			}
		}
		// Nothing marks "the issuer has looked and declined" on a denied
		// request, so watch it for a while: it must never be signed.
		consistently(t, 3*time.Second, "denied request "+name+" stays unsigned", func(ctx context.Context) (bool, string, error) {
			var cr cmapi.CertificateRequest
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cr); err != nil {
				return false, err.Error(), nil
			}
			r := apiutil.GetCertificateRequestCondition(&cr, cmapi.CertificateRequestConditionReady)
			if len(cr.Status.Certificate) != 0 || (r != nil && r.Status == cmmeta.ConditionTrue) {
				return false, "the denied request was signed", nil
			}
			return true, "", nil
		})
	})

	t.Run("a Certificate from an issuer without tokens is issued and renewed by cert-manager", func(t *testing.T) {
		createIssuer(t, c, "no-token", relayv1.CAIssuerSpec{})
		waitIssuer(t, c, "no-token", metav1.ConditionTrue, "")
		crt := &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mgmt-client", Annotations: map[string]string{relayv1.ClusterAnnotation: "cluster-1"}},
			Spec: cmapi.CertificateSpec{
				SecretName: "mgmt-client-tls",
				DNSNames:   []string{"cluster-1"},
				Usages:     []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
				IssuerRef:  cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: "RelayIssuer", Name: "no-token"},
			},
		}
		if err := c.Client.Create(t.Context(), crt); err != nil {
			t.Fatal(err)
		}
		first := waitSecretSerial(t, c.Client, "mgmt-client-tls", nil)
		renew(t, c, "mgmt-client")
		second := waitSecretSerial(t, c.Client, "mgmt-client-tls", first)
		if first.Cmp(second) == 0 {
			t.Fatal("the renewed certificate has the same serial")
		}
	})

	t.Run("a broken signing Secret makes the issuer not Ready until it is fixed", func(t *testing.T) {
		createIssuer(t, c, "broken", relayv1.CAIssuerSpec{SigningSecretName: "broken-signing"})
		waitIssuer(t, c, "broken", metav1.ConditionFalse, "Secret relaytls-system/broken-signing does not exist")

		notCA := testpki.Issue(t, root, testpki.Options{CommonName: "not a CA", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		expired := testpki.Issue(t, root, testpki.Options{CommonName: "expired CA", IsCA: true, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
		steps := []struct {
			name string
			data map[string][]byte
			want string
		}{
			{"key does not match", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": root.KeyPEM(t)}, "Secret relaytls-system/broken-signing: tls.key does not match the certificate in tls.crt"},
			{"not a CA", map[string][]byte{"tls.crt": notCA.CertPEM(), "tls.key": notCA.KeyPEM(t)}, "Secret relaytls-system/broken-signing: the certificate in tls.crt (subject \"CN=not a CA\") is not a CA"},
			{"expired", map[string][]byte{"tls.crt": expired.CertPEM(), "tls.key": expired.KeyPEM(t)}, "Secret relaytls-system/broken-signing: the CA certificate in tls.crt expired at"},
		}
		for _, s := range steps {
			putSecret(t, c, "broken-signing", s.data)
			waitIssuer(t, c, "broken", metav1.ConditionFalse, s.want)
		}
		putSecret(t, c, "broken-signing", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t)})
		waitIssuer(t, c, "broken", metav1.ConditionTrue, "")
	})

	t.Run("tokenScope Shared works as the seed did and carries a warning condition", func(t *testing.T) {
		createIssuer(t, c, "shared", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}, TokenScope: relayv1.TokenScopeShared})
		waitIssuer(t, c, "shared", metav1.ConditionTrue, "")
		eventually(t, 15*time.Second, "the TokenScopeShared condition", func(ctx context.Context) (bool, string, error) {
			var iss relayv1.RelayIssuer
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shared"}, &iss); err != nil {
				return false, "", err
			}
			cond := meta.FindStatusCondition(iss.Status.Conditions, relayv1.IssuerConditionTokenScopeShared)
			ready := meta.FindStatusCondition(iss.Status.Conditions, "Ready")
			return cond != nil && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "any holder can claim any cluster") &&
				ready != nil && ready.Status == metav1.ConditionTrue, fmt.Sprintf("conditions %+v", iss.Status.Conditions), nil
		})
		var def relayv1.RelayIssuer
		createIssuer(t, c, "per-cluster", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}})
		waitIssuer(t, c, "per-cluster", metav1.ConditionTrue, "")
		if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "per-cluster"}, &def); err != nil {
			t.Fatal(err)
		}
		if def.Spec.CA.TokenScope != relayv1.TokenScopePerCluster || meta.FindStatusCondition(def.Status.Conditions, relayv1.IssuerConditionTokenScopeShared) != nil {
			t.Fatalf("default issuer: scope %q, conditions %+v; want PerCluster and no warning", def.Spec.CA.TokenScope, def.Status.Conditions)
		}
	})

	t.Run("generateToken creates the token once and never replaces one", func(t *testing.T) {
		createIssuer(t, c, "gen", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{Name: "gen-token"}, GenerateToken: true})
		waitIssuer(t, c, "gen", metav1.ConditionTrue, "")
		generated := getSecret(t, c.Client, "gen-token").Data["token"]
		if _, err := proof.ParseToken(generated); err != nil || len(generated) != 43 {
			t.Fatalf("generated token: %d bytes, %v; want 43 base64url characters", len(generated), err)
		}
		// A spec change makes the issuer check again; the token must stay.
		var iss relayv1.RelayIssuer
		if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gen"}, &iss); err != nil {
			t.Fatal(err)
		}
		iss.Spec.CA.MaxDuration = &metav1.Duration{Duration: 48 * time.Hour}
		if err := c.Client.Update(t.Context(), &iss); err != nil {
			t.Fatal(err)
		}
		waitIssuer(t, c, "gen", metav1.ConditionTrue, "")
		if again := getSecret(t, c.Client, "gen-token").Data["token"]; string(again) != string(generated) {
			t.Fatal("the generated token was replaced on a re-check")
		}

		userToken := "a-token-the-user-made-and-the-issuer-must-keep-01"
		createSecret(t, c, "user-token", map[string][]byte{"token": []byte(userToken)})
		createIssuer(t, c, "keep", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{Name: "user-token"}, GenerateToken: true})
		waitIssuer(t, c, "keep", metav1.ConditionTrue, "")
		if got := getSecret(t, c.Client, "user-token").Data["token"]; string(got) != userToken {
			t.Fatal("an existing token Secret was overwritten")
		}
	})

	t.Run("a re-created token Secret is a Warning naming how many registered clusters it cuts off", func(t *testing.T) {
		// "gen" made its token Secret above, with a Normal TokenSecretCreated
		// Event (a core Event: the shipped RBAC grants no other kind).
		eventually(t, 30*time.Second, "a Normal TokenSecretCreated Event on RelayIssuer gen", func(ctx context.Context) (bool, string, error) {
			var evs corev1.EventList
			if err := c.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, "", err
			}
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == "gen" && e.Reason == "TokenSecretCreated" {
					return e.Type == corev1.EventTypeNormal && strings.Contains(e.Message, "gen-token"), e.Type + ": " + e.Message, nil
				}
			}
			return false, "none yet", nil
		})
		first := getSecret(t, c.Client, "gen-token").Data["token"]
		rc := &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "recreate-probe"}}
		if err := c.Client.Create(t.Context(), rc); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Client.Delete(context.Background(), rc) }()
		var clusters relayv1.RelayClusterList
		if err := c.Client.List(t.Context(), &clusters, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("the %d registered cluster(s)", len(clusters.Items))
		sec := getSecret(t, c.Client, "gen-token")
		if err := c.Client.Delete(t.Context(), sec); err != nil {
			t.Fatal(err)
		}
		var note string
		eventually(t, time.Minute, "a TokenSecretRecreated Warning on RelayIssuer gen", func(ctx context.Context) (bool, string, error) {
			var evs corev1.EventList
			if err := c.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, "", err
			}
			var seen []string
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == "gen" && e.Reason == "TokenSecretRecreated" {
					note = e.Message
					return e.Type == corev1.EventTypeWarning, e.Type + ": " + e.Message, nil
				}
				if e.InvolvedObject.Name == "gen" {
					seen = append(seen, e.Reason)
				}
			}
			return false, fmt.Sprintf("%d Events, none TokenSecretRecreated for gen (its: %v)", len(evs.Items), seen), nil
		})
		if !strings.Contains(note, want) || !strings.Contains(note, "gen-token") || !strings.Contains(note, "relayctl register") {
			t.Fatalf("the Event does not name the Secret, the %q and the remedy: %q", want, note)
		}
		again := getSecret(t, c.Client, "gen-token").Data["token"]
		if len(again) == 0 || string(again) == string(first) {
			t.Fatal("the re-created token Secret does not hold a new token")
		}
		if strings.Contains(note, string(again)) || strings.Contains(note, string(first)) {
			t.Fatal("the Event shows a token")
		}
		waitIssuer(t, c, "gen", metav1.ConditionTrue, "")
	})

	t.Run("a RelayClusterIssuer signs with the Secrets of the cluster resource namespace", func(t *testing.T) {
		ci := &relayv1.RelayClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: "relay-cluster"},
			Spec:       relayv1.RelayIssuerSpec{CA: &relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}}},
		}
		if err := c.Client.Create(t.Context(), ci); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "RelayClusterIssuer Ready", func(ctx context.Context) (bool, string, error) {
			var got relayv1.RelayClusterIssuer
			if err := c.Client.Get(ctx, client.ObjectKey{Name: "relay-cluster"}, &got); err != nil {
				return false, err.Error(), nil
			}
			r := readyCondition(got.Status.Conditions)
			if r == nil {
				return false, "no Ready condition", nil
			}
			return r.Status == metav1.ConditionTrue, r.Message, nil
		})
		der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-7"}})
		p := clusterProof(t, token, "cluster-7", der)
		proofs = append(proofs, p)
		createCR(t, c, crOptions{name: "via-cluster-issuer", issuer: "relay-cluster", kind: "RelayClusterIssuer", csrPEM: testpki.CSRPEM(der), cluster: "cluster-7", proof: p})
		got := waitCR(t, c, "via-cluster-issuer")
		if r := apiutil.GetCertificateRequestCondition(got, cmapi.CertificateRequestConditionReady); r.Status != cmmeta.ConditionTrue {
			t.Fatalf("not signed: %s: %s", r.Reason, r.Message)
		}
	})

	t.Run("Secrets outside the issuer's namespaces are out of reach, with a message that says so", func(t *testing.T) {
		if err := c.CreateNamespace(t.Context(), "team-a"); err != nil {
			t.Fatal(err)
		}
		iss := &relayv1.RelayIssuer{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "relay"},
			Spec:       relayv1.RelayIssuerSpec{CA: &relayv1.CAIssuerSpec{}},
		}
		if err := c.Client.Create(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		want := "Secret team-a/relay-tls-signing-secret is out of reach: relay-issuer reads Secrets only in namespace(s) relaytls-system"
		eventually(t, 30*time.Second, "team-a issuer not Ready", func(ctx context.Context) (bool, string, error) {
			var got relayv1.RelayIssuer
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(iss), &got); err != nil {
				return false, err.Error(), nil
			}
			r := readyCondition(got.Status.Conditions)
			if r == nil {
				return false, "no Ready condition", nil
			}
			return r.Status == metav1.ConditionFalse && strings.Contains(r.Message, want), r.Message, nil
		})
	})

	t.Run("Events are core Events with their source and age", func(t *testing.T) {
		// kubectl describe and cmctl status read these fields; leader
		// election's Event shows that the shipped RBAC lets it record one.
		eventually(t, 30*time.Second, "a core Event from relay-issuer and one from leader election", func(ctx context.Context) (bool, string, error) {
			var evs corev1.EventList
			if err := c.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, "", err
			}
			var fromIssuer, fromLeaderElection bool
			for _, e := range evs.Items {
				if e.Source.Component == controller.EventSource && !e.LastTimestamp.IsZero() && !e.FirstTimestamp.IsZero() && e.InvolvedObject.Kind == "CertificateRequest" {
					fromIssuer = true
				}
				if e.Reason == "LeaderElection" && e.InvolvedObject.Kind == "Lease" {
					fromLeaderElection = true
				}
			}
			return fromIssuer && fromLeaderElection, fmt.Sprintf("%d Events, from relay-issuer on a CertificateRequest: %v, from leader election: %v", len(evs.Items), fromIssuer, fromLeaderElection), nil
		})
	})

	t.Run("no token or proof in any Event or condition", func(t *testing.T) {
		var events eventsv1.EventList
		if err := c.Client.List(t.Context(), &events, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var crs cmapi.CertificateRequestList
		if err := c.Client.List(t.Context(), &crs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, e := range events.Items {
			texts = append(texts, e.Note, e.Reason)
		}
		for _, cr := range crs.Items {
			for _, cond := range cr.Status.Conditions {
				texts = append(texts, cond.Message)
			}
		}
		if len(texts) == 0 || len(proofs) == 0 {
			t.Fatal("nothing to check: no Events, conditions or proofs were collected")
		}
		secrets := append([]string{token, wrongToken}, proofs...)
		for _, text := range texts {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Fatalf("a token or proof appears in %q", text)
				}
			}
		}
	})
}

func getSecret(t *testing.T, c client.Reader, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatalf("reading Secret %s: %v", name, err)
	}
	return &s
}

// waitSecretSerial waits for a cert-manager Secret to hold a certificate
// whose serial differs from not (any certificate when not is nil).
func waitSecretSerial(t *testing.T, c client.Reader, name string, not *big.Int) *big.Int {
	t.Helper()
	var serial *big.Int
	eventually(t, 60*time.Second, "Secret "+name+" to hold a new certificate", func(ctx context.Context) (bool, string, error) {
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			return false, err.Error(), nil
		}
		crt, err := pki.DecodeX509CertificateBytes(s.Data["tls.crt"])
		if err != nil {
			return false, "tls.crt: " + err.Error(), nil
		}
		if not != nil && crt.SerialNumber.Cmp(not) == 0 {
			return false, "still serial " + not.String(), nil
		}
		serial = crt.SerialNumber
		return true, "", nil
	})
	return serial
}
