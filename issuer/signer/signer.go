// Package signer holds the Check and Sign functions that issuer-lib calls for
// RelayIssuers and RelayClusterIssuers. In CA mode, Sign enforces every rule
// of SPEC section 5 before it signs, and Check reports whether the issuer's
// Secrets are usable and creates the token Secret when asked to. In remote
// mode, Sign proves the relay identity for the CSR and forwards it to the
// management cluster's issuance endpoint (remote.go).
package signer

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"
	"github.com/cert-manager/issuer-lib/controllers/signer"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/metrics"
	"github.com/relaytls/relaytls/issuer/policy"
)

// DefaultMaxDuration applies when an issuer's spec leaves maxDuration unset
// (the CRD defaults it to the same value).
const DefaultMaxDuration = 720 * time.Hour

// ConditionInvalidRequest is cert-manager's condition type for a request that
// will never be signed. A refusal sets it to True with the rule's reason.
const ConditionInvalidRequest = cmapi.CertificateRequestConditionInvalidRequest

// errSecretMissing marks a Secret that does not exist.
var errSecretMissing = errors.New("does not exist")

// Signer signs for CA-mode RelayIssuers and RelayClusterIssuers.
type Signer struct {
	// Client reads Secrets (from the manager's cache) and creates the token
	// Secret when an issuer asks for it.
	Client client.Client
	// APIReader, when set, reads a RelayCluster without the cache where a
	// stale copy would decide wrongly: the serials a renewal is checked
	// against, and the record written after an issuance.
	APIReader client.Reader
	// ClusterResourceNamespace holds the Secrets of RelayClusterIssuers.
	ClusterResourceNamespace string
	// SecretNamespaces are the namespaces whose Secrets relay-issuer may read
	// (its RBAC and cache cover no others). Empty means no restriction.
	SecretNamespaces []string
	// Clock is the time source for validity checks and certificate dates.
	Clock clock.PassiveClock
	// MaxRemoteCalls bounds the remote signing calls in flight at once
	// (DefaultMaxRemoteCalls when zero); more requests wait their turn.
	MaxRemoteCalls int
	// Recorder, when set, records an Event on the issuer when its token
	// Secret is created (never with the value).
	Recorder events.EventRecorder

	remoteOnce sync.Once
	remote     *remoteState

	possessionOnce sync.Once
	possession     *possessionState
}

// SecretNamespace is where an issuer's Secrets live.
func SecretNamespace(iss issuerapi.Issuer, clusterResourceNamespace string) string {
	if _, ok := iss.(*relayv1.RelayClusterIssuer); ok {
		return clusterResourceNamespace
	}
	return iss.GetNamespace()
}

func (s *Signer) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

func specOf(iss issuerapi.Issuer) (*relayv1.RelayIssuerSpec, error) {
	obj, ok := iss.(relayv1.RelayIssuerObject)
	if !ok {
		return nil, signer.PermanentError{Err: fmt.Errorf("unexpected issuer type %T", iss)}
	}
	spec := obj.GetSpec()
	if (spec.CA == nil) == (spec.Remote == nil) {
		return nil, signer.PermanentError{Err: errors.New("exactly one of spec.ca or spec.remote must be set")}
	}
	return spec, nil
}

func (s *Signer) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	if len(s.SecretNamespaces) > 0 && !slices.Contains(s.SecretNamespaces, namespace) {
		//lint:ignore ST1005 the message starts with the Kubernetes kind it names
		return nil, fmt.Errorf("Secret %s/%s is out of reach: relay-issuer reads Secrets only in namespace(s) %s; add %s to --secret-namespaces and grant it a Role",
			namespace, name, strings.Join(s.SecretNamespaces, ", "), namespace)
	}
	var sec corev1.Secret
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			//lint:ignore ST1005 the message starts with the Kubernetes kind it names
			return nil, fmt.Errorf("Secret %s/%s %w", namespace, name, errSecretMissing)
		}
		return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	return &sec, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func tokenRef(ref *relayv1.TokenSecretRef) (name, key string) {
	return orDefault(ref.Name, relayv1.DefaultTokenSecretName), orDefault(ref.Key, relayv1.DefaultTokenSecretKey)
}

// rotating reports whether an issuer has a root rotation declared or on
// record: only then does the published trust bundle join its root Secret.
func rotating(iss issuerapi.Issuer) bool {
	switch i := iss.(type) {
	case *relayv1.RelayIssuer:
		return i.Spec.CA != nil && (i.Spec.CA.RootRotation != nil || i.Status.RootRotation != nil)
	case *relayv1.RelayClusterIssuer:
		return i.Spec.CA != nil && (i.Spec.CA.RootRotation != nil || i.Status.RootRotation != nil)
	}
	return false
}

// loadCA reads and checks the signing and root Secrets of an issuer and,
// while it rotates its root, the published trust bundle.
func (s *Signer) loadCA(ctx context.Context, ns string, spec *relayv1.CAIssuerSpec, rotating bool) (*CA, error) {
	signing, err := s.getSecret(ctx, ns, orDefault(spec.SigningSecretName, relayv1.DefaultSigningSecretName))
	if err != nil {
		return nil, err
	}
	root, err := s.getSecret(ctx, ns, orDefault(spec.RootSecretName, relayv1.DefaultRootSecretName))
	if err != nil {
		return nil, err
	}
	if !rotating {
		return LoadCA(signing, root, s.now())
	}
	bundle, err := s.getSecret(ctx, ns, TrustBundleSecretName(spec))
	if errors.Is(err, errSecretMissing) {
		bundle, err = nil, nil // not published yet: the root Secret alone
	}
	if err != nil {
		return nil, err
	}
	return LoadCAWithBundle(signing, root, bundle, s.now())
}

func (s *Signer) loadTokens(ctx context.Context, ns string, spec *relayv1.CAIssuerSpec) ([]proof.Token, error) {
	return s.loadRoots(ctx, ns, spec.TokenSecretRef)
}

// Check reports whether the issuer can sign: its signing and root Secrets are
// usable and, when it requires proofs, its token Secret holds a token. With
// generateToken it first creates a missing token Secret. Errors are
// retryable: the issuer watches its Secrets and is checked again when one
// changes.
func (s *Signer) Check(ctx context.Context, iss issuerapi.Issuer) error {
	full, err := specOf(iss)
	if err != nil {
		return err
	}
	ns := SecretNamespace(iss, s.ClusterResourceNamespace)
	if full.Remote != nil {
		return s.checkRemote(ctx, types.NamespacedName{Namespace: iss.GetNamespace(), Name: iss.GetName()}, ns, full.Remote)
	}
	spec := full.CA
	if spec.TokenSecretRef != nil && spec.GenerateToken {
		created, err := s.ensureToken(ctx, ns, spec.TokenSecretRef)
		if err != nil {
			return err
		}
		if created && s.Recorder != nil {
			s.tokenCreatedEvent(ctx, iss, ns, spec.TokenSecretRef)
		}
	}
	if err := s.markScope(ctx, iss, spec); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "setting the TokenScopeShared condition")
	}
	if _, err := s.loadCA(ctx, ns, spec, rotating(iss)); err != nil {
		return err
	}
	if spec.TokenSecretRef != nil {
		if _, err := s.loadTokens(ctx, ns, spec); err != nil {
			return err
		}
	}
	return nil
}

// tokenCreatedEvent records that the token Secret was created. When
// clusters are already registered in the namespace the Secret was deleted
// and made again: every cluster token was derived from the old root token,
// so each registered cluster is refused until it gets its new token; that
// is a Warning saying so (the value is never shown).
func (s *Signer) tokenCreatedEvent(ctx context.Context, iss issuerapi.Issuer, ns string, ref *relayv1.TokenSecretRef) {
	name, _ := tokenRef(ref)
	var clusters relayv1.RelayClusterList
	if err := s.Client.List(ctx, &clusters, client.InNamespace(ns)); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing RelayClusters to tell a created token Secret from a re-created one")
	}
	if n := len(clusters.Items); n > 0 {
		s.Recorder.Eventf(iss, nil, corev1.EventTypeWarning, "TokenSecretRecreated", "CreateTokenSecret",
			"the relay identity token Secret %s/%s was missing and has been re-created with a new random root token (value not shown): "+
				"the %d registered cluster(s) hold tokens derived from the old one and are refused until each gets its new token (relayctl register --secrets-only)",
			ns, name, n)
		return
	}
	s.Recorder.Eventf(iss, nil, corev1.EventTypeNormal, "TokenSecretCreated", "CreateTokenSecret",
		"created the relay identity token Secret %s/%s with a new random root token (value not shown)", ns, name)
}

// ensureToken creates the token Secret when it does not exist. It never
// updates an existing Secret: a lost race to create it is success.
func (s *Signer) ensureToken(ctx context.Context, ns string, ref *relayv1.TokenSecretRef) (bool, error) {
	name, key := tokenRef(ref)
	_, err := s.getSecret(ctx, ns, name)
	if !errors.Is(err, errSecretMissing) {
		return false, err // nil when the Secret exists: it is never touched
	}
	tok, err := proof.GenerateToken()
	if err != nil {
		return false, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      name,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "relay-issuer"},
			Annotations: map[string]string{
				"relaytls.io/generated": "true",
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{key: tok},
	}
	if err := s.Client.Create(ctx, sec); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		return false, fmt.Errorf("creating the relay identity token Secret %s/%s: %w", ns, name, err)
	}
	return true, nil
}

// markScope keeps the TokenScopeShared warning condition on a CA-mode
// issuer in step with its tokenScope. It patches only when the condition
// must change, so issuer-lib's Ready condition is left alone.
func (s *Signer) markScope(ctx context.Context, iss issuerapi.Issuer, spec *relayv1.CAIssuerSpec) error {
	shared := ScopeOf(spec) == proof.ScopeShared
	cur := meta.FindStatusCondition(iss.GetConditions(), relayv1.IssuerConditionTokenScopeShared)
	if (shared && cur != nil && cur.Status == metav1.ConditionTrue) || (!shared && cur == nil) {
		return nil
	}
	conds := statusConditions(iss)
	if conds == nil {
		return nil
	}
	base := iss.DeepCopyObject().(client.Object)
	if shared {
		meta.SetStatusCondition(conds, metav1.Condition{Type: relayv1.IssuerConditionTokenScopeShared, Status: metav1.ConditionTrue,
			Reason: "SharedToken", ObservedGeneration: iss.GetGeneration(),
			Message: "tokenScope is Shared: every workload cluster holds the same token, and any holder can claim any cluster name; use PerCluster"})
	} else {
		meta.RemoveStatusCondition(conds, relayv1.IssuerConditionTokenScopeShared)
	}
	return s.Client.Status().Patch(ctx, iss, client.MergeFrom(base))
}

func statusConditions(iss issuerapi.Issuer) *[]metav1.Condition {
	switch i := iss.(type) {
	case *relayv1.RelayIssuer:
		return &i.Status.Conditions
	case *relayv1.RelayClusterIssuer:
		return &i.Status.Conditions
	}
	return nil
}

// refused turns a policy refusal into a permanent failure that also sets the
// request's InvalidRequest condition with the rule's reason.
func refused(r *policy.Refusal) error {
	metrics.Requests.WithLabelValues("refused", r.Reason).Inc()
	return signer.PermanentError{Err: signer.SetCertificateRequestConditionError{
		Err:           r,
		ConditionType: ConditionInvalidRequest,
		Status:        cmmeta.ConditionTrue,
		Reason:        r.Reason,
	}}
}

func asRefusal(err error) error {
	var r *policy.Refusal
	if errors.As(err, &r) {
		return refused(r)
	}
	return err
}

// Sign signs a CertificateRequest after checking the identity proof and the
// policy. A broken Secret is an IssuerError (the issuer turns not Ready and the
// request waits); a refused request fails permanently with its reason.
func (s *Signer) Sign(ctx context.Context, cr signer.CertificateRequestObject, iss issuerapi.Issuer) (signer.PEMBundle, error) {
	full, err := specOf(iss)
	if err != nil {
		return signer.PEMBundle{}, err
	}
	ns := SecretNamespace(iss, s.ClusterResourceNamespace)
	if full.Remote != nil {
		return s.signRemote(ctx, cr, types.NamespacedName{Namespace: iss.GetNamespace(), Name: iss.GetName()}, ns, full.Remote)
	}
	spec := full.CA

	ca, err := s.loadCA(ctx, ns, spec, rotating(iss))
	if err != nil {
		return signer.PEMBundle{}, signer.IssuerError{Err: err}
	}
	if spec.TokenSecretRef != nil {
		if _, err := s.loadTokens(ctx, ns, spec); err != nil {
			return signer.PEMBundle{}, signer.IssuerError{Err: err}
		}
	}

	details, err := cr.GetCertificateDetails()
	if err != nil {
		return signer.PEMBundle{}, refused(&policy.Refusal{Reason: policy.ReasonInvalidCSR, Message: fmt.Sprintf("the request's usages are invalid: %v", err)})
	}
	annotations := cr.GetAnnotations()
	cluster := annotations[relayv1.ClusterAnnotation]
	if err := policy.CheckCluster(cluster); err != nil {
		return signer.PEMBundle{}, asRefusal(err)
	}
	block, _ := pem.Decode(details.CSR)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return signer.PEMBundle{}, refused(&policy.Refusal{Reason: policy.ReasonInvalidCSR, Message: "the request does not hold a PEM CERTIFICATE REQUEST"})
	}
	csr, err := policy.ParseCSR(block.Bytes)
	if err != nil {
		return signer.PEMBundle{}, asRefusal(err)
	}
	// The inventory (registered, not revoked) and the proof, checked with
	// the keys of the annotated cluster only, or the endpoint's attestation
	// of a renewal by possession (possession.go).
	use, err := s.verifyRequest(ctx, iss.(relayv1.RelayIssuerObject), cr, cluster, block.Bytes)
	if err != nil {
		var r *policy.Refusal
		if errors.As(err, &r) {
			return signer.PEMBundle{}, refused(r)
		}
		return signer.PEMBundle{}, signer.IssuerError{Err: err}
	}
	if err := policy.CheckRequest(policy.Request{
		Cluster:     cluster,
		CSR:         csr,
		IsCA:        details.IsCA,
		KeyUsage:    details.KeyUsage,
		ExtKeyUsage: details.ExtKeyUsage,
	}, spec.TrustDomain); err != nil {
		return signer.PEMBundle{}, asRefusal(err)
	}

	bundle, leaf, err := s.issue(csr, details, spec, ca)
	if err != nil {
		return bundle, err
	}
	if use != nil {
		// A single-use token is used up before its certificate is handed
		// out; if that fails, the certificate is dropped.
		if err := s.useToken(ctx, use); err != nil {
			return signer.PEMBundle{}, asRefusal(err)
		}
	}
	if err := s.recordEnrollment(ctx, ns, cluster, leaf, ca, cr.GetAnnotations()[relayv1.HeldTrustBundleAnnotation]); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "the certificate was issued but the inventory was not updated", "cluster", cluster)
	}
	return bundle, nil
}

func (s *Signer) issue(csr *x509.CertificateRequest, details signer.CertificateDetails, spec *relayv1.CAIssuerSpec, ca *CA) (signer.PEMBundle, *x509.Certificate, error) {
	maxDuration := DefaultMaxDuration
	if spec.MaxDuration != nil && spec.MaxDuration.Duration > 0 {
		maxDuration = spec.MaxDuration.Duration
	}
	// A request's duration is positive (cert-manager defaults a missing one);
	// a non-positive one is refused, never wrapped into a date in the past.
	if details.Duration <= 0 {
		return signer.PEMBundle{}, nil, refused(&policy.Refusal{Reason: policy.ReasonInvalidDuration,
			Message: fmt.Sprintf("the requested duration %s is not positive", details.Duration)})
	}
	duration := min(details.Duration, maxDuration)
	now := s.now()
	// The template is built from the checked fields alone; nothing of the CSR
	// is copied that the policy did not look at.
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: csr.Subject.CommonName},
		DNSNames:              csr.DNSNames,
		URIs:                  csr.URIs,
		PublicKey:             csr.PublicKey,
		PublicKeyAlgorithm:    csr.PublicKeyAlgorithm,
		BasicConstraintsValid: true,
		IsCA:                  false,
		NotBefore:             now,
		NotAfter:              now.Add(duration),
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	if !tmpl.NotAfter.After(tmpl.NotBefore) {
		return signer.PEMBundle{}, nil, refused(&policy.Refusal{Reason: policy.ReasonInvalidDuration,
			Message: fmt.Sprintf("the certificate would not be valid for any time: it would start at %s and end at %s (the signing CA expires at %s)",
				tmpl.NotBefore.UTC().Format(time.RFC3339), tmpl.NotAfter.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))})
	}
	// cert-manager's check that usages embedded in the CSR agree with the
	// request's; it compares what the CSR encodes (put on the template first)
	// and then sets the template's usages to the request's.
	if err := copyCSRUsages(csr, tmpl); err != nil {
		return signer.PEMBundle{}, nil, refused(&policy.Refusal{Reason: policy.ReasonInvalidCSR, Message: fmt.Sprintf("the CSR's usage extensions do not parse: %v", err)})
	}
	if err := pki.CertificateTemplateValidateAndOverrideKeyUsages(details.KeyUsage, details.ExtKeyUsage)(csr, tmpl); err != nil {
		return signer.PEMBundle{}, nil, refused(&policy.Refusal{Reason: policy.ReasonInvalidCSR, Message: fmt.Sprintf("the CSR does not agree with the request: %v", err)})
	}
	_, leaf, err := pki.SignCertificate(tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return signer.PEMBundle{}, nil, fmt.Errorf("signing the certificate: %w", err)
	}
	chainPEM, err := pki.EncodeX509Chain(append([]*x509.Certificate{leaf}, ca.Chain...))
	if err != nil {
		return signer.PEMBundle{}, nil, fmt.Errorf("encoding the certificate chain: %w", err)
	}
	metrics.Requests.WithLabelValues("signed", "").Inc()
	return signer.PEMBundle{ChainPEM: chainPEM, CAPEM: ca.RootPEM}, leaf, nil
}

// SecretNames lists the Secrets an issuer spec refers to, defaults applied.
func SecretNames(spec *relayv1.RelayIssuerSpec) []string {
	switch {
	case spec.CA != nil:
		names := []string{
			orDefault(spec.CA.SigningSecretName, relayv1.DefaultSigningSecretName),
			orDefault(spec.CA.RootSecretName, relayv1.DefaultRootSecretName),
			TrustBundleSecretName(spec.CA),
		}
		if n := NewRootSecretName(spec.CA); n != "" {
			names = append(names, n)
		}
		if spec.CA.TokenSecretRef != nil {
			n, _ := tokenRef(spec.CA.TokenSecretRef)
			names = append(names, n)
		}
		return names
	case spec.Remote != nil:
		names := []string{orDefault(spec.Remote.TrustBundleSecretName, relayv1.DefaultRootSecretName)}
		n := relayv1.DefaultTokenSecretName
		if spec.Remote.TokenSecretRef != nil {
			n, _ = tokenRef(spec.Remote.TokenSecretRef)
		}
		// The client Secret decides whether a cluster without a token can
		// renew by possession (renewal.go).
		return append(names, n, DefaultClientSecretName)
	}
	return nil
}

// copyCSRUsages puts the key usages a CSR encodes on the template.
func copyCSRUsages(csr *x509.CertificateRequest, tmpl *x509.Certificate) error {
	for _, e := range csr.Extensions {
		switch {
		case e.Id.Equal(pki.OIDExtensionKeyUsage):
			ku, err := pki.UnmarshalKeyUsage(e.Value)
			if err != nil {
				return err
			}
			tmpl.KeyUsage = ku
		case e.Id.Equal(pki.OIDExtensionExtendedKeyUsage):
			eku, unknown, err := pki.UnmarshalExtKeyUsage(e.Value)
			if err != nil {
				return err
			}
			tmpl.ExtKeyUsage, tmpl.UnknownExtKeyUsage = eku, unknown
		}
	}
	return nil
}
