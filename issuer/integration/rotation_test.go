package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/controller"
	"github.com/relaytls/relaytls/issuer/signer"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/testpki"
)

// rotation drives one management cluster's RelayIssuer through a root
// rotation and reads what it published.
type rotation struct {
	t      *testing.T
	c      *localcluster.Cluster
	issuer string
	token  string
	n      int // CertificateRequests made
}

func (r *rotation) secretCerts(name, key string) []*x509.Certificate {
	r.t.Helper()
	var s corev1.Secret
	if err := r.c.Client.Get(r.t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		r.t.Fatalf("reading Secret %s: %v", name, err)
	}
	certs, err := pki.DecodeX509CertificateSetBytes(s.Data[key])
	if err != nil {
		r.t.Fatalf("Secret %s %s: %v", name, key, err)
	}
	return certs
}

func fps(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, signer.Fingerprint(c))
	}
	slices.Sort(out)
	return out
}

// waitBundle waits until the Secret's ca.crt holds exactly the roots want.
func (r *rotation) waitBundle(name string, want ...*x509.Certificate) {
	r.t.Helper()
	w := fps(want)
	eventually(r.t, 30*time.Second, fmt.Sprintf("Secret %s to hold %d root(s)", name, len(want)), func(ctx context.Context) (bool, string, error) {
		var s corev1.Secret
		if err := r.c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			return false, err.Error(), nil
		}
		certs, err := pki.DecodeX509CertificateSetBytes(s.Data["ca.crt"])
		if err != nil {
			return false, err.Error(), nil
		}
		got := fps(certs)
		return slices.Equal(got, w), fmt.Sprintf("%d roots %v", len(got), got), nil
	})
}

func (r *rotation) setRotation(rot *relayv1.RootRotation) {
	r.t.Helper()
	var iss relayv1.RelayIssuer
	if err := r.c.Client.Get(r.t.Context(), client.ObjectKey{Namespace: ns, Name: r.issuer}, &iss); err != nil {
		r.t.Fatal(err)
	}
	base := iss.DeepCopy()
	iss.Spec.CA.RootRotation = rot
	if err := r.c.Client.Patch(r.t.Context(), &iss, client.MergeFrom(base)); err != nil {
		r.t.Fatalf("setting spec.ca.rootRotation: %v", err)
	}
}

// waitPhase waits for the RootRotation condition to have reason (and a
// message containing every part of msg) at the issuer's generation, and
// returns the issuer.
func (r *rotation) waitPhase(reason string, msg ...string) *relayv1.RelayIssuer {
	r.t.Helper()
	var iss relayv1.RelayIssuer
	eventually(r.t, 60*time.Second, "RootRotation "+reason, func(ctx context.Context) (bool, string, error) {
		if err := r.c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: r.issuer}, &iss); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(iss.Status.Conditions, relayv1.IssuerConditionRootRotation)
		if c == nil {
			return false, "no RootRotation condition", nil
		}
		seen := fmt.Sprintf("%s %s: %s (generation %d/%d)", c.Status, c.Reason, c.Message, c.ObservedGeneration, iss.Generation)
		ok := c.Reason == reason && c.ObservedGeneration == iss.Generation
		for _, m := range msg {
			ok = ok && strings.Contains(c.Message, m)
		}
		return ok, seen, nil
	})
	return &iss
}

// ready fails unless the issuer is Ready.
func (r *rotation) ready() {
	r.t.Helper()
	waitIssuer(r.t, r.c, r.issuer, metav1.ConditionTrue, "")
}

// enrol signs a certificate for cluster and returns its chain and ca.crt.
func (r *rotation) enrol(cluster string) (chain, cas []*x509.Certificate) {
	r.t.Helper()
	return r.enrolHolding(cluster, nil)
}

// enrolHolding is enrol for a request that reports, as the issuance endpoint
// writes it, that the cluster holds the roots held (none: no report).
func (r *rotation) enrolHolding(cluster string, held []*x509.Certificate) (chain, cas []*x509.Certificate) {
	r.t.Helper()
	r.n++
	name := fmt.Sprintf("rot-%s-%d", cluster, r.n)
	der, _ := testpki.CSR(r.t, testpki.CSROptions{DNSNames: []string{cluster}})
	var ann map[string]string
	if held != nil {
		var fp []string
		for _, c := range held {
			fp = append(fp, signer.Fingerprint(c))
		}
		ann = map[string]string{relayv1.HeldTrustBundleAnnotation: strings.Join(fp, ",")}
	}
	createCR(r.t, r.c, crOptions{name: name, issuer: r.issuer, csrPEM: testpki.CSRPEM(der), cluster: cluster, proof: clusterProof(r.t, r.token, cluster, der), annotations: ann})
	cr := waitCR(r.t, r.c, name)
	if c := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady); c == nil || c.Status != cmmeta.ConditionTrue {
		r.t.Fatalf("%s not signed: %+v", name, c)
	}
	return parseChain(r.t, cr.Status.Certificate), parseChain(r.t, cr.Status.CA)
}

func (r *rotation) cluster(name string) *relayv1.RelayCluster {
	r.t.Helper()
	var rc relayv1.RelayCluster
	if err := r.c.Client.Get(r.t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &rc); err != nil {
		r.t.Fatal(err)
	}
	return &rc
}

// verifies reports whether a chain's leaf verifies to root alone.
func verifies(chain []*x509.Certificate, root *x509.Certificate) bool {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// applyProfile applies the profile's objects that need no kubelet, as the
// e2e harness does: the self-signed PKI, the RelayIssuer.
func applyProfile(t *testing.T, c *localcluster.Cluster, mode string) {
	t.Helper()
	objs, err := profiles.Objects(mode, "management")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "CustomResourceDefinition", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "Pod":
			continue
		}
		b, err := json.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(t.Context(), b); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

func waitCertificate(t *testing.T, c *localcluster.Cluster, name string) {
	t.Helper()
	eventually(t, 90*time.Second, "Certificate "+name+" Ready", func(ctx context.Context) (bool, string, error) {
		var crt cmapi.Certificate
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &crt); err != nil {
			return false, err.Error(), nil
		}
		for _, cond := range crt.Status.Conditions {
			if cond.Type == cmapi.CertificateConditionReady {
				return cond.Status == cmmeta.ConditionTrue, cond.Message, nil
			}
		}
		return false, "no Ready condition", nil
	})
}

// TestRootRotationSelfSigned rotates the root of a mode-4 management cluster
// installed from the rendered profile (real cert-manager builds the PKI):
// telemetry-root-secret and the trust bundle are published; prepare makes
// the new root with a cert-manager Certificate and adds it to the bundle;
// activate is refused until every registered cluster was given it, then the
// intermediate and the server certificate are re-issued under the new root;
// retire is refused while a cluster still holds a leaf under the old root,
// naming it; a second rotation is refused while one runs.
func TestRootRotationSelfSigned(t *testing.T) {
	c := startCluster(t, "management")
	runIssuer(t, c, app.Options{})
	applyProfile(t, c, "mtls-self-signed")
	for _, name := range []string{"relaytls-root", "relaytls-intermediate", "relaytls-server"} {
		waitCertificate(t, c, name)
	}
	r := &rotation{t: t, c: c, issuer: "relay"}
	r.ready()
	var tok corev1.Secret
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "relay-identity-token-secret"}, &tok); err != nil {
		t.Fatal(err)
	}
	r.token = strings.TrimSpace(string(tok.Data["token"]))
	oldRoot := r.secretCerts("relay-root-tls-secret", "ca.crt")[0]
	oldInter := r.secretCerts("relay-tls-signing-secret", "tls.crt")[0]

	t.Run("telemetry-root-secret and the trust bundle are created with the root", func(t *testing.T) {
		r.waitBundle(relayv1.TelemetryRootSecretName, oldRoot)
		r.waitBundle(relayv1.DefaultTrustBundleSecretName, oldRoot)
	})

	for _, name := range []string{"east", "west", "gone"} {
		if err := c.Client.Create(t.Context(), &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"east", "west"} {
		_, cas := r.enrol(name)
		if len(cas) != 1 || !cas[0].Equal(oldRoot) {
			t.Fatalf("before a rotation ca.crt must be the root alone; got %d certificates", len(cas))
		}
	}
	t.Run("RelayCluster records the trust bundle it was given", func(t *testing.T) {
		eventually(t, 10*time.Second, "east's lastTrustBundle", func(ctx context.Context) (bool, string, error) {
			got := r.cluster("east").Status.LastTrustBundle
			return slices.Equal(got, []string{signer.Fingerprint(oldRoot)}), fmt.Sprint(got), nil
		})
	})
	// "gone" never enrolled and never will: it is revoked below, which is
	// how an operator lets a rotation pass a cluster that no longer exists.

	var newRoot *x509.Certificate
	t.Run("prepare makes the new root with cert-manager and adds it to every bundle", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "r1", Phase: relayv1.RootRotationPrepare})
		waitCertificate(t, c, "relaytls-root-next")
		iss := r.waitPhase(controller.ReasonPreparing, "east", "west", "gone")
		newRoot = r.secretCerts(relayv1.DefaultNewRootSecretName, "ca.crt")[0]
		if newRoot.Equal(oldRoot) || iss.Status.RootRotation.NewRoot != signer.Fingerprint(newRoot) {
			t.Fatalf("status.rootRotation.newRoot = %s; want the new root %s", iss.Status.RootRotation.NewRoot, signer.Fingerprint(newRoot))
		}
		r.waitBundle(relayv1.DefaultTrustBundleSecretName, oldRoot, newRoot)
		r.waitBundle(relayv1.TelemetryRootSecretName, oldRoot, newRoot)
		r.ready()
	})

	t.Run("activate is refused until every registered cluster holds the new root, naming them", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "r1", Phase: relayv1.RootRotationActivate})
		r.waitPhase(controller.ReasonActivateBlocked, "east", "west", "gone")
		// East is sent the new root, but says (in its request, through
		// the endpoint) that it holds the old one only: the answer of an
		// earlier renewal never reached it. It is not counted as holding
		// the new root, so activation waits for it still.
		if _, cas := r.enrolHolding("east", []*x509.Certificate{oldRoot}); len(cas) != 2 {
			t.Fatalf("a renewal during prepare must return the old and the new root; got %d", len(cas))
		}
		if got := r.cluster("east").Status.LastTrustBundle; !slices.Equal(got, []string{signer.Fingerprint(oldRoot)}) {
			t.Fatalf("east reported the old root only, but lastTrustBundle = %v", got)
		}
		r.waitPhase(controller.ReasonActivateBlocked, "east", "west", "gone")
		// Its next request reports the bundle it received.
		_, cas := r.enrolHolding("east", []*x509.Certificate{oldRoot, newRoot})
		if !slices.Equal(fps(cas), fps([]*x509.Certificate{oldRoot, newRoot})) {
			t.Fatalf("a renewal during prepare must return the old and the new root; got %d", len(cas))
		}
		iss := r.waitPhase(controller.ReasonActivateBlocked, "west", "gone")
		if slices.Contains(iss.Status.RootRotation.WaitingFor, "east") {
			t.Fatalf("east holds the new root but is still named: %v", iss.Status.RootRotation.WaitingFor)
		}
		// Nothing moved: the signing root is still the old one.
		consistently(t, 3*time.Second, "the root Secret keeps the old root while activation is refused", func(ctx context.Context) (bool, string, error) {
			root := r.secretCerts("relay-root-tls-secret", "ca.crt")
			inter := r.secretCerts("relay-tls-signing-secret", "tls.crt")
			return root[0].Equal(oldRoot) && inter[0].Equal(oldInter), "", nil
		})
	})

	t.Run("a second rotation is refused while one runs", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "r2", Phase: relayv1.RootRotationPrepare})
		r.waitPhase(controller.ReasonRotationInProgress, `"r2" is refused`, `rotation "r1" is running`)
		r.setRotation(&relayv1.RootRotation{Name: "r1", Phase: relayv1.RootRotationActivate})
		r.waitPhase(controller.ReasonActivateBlocked, "west")
	})

	t.Run("activate re-issues the intermediate and the server certificate under the new root", func(t *testing.T) {
		r.enrol("west")
		patchRelayCluster(t, c, "gone", func(rc *relayv1.RelayCluster) { rc.Spec.Revoked = true })
		r.waitPhase(controller.ReasonActivated)
		inter := r.secretCerts("relay-tls-signing-secret", "tls.crt")
		server := r.secretCerts("relay-server-tls-secret", "tls.crt")
		if !verifies(inter, newRoot) || verifies(inter, oldRoot) {
			t.Fatal("the intermediate does not chain to the new root (alone)")
		}
		if !verifies(server, newRoot) {
			t.Fatal("the server certificate does not chain to the new root")
		}
		r.ready()
		// cert-manager re-issued the root it found in its Secret with the
		// same key (rotationPolicy Never): the new root's key signs.
		var reissued *x509.Certificate
		eventually(t, 60*time.Second, "cert-manager to re-issue the root with the new root's key", func(ctx context.Context) (bool, string, error) {
			got := r.secretCerts("relay-root-tls-secret", "tls.crt")[0]
			same, err := pki.PublicKeysEqual(got.PublicKey, newRoot.PublicKey)
			reissued = got
			return err == nil && same && !got.Equal(newRoot), fmt.Sprintf("serial %x, same key %v", got.SerialNumber, same), nil
		})
		// The old root stays in every bundle: leaves under it are still live.
		r.waitBundle(relayv1.TelemetryRootSecretName, oldRoot, newRoot, reissued)
	})

	t.Run("retire is refused while a cluster holds a leaf under the old root, naming it", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "r1", Phase: relayv1.RootRotationRetire})
		r.waitPhase(controller.ReasonRetireBlocked, "east", "west")
		chain, cas := r.enrol("east")
		if !verifies(chain, newRoot) || verifies(chain, oldRoot) {
			t.Fatal("a renewal after activation does not chain to the new root")
		}
		if len(cas) < 2 {
			t.Fatalf("before retire ca.crt keeps the old root; got %d certificates", len(cas))
		}
		// East may not have received that answer: until a later request
		// shows it did, east may hold its certificate from before the
		// activation, which chains to the old root alone.
		if rc := r.cluster("east"); !slices.Contains(rc.Status.LastCertificateRoots, signer.Fingerprint(newRoot)) ||
			slices.Contains(rc.Status.PreviousCertificateRoots, signer.Fingerprint(newRoot)) || rc.Status.PreviousCertificateNotAfter == nil {
			t.Fatalf("east's last certificate chains to the new root and the one before it to the old root alone; got last %v, previous %v (until %v)",
				rc.Status.LastCertificateRoots, rc.Status.PreviousCertificateRoots, rc.Status.PreviousCertificateNotAfter)
		}
		consistently(t, 3*time.Second, "retire to keep naming east after one renewal", func(ctx context.Context) (bool, string, error) {
			var iss relayv1.RelayIssuer
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: r.issuer}, &iss); err != nil {
				return false, err.Error(), nil
			}
			rr := iss.Status.RootRotation
			return rr != nil && slices.Contains(rr.WaitingFor, "east"), fmt.Sprintf("%+v", rr), nil
		})
		r.enrol("east")
		iss := r.waitPhase(controller.ReasonRetireBlocked, "west")
		if slices.Contains(iss.Status.RootRotation.WaitingFor, "east") {
			t.Fatalf("east moved but is still named: %v", iss.Status.RootRotation.WaitingFor)
		}
	})

	t.Run("retire removes the old root once no live leaf chains to it", func(t *testing.T) {
		r.enrol("west")
		r.waitPhase(controller.ReasonRetireBlocked, "west")
		r.enrol("west")
		r.waitPhase(controller.ReasonRetired)
		final := r.secretCerts("relay-root-tls-secret", "ca.crt")
		r.waitBundle(relayv1.DefaultTrustBundleSecretName, final...)
		r.waitBundle(relayv1.TelemetryRootSecretName, final...)
		for _, f := range final {
			if f.Equal(oldRoot) {
				t.Fatal("the old root is still in the root Secret")
			}
		}
		_, cas := r.enrol("east")
		for _, ca := range cas {
			if ca.Equal(oldRoot) {
				t.Fatal("a renewal after retire still returns the old root")
			}
		}
		eventually(t, 20*time.Second, "the new root's Certificate to be removed", func(ctx context.Context) (bool, string, error) {
			err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "relaytls-root-next"}, &cmapi.Certificate{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), nil
		})
		r.ready()
	})

	t.Run("a second rotation makes a new root again: the first one's requests are gone", func(t *testing.T) {
		// No garbage collector runs here, so only relay-issuer can have
		// removed relaytls-root-next's CertificateRequests; a leftover
		// relaytls-root-next-1 would block the new Certificate's first one.
		var crs cmapi.CertificateRequestList
		if err := c.Client.List(t.Context(), &crs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, cr := range crs.Items {
			if cr.Annotations[cmapi.CertificateNameKey] == "relaytls-root-next" {
				t.Fatalf("CertificateRequest %s of the first rotation's new root is left after retire", cr.Name)
			}
		}
		first := r.secretCerts("relay-root-tls-secret", "ca.crt")
		r.setRotation(&relayv1.RootRotation{Name: "r2", Phase: relayv1.RootRotationPrepare})
		waitCertificate(t, c, "relaytls-root-next")
		iss := r.waitPhase(controller.ReasonPreparing, "east", "west")
		next := r.secretCerts(relayv1.DefaultNewRootSecretName, "ca.crt")[0]
		if next.Equal(newRoot) || next.Equal(oldRoot) || iss.Status.RootRotation.NewRoot != signer.Fingerprint(next) {
			t.Fatalf("the second rotation's new root is not a new certificate (status newRoot %s)", iss.Status.RootRotation.NewRoot)
		}
		r.waitBundle(relayv1.DefaultTrustBundleSecretName, append(first, next)...)
	})
}

// TestRootRotationBringYourOwn rotates a bring-your-own root: a garbled new
// root Secret stops the rotation at prepare with the issuer Ready on the old
// root; a good one is prepared; activation waits for the user's intermediate
// under the new root.
func TestRootRotationBringYourOwn(t *testing.T) {
	c := startManagement(t)
	now := time.Now()
	oldRoot := testpki.Root(t, "user root 1")
	inter := testpki.Issue(t, oldRoot, testpki.Options{CommonName: "user intermediate 1", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)})
	createSecret(t, c, "relay-root-tls-secret", map[string][]byte{"ca.crt": oldRoot.CertPEM()})
	createSecret(t, c, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": oldRoot.CertPEM()})
	createSecret(t, c, "relay-identity-token-secret", map[string][]byte{"token": []byte(token)})
	createIssuer(t, c, "relay", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}, RequireRegistration: true})
	r := &rotation{t: t, c: c, issuer: "relay", token: token}
	r.ready()
	if err := c.Client.Create(t.Context(), &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "east"}}); err != nil {
		t.Fatal(err)
	}
	r.enrol("east")
	r.waitBundle(relayv1.DefaultTrustBundleSecretName, oldRoot.Cert)
	t.Run("telemetry-root-secret is left to the user in a bring-your-own install", func(t *testing.T) {
		consistently(t, 2*time.Second, "no telemetry-root-secret made", func(ctx context.Context) (bool, string, error) {
			err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: relayv1.TelemetryRootSecretName}, &corev1.Secret{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), nil
		})
	})

	t.Run("the rotation waits for the user's new root Secret, saying where", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "byo-1", Phase: relayv1.RootRotationPrepare})
		r.waitPhase(controller.ReasonNewRootPending, "place the new root CA certificate as ca.crt in Secret relaytls-system/relay-root-tls-secret-next")
	})
	t.Run("a garbled new root stops at prepare with the issuer Ready on the old root", func(t *testing.T) {
		createSecret(t, c, relayv1.DefaultNewRootSecretName, map[string][]byte{"ca.crt": []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")})
		r.waitPhase(controller.ReasonNewRootInvalid, "relay-root-tls-secret-next", "ca.crt is not a PEM certificate")
		r.ready()
		chain, cas := r.enrol("east")
		if len(cas) != 1 || !cas[0].Equal(oldRoot.Cert) || !verifies(chain, oldRoot.Cert) {
			t.Fatal("with a garbled new root the issuer must keep signing under, and handing out, the old root alone")
		}
		// Not a CA: refused too, with its own reason.
		leaf := testpki.Issue(t, oldRoot, testpki.Options{CommonName: "not a ca"})
		putSecret(t, c, relayv1.DefaultNewRootSecretName, map[string][]byte{"ca.crt": leaf.CertPEM()})
		r.waitPhase(controller.ReasonNewRootInvalid, "is not a CA")
		r.ready()
	})
	newRoot := testpki.Root(t, "user root 2")
	t.Run("a good new root is prepared and returned with renewals", func(t *testing.T) {
		putSecret(t, c, relayv1.DefaultNewRootSecretName, map[string][]byte{"ca.crt": newRoot.CertPEM()})
		r.waitPhase(controller.ReasonPreparing, "east")
		r.waitBundle(relayv1.DefaultTrustBundleSecretName, oldRoot.Cert, newRoot.Cert)
		_, cas := r.enrol("east")
		if !slices.Equal(fps(cas), fps([]*x509.Certificate{oldRoot.Cert, newRoot.Cert})) {
			t.Fatalf("ca.crt during prepare holds %d roots; want the old and the new", len(cas))
		}
		r.waitPhase(controller.ReasonPrepared)
	})
	t.Run("activation waits for the user's intermediate under the new root", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "byo-1", Phase: relayv1.RootRotationActivate})
		r.waitPhase(controller.ReasonActivating, "place an intermediate CA signed by the new root in Secret relaytls-system/relay-tls-signing-secret")
		inter2 := testpki.Issue(t, newRoot, testpki.Options{CommonName: "user intermediate 2", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)})
		putSecret(t, c, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter2.CertPEM(), "tls.key": inter2.KeyPEM(t), "ca.crt": newRoot.CertPEM()})
		r.waitPhase(controller.ReasonActivated, "still on the old root: east")
		r.ready()
		chain, _ := r.enrol("east")
		if !verifies(chain, newRoot.Cert) {
			t.Fatal("after activation the leaf does not chain to the new root")
		}
		// Until a later request, east may hold the certificate before
		// this one (the answer may have been lost): it is still named.
		r.waitPhase(controller.ReasonActivated, "still on the old root: east")
		r.enrol("east")
		r.waitPhase(controller.ReasonActivated, "every cluster has moved")
	})
	t.Run("retire finishes once the cluster moved; the user then points the root Secret at the new root", func(t *testing.T) {
		r.setRotation(&relayv1.RootRotation{Name: "byo-1", Phase: relayv1.RootRotationRetire})
		// The root Secret still names the old root: the bundle keeps what
		// the root Secret holds, so the user replaces it.
		putSecret(t, c, "relay-root-tls-secret", map[string][]byte{"ca.crt": newRoot.CertPEM()})
		r.waitPhase(controller.ReasonRetired)
		r.waitBundle(relayv1.DefaultTrustBundleSecretName, newRoot.Cert)
		r.ready()
	})
}
