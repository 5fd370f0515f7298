package signer

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"
	"github.com/cert-manager/issuer-lib/controllers/signer"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/policy"
)

// A single-use token is used up by advancing the RelayCluster's
// tokenGeneration, so relay-issuer patches RelayClusters.
//
// +kubebuilder:rbac:groups=relaytls.io,resources=relayclusters,verbs=patch

// Renewal by proof of possession (SPEC section 4), management side. The
// issuance endpoint verifies the client certificate a workload cluster
// presents over mTLS (VerifyPossession) and puts its serial and an
// attestation made with the root token on the CertificateRequest it
// creates; Sign accepts such a request for that cluster only, after
// checking the attestation and the inventory again.

// VerifyPossession checks a renewal call of cluster that presented chain
// (leaf first) over mTLS and asks for csrDER to be signed by the CA-mode
// issuer iss: the leaf is a valid relay client certificate now (explicit
// client auth usage, not a CA, within its dates) that chains to the issuer's
// root, its identity and the CSR's are the named cluster, and the cluster is
// registered (when required) and not revoked. It returns the leaf's serial
// (hex) and the attestation for the CertificateRequest. A refused call gets
// a *policy.Refusal; any other error means the check could not be made.
func (s *Signer) VerifyPossession(ctx context.Context, iss issuerapi.Issuer, cluster string, csrDER []byte, chain []*x509.Certificate) (serial, attestation string, err error) {
	full, err := specOf(iss)
	if err != nil {
		return "", "", err
	}
	spec := full.CA
	if spec == nil || spec.TokenSecretRef == nil {
		return "", "", errors.New("the issuer does not check identity proofs (it needs spec.ca.tokenSecretRef)")
	}
	if err := policy.CheckCluster(cluster); err != nil {
		return "", "", err
	}
	if len(chain) == 0 {
		return "", "", &policy.Refusal{Reason: policy.ReasonRenewalCertificateInvalid, Message: "a renewal without a token proof must present the cluster's current client certificate over mTLS; none was presented"}
	}
	ns := SecretNamespace(iss, s.ClusterResourceNamespace)
	ca, err := s.loadCA(ctx, ns, spec, rotating(iss))
	if err != nil {
		return "", "", err
	}
	roots, err := pki.DecodeX509CertificateSetBytes(ca.RootPEM)
	if err != nil {
		return "", "", fmt.Errorf("the issuer's root bundle: %w", err)
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	leaf := chain[0]
	serial = leaf.SerialNumber.Text(16)
	// The intermediates the caller sent and the issuer's own chain: a
	// certificate issued before the intermediate was renewed still chains
	// through what it presents, as long as that reaches the issuer's root.
	certs := append(append([]*x509.Certificate{}, chain...), ca.Chain...)
	id, err := access.VerifyClient(certs, rootPool, s.now())
	if err != nil {
		return "", "", &policy.Refusal{Reason: policy.ReasonRenewalCertificateInvalid, Message: "the presented client certificate cannot renew: " + err.Error()}
	}
	if id != cluster || len(leaf.DNSNames) != 1 || (leaf.Subject.CommonName != "" && leaf.Subject.CommonName != cluster) {
		return "", "", &policy.Refusal{Reason: policy.ReasonRenewalIdentityMismatch, Message: fmt.Sprintf(
			"the presented client certificate (serial %s) is for %s, not for cluster %q: a certificate renews its own cluster only", serial, describeIdentity(leaf), cluster)}
	}
	csr, err := policy.ParseCSR(csrDER)
	if err != nil {
		return "", "", err
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != cluster {
		return "", "", &policy.Refusal{Reason: policy.ReasonRenewalIdentityMismatch, Message: fmt.Sprintf(
			"the new CSR names %v, but the presented certificate (serial %s) renews cluster %q only", csr.DNSNames, serial, cluster)}
	}
	rc, err := s.lookupCluster(ctx, ns, cluster)
	if err != nil {
		return "", "", err
	}
	if _, err := admit(rc, spec, ns, cluster); err != nil {
		return "", "", err
	}
	if err := s.checkCurrent(ctx, rc, ns, cluster, serial); err != nil {
		return "", "", err
	}
	rootTokens, err := s.loadRoots(ctx, ns, spec.TokenSecretRef)
	if err != nil {
		return "", "", err
	}
	return serial, proof.RenewalAttestation(rootTokens[0], cluster, serial, csrDER), nil
}

// current refuses a renewal from a certificate that is neither the
// cluster's last one nor the one before it (kept because the answer of its
// renewal may have been lost): a copy of an old certificate and key, from a
// backup or a node long gone, renews nothing. A cluster with no recorded
// certificate (none issued since the inventory began) is not checked.
func current(rc *relayv1.RelayCluster, cluster, serial string) error {
	if rc == nil || rc.Status.LastCertificateSerial == "" || serial == rc.Status.LastCertificateSerial || serial == rc.Status.PreviousCertificateSerial {
		return nil
	}
	return &policy.Refusal{Reason: policy.ReasonRenewalCertificateSuperseded, Message: fmt.Sprintf(
		"the presented client certificate (serial %s) has been renewed since: cluster %q's current certificate is serial %s, and only it or the one before it renews; an older copy renewing is not expected (if the cluster lost its certificate, enrol it again with its token)",
		serial, cluster, rc.Status.LastCertificateSerial)}
}

// checkCurrent is current, with a refusal confirmed against the API server
// (the cache may not have the last renewal's record yet).
func (s *Signer) checkCurrent(ctx context.Context, rc *relayv1.RelayCluster, ns, cluster, serial string) error {
	err := current(rc, cluster, serial)
	if err == nil || s.APIReader == nil {
		return err
	}
	fresh, ferr := s.freshCluster(ctx, ns, cluster)
	if ferr != nil {
		return ferr
	}
	return current(fresh, cluster, serial)
}

// previousRenews records a Warning Event when a cluster renews from the
// certificate before its last one: the last renewal's answer was lost, or
// a second party holds the cluster's certificate and key. Repeated, it is
// the second.
func (s *Signer) previousRenews(rc *relayv1.RelayCluster, serial string) {
	if s.Recorder == nil || rc == nil || rc.Status.LastCertificateSerial == "" || serial == rc.Status.LastCertificateSerial {
		return
	}
	s.Recorder.Eventf(rc, nil, corev1.EventTypeWarning, "RenewalFromPreviousCertificate", "RenewByPossession",
		"certificate serial %s renews again, although it was already renewed as serial %s: that answer was lost, or a second party holds the cluster's certificate and key; if this repeats, revoke the cluster and register it again",
		serial, rc.Status.LastCertificateSerial)
}

func describeIdentity(leaf *x509.Certificate) string {
	parts := []string{}
	if len(leaf.DNSNames) > 0 {
		parts = append(parts, "DNS names ["+strings.Join(leaf.DNSNames, ", ")+"]")
	}
	if cn := leaf.Subject.CommonName; cn != "" {
		parts = append(parts, fmt.Sprintf("common name %q", cn))
	}
	if len(parts) == 0 {
		return "no identity"
	}
	return strings.Join(parts, " and ")
}

// tokenUse is a single-use token that a request was verified with; it is
// used up (the cluster's generation advanced) before the certificate is
// returned.
type tokenUse struct {
	rc         *relayv1.RelayCluster
	generation int64
	request    types.UID
}

// verifyRequest checks the identity of a request for a CA-mode issuer: a
// renewal the endpoint attested (relaytls.io/renewal-of), or a token proof.
// For a token proof of a single-use cluster it returns the use to record.
func (s *Signer) verifyRequest(ctx context.Context, iss relayv1.RelayIssuerObject, cr signer.CertificateRequestObject, cluster string, csrDER []byte) (*tokenUse, error) {
	ann := cr.GetAnnotations()
	spec := iss.GetSpec().CA
	ns := SecretNamespace(iss, s.ClusterResourceNamespace)
	if serial, ok := ann[relayv1.RenewalOfAnnotation]; ok {
		return nil, s.verifyRenewal(ctx, spec, ns, cluster, serial, csrDER, ann[relayv1.RenewalAttestationAnnotation])
	}
	presented := ann[relayv1.IdentityProofAnnotation]
	rc, err := s.lookupCluster(ctx, ns, cluster)
	if err != nil {
		return nil, err
	}
	singleUse := rc != nil && rc.Spec.SingleUseToken && spec.TokenSecretRef != nil && ScopeOf(spec) == proof.ScopePerCluster
	if singleUse && !rc.Spec.Revoked {
		// A retry of the very request that used the token (its certificate
		// was made but not stored) is checked with the generation it used.
		if gen, uid, ok := parseTokenUsedBy(rc.Annotations[relayv1.TokenUsedByAnnotation]); ok && uid == cr.GetUID() && gen == rc.TokenGeneration()-1 {
			roots, err := s.loadRoots(ctx, ns, spec.TokenSecretRef)
			if err != nil {
				return nil, err
			}
			return nil, policy.CheckClusterProof(policy.Identity{Scope: proof.ScopePerCluster, Roots: roots, Generation: gen}, cluster, csrDER, presented)
		}
	}
	if err := s.VerifyIdentity(ctx, iss, cluster, csrDER, presented); err != nil {
		return nil, err
	}
	if !singleUse {
		return nil, nil
	}
	return &tokenUse{rc: rc, generation: rc.TokenGeneration(), request: cr.GetUID()}, nil
}

// verifyRenewal checks a request the endpoint made for a renewal by
// possession: the inventory rules and the endpoint's attestation.
func (s *Signer) verifyRenewal(ctx context.Context, spec *relayv1.CAIssuerSpec, ns, cluster, serial string, csrDER []byte, attestation string) error {
	rc, err := s.lookupCluster(ctx, ns, cluster)
	if err != nil {
		return err
	}
	if _, err := admit(rc, spec, ns, cluster); err != nil {
		return err
	}
	if spec.TokenSecretRef != nil {
		roots, err := s.loadRoots(ctx, ns, spec.TokenSecretRef)
		if err != nil {
			return err
		}
		if err := proof.VerifyRenewalAttestation(roots, cluster, serial, csrDER, attestation); err != nil {
			return &policy.Refusal{Reason: policy.ReasonRenewalCertificateInvalid, Message: fmt.Sprintf(
				"the request claims a renewal of certificate %s (relaytls.io/renewal-of) for cluster %q but carries no valid attestation of the issuance endpoint; renewals by possession are made through the endpoint only", serial, cluster)}
		}
	}
	if err := s.checkCurrent(ctx, rc, ns, cluster, serial); err != nil {
		return err
	}
	s.previousRenews(rc, serial)
	return nil
}

func parseTokenUsedBy(v string) (int64, types.UID, bool) {
	g, uid, ok := strings.Cut(v, "/")
	if !ok || uid == "" {
		return 0, "", false
	}
	gen, err := strconv.ParseInt(g, 10, 64)
	if err != nil || gen < 1 {
		return 0, "", false
	}
	return gen, types.UID(uid), true
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// useToken uses up a single-use token: the cluster's tokenGeneration moves
// from the generation the request was verified with to the next, in one
// compare-and-swap patch (a JSON patch test), so two requests that raced
// with the same token cannot both succeed. The request is recorded in the
// token-used-by annotation. A lost race is a StaleTokenGeneration refusal;
// any other failure is retried.
func (s *Signer) useToken(ctx context.Context, u *tokenUse) error {
	next := u.generation + 1
	usedBy := fmt.Sprintf("%d/%s", u.generation, u.request)
	ops := []jsonPatchOp{
		{Op: "test", Path: "/spec/tokenGeneration", Value: u.generation},
		{Op: "add", Path: "/spec/tokenGeneration", Value: next},
	}
	annPath := "/metadata/annotations/" + strings.ReplaceAll(relayv1.TokenUsedByAnnotation, "/", "~1")
	if u.rc.Annotations == nil {
		// Adding the whole map is safe only if no annotation appeared since
		// the cached read.
		ops = append(ops,
			jsonPatchOp{Op: "test", Path: "/metadata/resourceVersion", Value: u.rc.ResourceVersion},
			jsonPatchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{relayv1.TokenUsedByAnnotation: usedBy}})
	} else {
		ops = append(ops, jsonPatchOp{Op: "add", Path: annPath, Value: usedBy})
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	rc := u.rc.DeepCopy()
	err = s.Client.Patch(ctx, rc, client.RawPatch(types.JSONPatchType, data))
	switch {
	case err == nil:
	case apierrors.IsInvalid(err) || apierrors.IsConflict(err):
		if u.rc.Annotations == nil {
			// The resourceVersion test may have failed on an unrelated
			// write; let the request be tried again with a fresh read.
			return fmt.Errorf("RelayCluster %s/%s changed while its single-use token was being used up; retrying", rc.Namespace, rc.Name)
		}
		return &policy.Refusal{Reason: policy.ReasonStaleTokenGeneration, Message: fmt.Sprintf(
			"the single-use token of generation %d of cluster %q was used by another request at the same time; give the cluster its new token (relayctl token --cluster %s)", u.generation, rc.Name, rc.Name)}
	default:
		return fmt.Errorf("using up the single-use token of cluster %q (advancing RelayCluster %s/%s to tokenGeneration %d): %w", rc.Name, rc.Namespace, rc.Name, next, err)
	}
	ctrl.LoggerFrom(ctx).Info("single-use token used; token generation advanced", "cluster", rc.Name, "tokenGeneration", next)
	if s.Recorder != nil {
		s.Recorder.Eventf(rc, nil, corev1.EventTypeNormal, "TokenGenerationAdvanced", "UseSingleUseToken",
			"the single-use token of generation %d enrolled the cluster; tokenGeneration is now %d, so that token is no longer accepted: the cluster renews by possession of its client certificate, and re-enrols after a lapse with its new token (relayctl token --cluster %s)",
			u.generation, next, rc.Name)
	}
	return nil
}
