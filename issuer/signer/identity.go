package signer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cert-manager/cert-manager/pkg/util/pki"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/policy"
)

// The inventory: relay-issuer reads RelayClusters and records enrollments on
// their status.
//
// +kubebuilder:rbac:groups=relaytls.io,resources=relayclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=relaytls.io,resources=relayclusters/status,verbs=get;patch;update

// ScopeOf is a CA-mode issuer's token scope (PerCluster when unset).
func ScopeOf(spec *relayv1.CAIssuerSpec) proof.Scope {
	if spec.TokenScope == relayv1.TokenScopeShared {
		return proof.ScopeShared
	}
	return proof.ScopePerCluster
}

// loadRoots reads the root tokens: the token key and, during a rotation, its
// ".previous" companion. A broken previous token is an error too: a rotation
// must not silently fall back to one token.
func (s *Signer) loadRoots(ctx context.Context, ns string, ref *relayv1.TokenSecretRef) ([]proof.Token, error) {
	name, key := tokenRef(ref)
	sec, err := s.getSecret(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	t, err := LoadToken(sec, key)
	if err != nil {
		return nil, err
	}
	roots := []proof.Token{t}
	if _, ok := sec.Data[key+".previous"]; ok {
		prev, err := LoadToken(sec, key+".previous")
		if err != nil {
			return nil, err
		}
		roots = append(roots, prev)
	}
	return roots, nil
}

// lookupCluster returns the cluster's RelayCluster in ns, or nil when it has
// none.
func (s *Signer) lookupCluster(ctx context.Context, ns, cluster string) (*relayv1.RelayCluster, error) {
	return s.readCluster(ctx, s.Client, ns, cluster)
}

// freshCluster is lookupCluster without the cache, when an APIReader is set.
func (s *Signer) freshCluster(ctx context.Context, ns, cluster string) (*relayv1.RelayCluster, error) {
	if s.APIReader == nil {
		return s.lookupCluster(ctx, ns, cluster)
	}
	return s.readCluster(ctx, s.APIReader, ns, cluster)
}

func (s *Signer) readCluster(ctx context.Context, r client.Reader, ns, cluster string) (*relayv1.RelayCluster, error) {
	var rc relayv1.RelayCluster
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: cluster}, &rc); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading RelayCluster %s/%s: %w", ns, cluster, err)
	}
	return &rc, nil
}

// admit applies the inventory rules of SPEC section 8 to a cluster: a revoked
// cluster is refused, and so is an unregistered one when the issuer requires
// registration. It returns the cluster's token generation.
func admit(rc *relayv1.RelayCluster, spec *relayv1.CAIssuerSpec, ns, cluster string) (int64, error) {
	if rc == nil {
		if spec.RequireRegistration {
			return 0, &policy.Refusal{Reason: policy.ReasonClusterNotRegistered, Message: fmt.Sprintf(
				"cluster %q is not registered: this issuer requires a RelayCluster %s/%s (relayctl register, or commit one)", cluster, ns, cluster)}
		}
		return proof.DefaultGeneration, nil
	}
	if rc.Spec.Revoked {
		return 0, &policy.Refusal{Reason: policy.ReasonClusterRevoked, Message: fmt.Sprintf(
			"cluster %q is revoked (RelayCluster %s/%s has spec.revoked: true)", cluster, ns, cluster)}
	}
	return rc.TokenGeneration(), nil
}

// VerifyIdentity checks, for a CA-mode issuer, that cluster may enrol with
// the CSR (DER) and identity proof presented: the inventory rules, then the
// proof with that cluster's keys. It returns a *policy.Refusal for a refused
// caller and another error when the issuer's material cannot be read. The
// issuance endpoint calls it before it creates anything; Sign calls it again.
func (s *Signer) VerifyIdentity(ctx context.Context, iss relayv1.RelayIssuerObject, cluster string, csrDER []byte, presented string) error {
	spec := iss.GetSpec().CA
	if spec == nil {
		return errors.New("the issuer is not a CA-mode issuer")
	}
	ns := SecretNamespace(iss, s.ClusterResourceNamespace)
	if err := policy.CheckCluster(cluster); err != nil {
		return err
	}
	rc, err := s.lookupCluster(ctx, ns, cluster)
	if err != nil {
		return err
	}
	gen, err := admit(rc, spec, ns, cluster)
	if err != nil {
		return err
	}
	if spec.TokenSecretRef == nil {
		return nil
	}
	roots, err := s.loadRoots(ctx, ns, spec.TokenSecretRef)
	if err != nil {
		return err
	}
	return policy.CheckClusterProof(policy.Identity{Scope: ScopeOf(spec), Roots: roots, Generation: gen}, cluster, csrDER, presented)
}

// chainRoots are the fingerprints of the roots of the CA's trust bundle that
// leaf chains to.
func chainRoots(leaf *x509.Certificate, ca *CA) []string {
	roots, err := pki.DecodeX509CertificateSetBytes(ca.RootPEM)
	if err != nil {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range ca.Chain {
		inter.AddCert(c)
	}
	var out []string
	for _, r := range roots {
		pool := x509.NewCertPool()
		pool.AddCert(r)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: leaf.NotBefore, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			out = append(out, Fingerprint(r))
		}
	}
	return out
}

// recordEnrollment writes the issued certificate's serial and expiry, and the
// trust bundle the cluster holds, on the cluster's RelayCluster. held is the
// bundle the cluster reported through the issuance endpoint (the
// relaytls.io/held-trust-bundle annotation): what it had when it asked. The
// bundle returned now counts only once a later request reports it, since
// the answer may never arrive (a cut connection, a timed-out call), and a
// root rotation that went ahead on what was merely sent would leave that
// cluster unable to verify the server. A request without a report (not
// through the endpoint, or an older remote issuer) records the bundle
// returned with it. The certificate it replaces moves to the previous*
// fields, with its roots and expiry: until a later request, the cluster may
// hold either. It is best effort: the certificate is issued either way, and
// a failure is returned for the caller to log.
func (s *Signer) recordEnrollment(ctx context.Context, ns, cluster string, leaf *x509.Certificate, ca *CA, held string) error {
	rc, err := s.freshCluster(ctx, ns, cluster)
	if err != nil || rc == nil {
		return err
	}
	base := rc.DeepCopy()
	now := metav1.NewTime(s.now())
	if serial := leaf.SerialNumber.Text(16); serial != rc.Status.LastCertificateSerial {
		rc.Status.PreviousCertificateSerial = rc.Status.LastCertificateSerial
		rc.Status.PreviousCertificateRoots = rc.Status.LastCertificateRoots
		rc.Status.PreviousCertificateNotAfter = rc.Status.LastCertificateNotAfter
		rc.Status.LastCertificateSerial = serial
	}
	rc.Status.LastCertificateNotAfter = &metav1.Time{Time: leaf.NotAfter}
	rc.Status.LastEnrollmentTime = &now
	if held != "" {
		rc.Status.LastTrustBundle = strings.Split(held, ",")
	} else {
		rc.Status.LastTrustBundle = Fingerprints(ca.RootPEM)
	}
	rc.Status.LastCertificateRoots = chainRoots(leaf, ca)
	meta.SetStatusCondition(&rc.Status.Conditions, metav1.Condition{
		Type: relayv1.ClusterConditionEnrolled, Status: metav1.ConditionTrue, Reason: "Issued",
		Message:            fmt.Sprintf("certificate serial %s issued, valid until %s", rc.Status.LastCertificateSerial, leaf.NotAfter.UTC().Format(time.RFC3339)),
		ObservedGeneration: rc.Generation,
	})
	if err := s.Client.Status().Patch(ctx, rc, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("recording the enrollment on RelayCluster %s/%s: %w", ns, cluster, err)
	}
	return nil
}
