package controller

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/issuer/signer"
)

// What the trust bundle and the root rotation need. relay-issuer updates
// only the Secrets it publishes (the trust bundle, telemetry-root-secret),
// the root Secret when a self-signed rotation activates, and the workload
// cluster's trust bundle (relay-root-tls-secret there) from what its
// renewals return. It reads cert-manager Certificates and Issuers directly
// (no watch), creates and deletes the new root's Certificate, and triggers
// the re-issuance of the certificates under the root (as cmctl renew does).
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=update;patch,resourceNames=relay-trust-bundle;telemetry-root-secret;relay-root-tls-secret,namespace=relaytls-system
// +kubebuilder:rbac:groups="",resources=secrets,verbs=delete,resourceNames=relay-root-tls-secret-next,namespace=relaytls-system
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;create;delete,namespace=relaytls-system
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates/status,verbs=patch,namespace=relaytls-system
// +kubebuilder:rbac:groups=cert-manager.io,resources=issuers,verbs=get;list,namespace=relaytls-system

// RotationFieldOwner owns the RootRotation condition and status.rootRotation
// (server-side apply), apart from issuer-lib's Ready condition.
const RotationFieldOwner = "relaytls.io/relay-issuer-root-rotation"

// Reasons of the RootRotation condition.
const (
	ReasonRotationInProgress = "RotationInProgress"
	ReasonNewRootPending     = "NewRootPending"
	ReasonNewRootInvalid     = "NewRootInvalid"
	ReasonPreparing          = "Preparing"
	ReasonPrepared           = "Prepared"
	ReasonActivateBlocked    = "ActivateBlocked"
	ReasonActivating         = "Activating"
	ReasonActivated          = "Activated"
	ReasonRetireBlocked      = "RetireBlocked"
	ReasonRetired            = "Retired"
	ReasonRotationUnfinished = "RotationUnfinished"
	ReasonPhaseNotReversible = "PhaseNotReversible"
)

// Sources of a new root.
const (
	SourceCertManager = "CertManager"
	SourceUser        = "User"
)

// certificateNameAnnotation is what cert-manager puts on a Secret it writes
// for a Certificate.
const certificateNameAnnotation = "cert-manager.io/certificate-name"

// managedBy labels the Secrets and Certificates relay-issuer made.
func managedBy() map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "relay-issuer"}
}

// pollInterval is how often a rotation that waits on cert-manager or on the
// clusters is looked at again, besides the watches.
const pollInterval = 2 * time.Second

// RootTrust keeps, for each CA-mode issuer of one kind, the trust bundle
// Secret (and, in the self-signed modes, telemetry-root-secret) current, and
// drives the declared root rotation through its phases.
type RootTrust struct {
	Client client.Client
	// APIReader reads cert-manager objects without a cache (relay-issuer has
	// no watch on them).
	APIReader client.Reader
	// Kind is RelayIssuer or RelayClusterIssuer.
	Kind                     string
	ClusterResourceNamespace string
	Namespaces               []string
	Clock                    clock.PassiveClock
}

func (r *RootTrust) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// SetupWithManager registers the controller.
func (r *RootTrust) SetupWithManager(mgr ctrl.Manager, tune Tuning) error {
	var obj client.Object = &relayv1.RelayIssuer{}
	if r.Kind == "RelayClusterIssuer" {
		obj = &relayv1.RelayClusterIssuer{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("root-trust-"+strings.ToLower(r.Kind)).
		For(obj).
		WithOptions(tune.controllerOptions()).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(issuersForSecret(mgr.GetClient(), r.Kind, r.ClusterResourceNamespace))).
		Watches(&relayv1.RelayCluster{}, handler.EnqueueRequestsFromMapFunc(r.issuersForCluster)).
		Complete(r)
}

// issuersForCluster maps a RelayCluster to the CA-mode issuers whose Secret
// namespace it is in.
func (r *RootTrust) issuersForCluster(ctx context.Context, o client.Object) []reconcile.Request {
	var out []reconcile.Request
	switch r.Kind {
	case "RelayIssuer":
		var l relayv1.RelayIssuerList
		if err := r.Client.List(ctx, &l, client.InNamespace(o.GetNamespace())); err != nil {
			return nil
		}
		for _, iss := range l.Items {
			if iss.Spec.CA != nil {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: iss.Namespace, Name: iss.Name}})
			}
		}
	case "RelayClusterIssuer":
		if o.GetNamespace() != r.ClusterResourceNamespace {
			return nil
		}
		var l relayv1.RelayClusterIssuerList
		if err := r.Client.List(ctx, &l); err != nil {
			return nil
		}
		for _, iss := range l.Items {
			if iss.Spec.CA != nil {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: iss.Name}})
			}
		}
	}
	return out
}

func (r *RootTrust) getIssuer(ctx context.Context, key types.NamespacedName) (relayv1.RelayIssuerObject, *relayv1.RelayIssuerStatus, error) {
	if r.Kind == "RelayClusterIssuer" {
		var iss relayv1.RelayClusterIssuer
		if err := r.Client.Get(ctx, types.NamespacedName{Name: key.Name}, &iss); err != nil {
			return nil, nil, err
		}
		return &iss, &iss.Status, nil
	}
	var iss relayv1.RelayIssuer
	if err := r.Client.Get(ctx, key, &iss); err != nil {
		return nil, nil, err
	}
	return &iss, &iss.Status, nil
}

// outcome is what one pass decided.
type outcome struct {
	bundle  []*x509.Certificate // nil: publish nothing
	status  *relayv1.RootRotationStatus
	cond    *metav1.Condition // nil: no RootRotation condition
	requeue bool
}

// Reconcile publishes the trust bundle of one issuer and advances its
// rotation by at most one step.
func (r *RootTrust) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	iss, st, err := r.getIssuer(ctx, req.NamespacedName)
	if err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	spec := iss.GetSpec().CA
	if spec == nil {
		return reconcile.Result{}, nil
	}
	ns := req.Namespace
	if r.Kind == "RelayClusterIssuer" {
		ns = r.ClusterResourceNamespace
	}
	if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, ns) {
		return reconcile.Result{}, nil
	}
	out, err := r.sync(ctx, iss, ns, spec, st.RootRotation)
	if err != nil {
		return reconcile.Result{}, err
	}
	if out.bundle != nil {
		rootSecret, _ := r.secret(ctx, ns, signer.RootSecretName(spec))
		if err := r.publish(ctx, ns, signer.TrustBundleSecretName(spec), out.bundle, rootSecret); err != nil {
			return reconcile.Result{}, err
		}
	}
	if err := r.writeStatus(ctx, iss, st, out); err != nil {
		return reconcile.Result{}, err
	}
	if out.requeue {
		return reconcile.Result{RequeueAfter: pollInterval}, nil
	}
	return reconcile.Result{}, nil
}

func (r *RootTrust) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func cond(status metav1.ConditionStatus, reason, format string, args ...any) *metav1.Condition {
	return &metav1.Condition{Type: relayv1.IssuerConditionRootRotation, Status: status, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}

func fingerprints(certs []*x509.Certificate) []string {
	out := make([]string, 0, len(certs))
	for _, c := range certs {
		out = append(out, signer.Fingerprint(c))
	}
	return out
}

// keep is the certificates of set whose fingerprint is in fps.
func keep(set []*x509.Certificate, fps ...[]string) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range set {
		fp := signer.Fingerprint(c)
		for _, l := range fps {
			if slices.Contains(l, fp) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// sync decides the bundle, the rotation status and the condition.
func (r *RootTrust) sync(ctx context.Context, iss relayv1.RelayIssuerObject, ns string, spec *relayv1.CAIssuerSpec, prev *relayv1.RootRotationStatus) (outcome, error) {
	rootSec, err := r.secret(ctx, ns, signer.RootSecretName(spec))
	if err != nil {
		// A missing root Secret is the issuer's Ready condition's business.
		return outcome{status: prev, cond: currentCond(iss)}, client.IgnoreNotFound(err)
	}
	rootCerts, err := pki.DecodeX509CertificateSetBytes(rootSec.Data["ca.crt"])
	if err != nil || len(rootCerts) == 0 {
		return outcome{status: prev, cond: currentCond(iss)}, nil
	}
	var published []*x509.Certificate
	if b, err := r.secret(ctx, ns, signer.TrustBundleSecretName(spec)); err == nil {
		published, _ = pki.DecodeX509CertificateSetBytes(b.Data["ca.crt"])
	}
	selfSigned := rootSec.Annotations[certificateNameAnnotation] != ""
	rot := spec.RootRotation
	st := prev.DeepCopy()

	if rot == nil {
		if st != nil && st.Phase == relayv1.RootRotationActivate {
			return outcome{bundle: signer.UnionCerts(keep(published, st.OldRoots, []string{st.NewRoot}), rootCerts), status: st,
				cond: cond(metav1.ConditionFalse, ReasonRotationUnfinished,
					"root rotation %q reached Activate and was removed from spec: the trust bundle keeps the old root; declare it again with phase Retire to finish it", st.Name)}, nil
		}
		if st != nil && st.Phase != relayv1.RootRotationRetire && st.Source == SourceCertManager {
			if err := r.cleanupNext(ctx, ns, rootSec, st); err != nil {
				return outcome{}, err
			}
		}
		return outcome{bundle: rootCerts}, nil
	}

	if st != nil && st.Name != rot.Name {
		if st.Phase != relayv1.RootRotationRetire {
			return outcome{bundle: signer.UnionCerts(keep(published, st.OldRoots, []string{st.NewRoot}), rootCerts), status: st,
				cond: cond(metav1.ConditionFalse, ReasonRotationInProgress,
					"a second root rotation %q is refused: rotation %q is running (phase reached: %s); take it to phase Retire first",
					rot.Name, st.Name, orNone(st.Phase))}, nil
		}
		st = nil // the last one finished: a new one starts
	}
	if st == nil {
		st = &relayv1.RootRotationStatus{Name: rot.Name, OldRoots: fingerprints(rootCerts), Source: SourceUser}
		if selfSigned {
			st.Source = SourceCertManager
		}
	}
	st.WaitingFor = nil
	if st.Phase == relayv1.RootRotationRetire {
		st.Message = "the rotation is finished; the trust bundle holds only the new root"
		return outcome{bundle: rootCerts, status: st, cond: cond(metav1.ConditionTrue, ReasonRetired,
			"root rotation %q is finished: the old root left the trust bundle", st.Name)}, nil
	}
	want := relayv1.PhaseIndex(rot.Phase)
	if want < relayv1.PhaseIndex(st.Phase) {
		st.Message = fmt.Sprintf("phase %s was already passed (reached: %s); phases do not go back", rot.Phase, st.Phase)
		return outcome{bundle: signer.UnionCerts(keep(published, st.OldRoots, []string{st.NewRoot}), rootCerts), status: st,
			cond: cond(metav1.ConditionFalse, ReasonPhaseNotReversible, "root rotation %q: %s", st.Name, st.Message)}, nil
	}

	// The new root: made by cert-manager, or placed by the user. Once the
	// rotation has activated, the root Secret holds it.
	oldBundle := signer.UnionCerts(keep(published, st.OldRoots), keep(rootCerts, st.OldRoots))
	if relayv1.PhaseIndex(st.Phase) < 2 {
		newRoot, reason, msg, err := r.newRoot(ctx, iss, ns, spec, rootSec, st)
		if err != nil {
			return outcome{}, err
		}
		if newRoot == nil {
			st.Message = msg
			if reason == ReasonNewRootPending {
				st.WaitingFor = []string{"Secret " + signer.NewRootSecretName(spec)}
			}
			status := metav1.ConditionFalse
			return outcome{bundle: signer.UnionCerts(oldBundle, keep(published, []string{st.NewRoot})), status: st, requeue: reason == ReasonNewRootPending,
				cond: cond(status, reason, "root rotation %q stops at Prepare: %s; the issuer keeps signing under the old root", st.Name, msg)}, nil
		}
		st.NewRoot = signer.Fingerprint(newRoot)
		oldBundle = signer.UnionCerts(oldBundle, []*x509.Certificate{newRoot})
		if st.Phase == "" {
			st.Phase = relayv1.RootRotationPrepare
		}
	}
	bundle := signer.UnionCerts(keep(signer.UnionCerts(published, oldBundle), st.OldRoots, []string{st.NewRoot}), rootCerts)

	clusters, err := r.clusters(ctx, ns)
	if err != nil {
		return outcome{}, err
	}
	var lacking []string
	for _, rc := range clusters {
		if !slices.Contains(rc.Status.LastTrustBundle, st.NewRoot) {
			lacking = append(lacking, rc.Name)
		}
	}

	if st.Phase == relayv1.RootRotationPrepare {
		if want == 1 {
			if len(lacking) > 0 {
				st.WaitingFor = lacking
				st.Message = fmt.Sprintf("the new root %s is in the trust bundle; waiting for cluster(s) %s to report holding it (a renewal after the one that carries it)", short(st.NewRoot), strings.Join(lacking, ", "))
				return outcome{bundle: bundle, status: st, requeue: true, cond: cond(metav1.ConditionFalse, ReasonPreparing, "root rotation %q: %s", st.Name, st.Message)}, nil
			}
			st.Message = fmt.Sprintf("every registered cluster holds the new root %s; set phase Activate", short(st.NewRoot))
			return outcome{bundle: bundle, status: st, cond: cond(metav1.ConditionTrue, ReasonPrepared, "root rotation %q: %s", st.Name, st.Message)}, nil
		}
		if len(lacking) > 0 {
			st.WaitingFor = lacking
			st.Message = fmt.Sprintf("activation refused: cluster(s) %s are not known to hold the new root %s (the trust bundle they last reported lacks it); they get it with their next renewal and report it with the one after (relayctl register --cluster NAME --secrets-only places it and renews now), or revoke a cluster that is gone",
				strings.Join(lacking, ", "), short(st.NewRoot))
			return outcome{bundle: bundle, status: st, requeue: true, cond: cond(metav1.ConditionFalse, ReasonActivateBlocked, "root rotation %q: %s", st.Name, st.Message)}, nil
		}
		done, waiting, msg, err := r.activate(ctx, iss, ns, spec, rootSec, st)
		if err != nil {
			return outcome{}, err
		}
		if !done {
			st.WaitingFor, st.Message = waiting, msg
			return outcome{bundle: bundle, status: st, requeue: true, cond: cond(metav1.ConditionFalse, ReasonActivating, "root rotation %q: %s", st.Name, msg)}, nil
		}
		st.Phase = relayv1.RootRotationActivate
		at := metav1.NewTime(r.now())
		st.ActivatedAt = &at
	}

	// Activated: clients move at their next renewal.
	var old []string
	for _, rc := range clusters {
		if onOldRoot(rc.Status, st.NewRoot, r.now()) {
			old = append(old, rc.Name)
		}
	}
	if want == 2 {
		st.WaitingFor = old
		st.Message = "the signing CA and the server certificate chain to the new root; clients move to it at their next renewal"
		if len(old) > 0 {
			st.Message += fmt.Sprintf(" (still on the old root: %s)", strings.Join(old, ", "))
		} else {
			st.Message += "; every cluster has moved: set phase Retire"
		}
		return outcome{bundle: bundle, status: st, requeue: len(old) > 0, cond: cond(metav1.ConditionTrue, ReasonActivated, "root rotation %q: %s", st.Name, st.Message)}, nil
	}
	if len(old) > 0 {
		st.WaitingFor = old
		st.Message = fmt.Sprintf("retire refused: cluster(s) %s may still hold a live certificate that chains to the old root alone (issued before the activation at %s: their last certificate, or the one before it while no later request has shown the last one arrived); they move after two renewals (relayctl register --cluster NAME --secrets-only renews one now), or revoke a cluster that is gone",
			strings.Join(old, ", "), st.ActivatedAt.UTC().Format(time.RFC3339))
		return outcome{bundle: bundle, status: st, requeue: true, cond: cond(metav1.ConditionFalse, ReasonRetireBlocked, "root rotation %q: %s", st.Name, st.Message)}, nil
	}
	// The root Secret's ca.crt is always part of the bundle, so it must no
	// longer hold an old root (self-signed: activation replaced it).
	if stale := keep(rootCerts, st.OldRoots); len(stale) > 0 {
		st.WaitingFor = []string{"Secret " + rootSec.Name}
		st.Message = fmt.Sprintf("retire waits: Secret %s/%s ca.crt still holds the old root; replace it with the new root (Secret %s ca.crt)",
			ns, rootSec.Name, signer.NewRootSecretName(spec))
		return outcome{bundle: bundle, status: st, requeue: true, cond: cond(metav1.ConditionFalse, ReasonRetireBlocked, "root rotation %q: %s", st.Name, st.Message)}, nil
	}
	if st.Source == SourceCertManager {
		if err := r.cleanupNext(ctx, ns, rootSec, st); err != nil {
			return outcome{}, err
		}
	}
	st.Phase = relayv1.RootRotationRetire
	st.Message = "the rotation is finished; the trust bundle holds only the new root"
	return outcome{bundle: rootCerts, status: st, cond: cond(metav1.ConditionTrue, ReasonRetired,
		"root rotation %q is finished: the old root left the trust bundle", st.Name)}, nil
}

func orNone(p relayv1.RootRotationPhase) string {
	if p == "" {
		return "none yet"
	}
	return string(p)
}

func currentCond(iss relayv1.RelayIssuerObject) *metav1.Condition {
	return meta.FindStatusCondition(iss.GetConditions(), relayv1.IssuerConditionRootRotation)
}

// clusters are the registered, not revoked RelayClusters of ns.
func (r *RootTrust) clusters(ctx context.Context, ns string) ([]relayv1.RelayCluster, error) {
	var l relayv1.RelayClusterList
	if err := r.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing RelayClusters in %s: %w", ns, err)
	}
	out := slices.DeleteFunc(l.Items, func(rc relayv1.RelayCluster) bool { return rc.Spec.Revoked })
	slices.SortFunc(out, func(a, b relayv1.RelayCluster) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// nextCertificateName is the name of the Certificate that makes the new root
// in the self-signed modes.
func nextCertificateName(rootSec *corev1.Secret) string {
	return rootSec.Annotations[certificateNameAnnotation] + "-next"
}

// newRoot returns the new root once it is valid; otherwise why not. In the
// self-signed modes it first makes sure the Certificate that makes it exists.
func (r *RootTrust) newRoot(ctx context.Context, iss relayv1.RelayIssuerObject, ns string, spec *relayv1.CAIssuerSpec, rootSec *corev1.Secret, st *relayv1.RootRotationStatus) (*x509.Certificate, string, string, error) {
	name := signer.NewRootSecretName(spec)
	if name == rootSec.Name || name == signer.TrustBundleSecretName(spec) {
		return nil, ReasonNewRootInvalid, fmt.Sprintf("newRootSecretName %q must name a Secret other than the root and the trust bundle", name), nil
	}
	if st.Source == SourceCertManager {
		made, err := r.ensureNextCertificate(ctx, iss, ns, rootSec, name)
		if err != nil {
			return nil, "", "", err
		}
		if made != "" {
			return nil, ReasonNewRootPending, made, nil
		}
	}
	sec, err := r.secret(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		if st.Source == SourceCertManager {
			return nil, ReasonNewRootPending, fmt.Sprintf("waiting for cert-manager to write the new root into Secret %s/%s (Certificate %s)", ns, name, nextCertificateName(rootSec)), nil
		}
		return nil, ReasonNewRootPending, fmt.Sprintf("place the new root CA certificate as ca.crt in Secret %s/%s", ns, name), nil
	}
	if err != nil {
		return nil, "", "", err
	}
	c, problem := checkNewRoot(sec, st, r.now())
	if problem != "" {
		if st.Source == SourceCertManager && len(sec.Data["ca.crt"]) == 0 {
			return nil, ReasonNewRootPending, fmt.Sprintf("waiting for cert-manager to write the new root into Secret %s/%s", ns, name), nil
		}
		return nil, ReasonNewRootInvalid, fmt.Sprintf("the new root in Secret %s/%s is unusable: %s", ns, name, problem), nil
	}
	return c, "", "", nil
}

// checkNewRoot says what is wrong with a new root Secret, or returns its
// root: ca.crt must hold exactly one self-signed CA certificate, valid now,
// that is not one of the old roots; when the Secret also holds tls.crt and
// tls.key (a cert-manager made root), they must be that certificate and its
// key.
func checkNewRoot(sec *corev1.Secret, st *relayv1.RootRotationStatus, now time.Time) (*x509.Certificate, string) {
	raw := sec.Data["ca.crt"]
	if len(raw) == 0 {
		return nil, "it has no ca.crt"
	}
	certs, err := pki.DecodeX509CertificateSetBytes(raw)
	if err != nil {
		return nil, fmt.Sprintf("ca.crt is not a PEM certificate: %v", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Sprintf("ca.crt holds %d certificates; it must hold the new root alone", len(certs))
	}
	c := certs[0]
	switch {
	case !c.IsCA || !c.BasicConstraintsValid:
		return nil, fmt.Sprintf("the certificate in ca.crt (subject %q) is not a CA", c.Subject.String())
	case c.CheckSignatureFrom(c) != nil:
		return nil, fmt.Sprintf("the certificate in ca.crt (subject %q) is not self-signed: it must be a root", c.Subject.String())
	case now.Before(c.NotBefore) || !now.Before(c.NotAfter):
		return nil, fmt.Sprintf("the certificate in ca.crt is valid from %s to %s, not now", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	case slices.Contains(st.OldRoots, signer.Fingerprint(c)):
		return nil, "ca.crt holds the old root itself"
	}
	if len(sec.Data["tls.crt"]) > 0 || len(sec.Data["tls.key"]) > 0 {
		crt, err := pki.DecodeX509CertificateBytes(sec.Data["tls.crt"])
		if err != nil || !crt.Equal(c) {
			return nil, "tls.crt is not the certificate in ca.crt"
		}
		key, err := pki.DecodePrivateKeyBytes(sec.Data["tls.key"])
		if err != nil {
			return nil, "tls.key is not a PEM private key"
		}
		if ok, err := pki.PublicKeyMatchesCertificate(key.Public(), c); err != nil || !ok {
			return nil, "tls.key does not match the certificate"
		}
	}
	return c, ""
}

// ensureNextCertificate creates the Certificate that makes the new root: a
// copy of the root's own Certificate writing to the new root Secret. It
// returns a message while that cannot be done yet.
func (r *RootTrust) ensureNextCertificate(ctx context.Context, iss relayv1.RelayIssuerObject, ns string, rootSec *corev1.Secret, secretName string) (string, error) {
	name := nextCertificateName(rootSec)
	var existing cmapi.Certificate
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &existing)
	if err == nil {
		if existing.Spec.SecretName != secretName {
			return fmt.Sprintf("Certificate %s/%s exists and writes Secret %s, not %s; delete it or set newRootSecretName to %s",
				ns, name, existing.Spec.SecretName, secretName, existing.Spec.SecretName), nil
		}
		return "", nil
	}
	if !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("reading Certificate %s/%s: %w", ns, name, err)
	}
	// Requests left by an earlier rotation's Certificate of this name (the
	// garbage collector removes them only eventually, or never where none
	// runs) carry the names cert-manager gives the new one's requests
	// (<name>-<revision>), which it then cannot create.
	if err := r.deleteRequestsOf(ctx, ns, name, ""); err != nil {
		return "", err
	}
	var root cmapi.Certificate
	rootName := rootSec.Annotations[certificateNameAnnotation]
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: rootName}, &root); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("the root Secret %s/%s names Certificate %s, which does not exist, so the new root cannot be made the same way; place it in Secret %s yourself",
				ns, rootSec.Name, rootName, secretName), nil
		}
		return "", fmt.Errorf("reading the root Certificate %s/%s: %w", ns, rootName, err)
	}
	spec := *root.Spec.DeepCopy()
	spec.SecretName = secretName
	spec.SecretTemplate = nil
	if spec.PrivateKey == nil {
		spec.PrivateKey = &cmapi.CertificatePrivateKey{}
	}
	spec.PrivateKey.RotationPolicy = cmapi.RotationPolicyNever
	next := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: managedBy(),
			Annotations: map[string]string{"relaytls.io/root-rotation": iss.GetName()}},
		Spec: spec,
	}
	if err := r.Client.Create(ctx, next); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating the new root's Certificate %s/%s: %w", ns, name, err)
	}
	return fmt.Sprintf("created Certificate %s/%s (a copy of %s) to make the new root in Secret %s", ns, name, rootName, secretName), nil
}

// cleanupNext deletes the new root's Certificate, its CertificateRequests and
// its Secret, once the root
// Secret holds the new root (or the rotation was dropped before it
// activated).
func (r *RootTrust) cleanupNext(ctx context.Context, ns string, rootSec *corev1.Secret, st *relayv1.RootRotationStatus) error {
	if rootSec.Annotations[certificateNameAnnotation] == "" {
		return nil
	}
	name := nextCertificateName(rootSec)
	var crt cmapi.Certificate
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &crt)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Certificate %s/%s: %w", ns, name, err)
	}
	if crt.Labels["app.kubernetes.io/managed-by"] != "relay-issuer" {
		return nil
	}
	if err := r.Client.Delete(ctx, &crt); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting Certificate %s/%s: %w", ns, name, err)
	}
	if err := r.deleteRequestsOf(ctx, ns, name, crt.UID); err != nil {
		return err
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: crt.Spec.SecretName}}
	if err := r.Client.Delete(ctx, sec); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting Secret %s/%s: %w", ns, sec.Name, err)
	}
	return nil
}

// deleteRequestsOf deletes the CertificateRequests cert-manager made for the
// Certificate called name: those it owns (uid), or with uid empty every one
// that names it, when the Certificate no longer exists.
func (r *RootTrust) deleteRequestsOf(ctx context.Context, ns, name string, uid types.UID) error {
	var l cmapi.CertificateRequestList
	if err := r.APIReader.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing CertificateRequests in %s: %w", ns, err)
	}
	for i := range l.Items {
		cr := &l.Items[i]
		if cr.Annotations[cmapi.CertificateNameKey] != name {
			continue
		}
		if uid != "" && !slices.ContainsFunc(cr.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == uid }) {
			continue
		}
		if err := r.Client.Delete(ctx, cr); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting CertificateRequest %s/%s of the new root's Certificate %s: %w", ns, cr.Name, name, err)
		}
	}
	return nil
}

// chainsTo reports whether the first certificate of a PEM chain verifies to
// root, through the rest of the chain, or is root itself as cert-manager
// re-issued it (same subject and key: in mode 2 the signing CA is the root).
// crypto/x509 does not verify that re-issue against the earlier root: it
// sees the same certificate twice in the chain.
func chainsTo(chainPEM []byte, root *x509.Certificate) bool {
	certs, err := pki.DecodeX509CertificateChainBytes(chainPEM)
	if err != nil || len(certs) == 0 {
		return false
	}
	if c := certs[0]; bytes.Equal(c.RawSubject, root.RawSubject) && bytes.Equal(c.RawSubjectPublicKeyInfo, root.RawSubjectPublicKeyInfo) && c.CheckSignatureFrom(root) == nil {
		return true
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// activate moves the signing to the new root. Self-signed: the new root (its
// certificate and key) goes into the root Secret, whose Certificate must keep
// that key when cert-manager re-issues it (rotationPolicy Never), and every
// Certificate signed by a CA Issuer on the root Secret is re-issued.
// Bring-your-own: the user replaces the signing (and server) Secrets. It is
// done when the issuer's signing CA (and, self-signed, every re-issued
// certificate) chains to the new root.
func (r *RootTrust) activate(ctx context.Context, iss relayv1.RelayIssuerObject, ns string, spec *relayv1.CAIssuerSpec, rootSec *corev1.Secret, st *relayv1.RootRotationStatus) (bool, []string, string, error) {
	newName := signer.NewRootSecretName(spec)
	newSec, err := r.secret(ctx, ns, newName)
	if err != nil {
		return false, []string{"Secret " + newName}, fmt.Sprintf("the new root Secret %s/%s cannot be read: %v", ns, newName, err), nil
	}
	newRoot, problem := checkNewRoot(newSec, st, r.now())
	if problem != "" || signer.Fingerprint(newRoot) != st.NewRoot {
		if problem == "" {
			problem = "it changed since it was prepared"
		}
		return false, []string{"Secret " + newName}, fmt.Sprintf("activation waits: the new root in Secret %s/%s: %s", ns, newName, problem), nil
	}
	signingName := orDefault(spec.SigningSecretName, relayv1.DefaultSigningSecretName)
	var waiting []string
	if st.Source == SourceCertManager {
		rootCrtName := rootSec.Annotations[certificateNameAnnotation]
		var rootCrt cmapi.Certificate
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: rootCrtName}, &rootCrt); err != nil {
			return false, []string{"Certificate " + rootCrtName}, fmt.Sprintf("reading the root Certificate %s/%s: %v", ns, rootCrtName, err), nil
		}
		if rootCrt.Spec.PrivateKey == nil || rootCrt.Spec.PrivateKey.RotationPolicy != cmapi.RotationPolicyNever {
			return false, []string{"Certificate " + rootCrtName}, fmt.Sprintf(
				"activation refused: Certificate %s/%s has privateKey.rotationPolicy other than Never, so cert-manager would replace the new root's key when it re-issues the root; set it to Never (the chart does)", ns, rootCrtName), nil
		}
		if !bytes.Equal(rootSec.Data["tls.key"], newSec.Data["tls.key"]) {
			base := rootSec.DeepCopy()
			for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
				rootSec.Data[k] = newSec.Data[k]
			}
			if err := r.Client.Patch(ctx, rootSec, client.MergeFrom(base)); err != nil {
				return false, nil, "", fmt.Errorf("moving the new root into Secret %s/%s: %w", ns, rootSec.Name, err)
			}
		}
		deps, err := r.dependents(ctx, ns, rootSec.Name, rootCrtName, nextCertificateName(rootSec))
		if err != nil {
			return false, nil, "", err
		}
		for _, crt := range deps {
			sec, err := r.secret(ctx, ns, crt.Spec.SecretName)
			if err == nil && chainsTo(sec.Data["tls.crt"], newRoot) {
				continue
			}
			waiting = append(waiting, "Certificate "+crt.Name)
			if err := r.reissue(ctx, &crt, st.Name); err != nil {
				return false, nil, "", err
			}
		}
	}
	signing, err := r.secret(ctx, ns, signingName)
	if err != nil || !chainsTo(signing.Data["tls.crt"], newRoot) {
		waiting = append(waiting, "Secret "+signingName)
	}
	if len(waiting) == 0 {
		return true, nil, "", nil
	}
	msg := "activating: waiting for " + strings.Join(waiting, ", ") + " to be issued under the new root"
	if st.Source == SourceUser {
		msg = fmt.Sprintf("activating: place an intermediate CA signed by the new root in Secret %s/%s (tls.crt, tls.key) and a server certificate signed by it in the server Secret; relayctl check lists them", ns, signingName)
	}
	return false, waiting, msg, nil
}

// dependents are the Certificates signed by a cert-manager CA Issuer whose
// CA Secret is the root Secret, but the root's own Certificates.
func (r *RootTrust) dependents(ctx context.Context, ns, rootSecret string, skip ...string) ([]cmapi.Certificate, error) {
	var issuers cmapi.IssuerList
	if err := r.APIReader.List(ctx, &issuers, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing cert-manager Issuers in %s: %w", ns, err)
	}
	var caIssuers []string
	for _, i := range issuers.Items {
		if i.Spec.CA != nil && i.Spec.CA.SecretName == rootSecret {
			caIssuers = append(caIssuers, i.Name)
		}
	}
	var certs cmapi.CertificateList
	if err := r.APIReader.List(ctx, &certs, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing Certificates in %s: %w", ns, err)
	}
	var out []cmapi.Certificate
	for _, c := range certs.Items {
		ref := c.Spec.IssuerRef
		if slices.Contains(skip, c.Name) || (ref.Kind != "" && ref.Kind != "Issuer") || (ref.Group != "" && ref.Group != "cert-manager.io") {
			continue
		}
		if slices.Contains(caIssuers, ref.Name) {
			out = append(out, c)
		}
	}
	return out, nil
}

// reissue asks cert-manager to issue a Certificate again, the way cmctl
// renew does, unless it is issuing already.
func (r *RootTrust) reissue(ctx context.Context, crt *cmapi.Certificate, rotation string) error {
	for _, c := range crt.Status.Conditions {
		if c.Type == cmapi.CertificateConditionIssuing && c.Status == cmmeta.ConditionTrue {
			return nil
		}
	}
	base := crt.DeepCopy()
	now := metav1.NewTime(r.now())
	crt.Status.Conditions = append(crt.Status.Conditions, cmapi.CertificateCondition{
		Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue, Reason: "ManuallyTriggered",
		Message:            fmt.Sprintf("re-issued by relay-issuer: root rotation %q activates the new root", rotation),
		LastTransitionTime: &now, ObservedGeneration: crt.Generation,
	})
	if err := r.Client.Status().Patch(ctx, crt, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("triggering the re-issuance of Certificate %s/%s: %w", crt.Namespace, crt.Name, err)
	}
	return nil
}

// publish writes the trust bundle Secret and, where the root Secret is made by
// cert-manager (the self-signed modes), telemetry-root-secret: created when
// missing, updated only when relay-issuer made it.
func (r *RootTrust) publish(ctx context.Context, ns, name string, bundle []*x509.Certificate, rootSec *corev1.Secret) error {
	data := signer.EncodeCerts(bundle)
	if err := r.put(ctx, ns, name, data, false); err != nil {
		return err
	}
	if rootSec != nil && rootSec.Annotations[certificateNameAnnotation] != "" {
		return r.put(ctx, ns, relayv1.TelemetryRootSecretName, data, true)
	}
	return nil
}

func (r *RootTrust) put(ctx context.Context, ns, name string, data []byte, onlyOwn bool) error {
	sec, err := r.secret(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: managedBy()},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"ca.crt": data}}
		if err := r.Client.Create(ctx, sec); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Secret %s/%s: %w", ns, name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
	}
	if onlyOwn && sec.Labels["app.kubernetes.io/managed-by"] != "relay-issuer" {
		return nil // the user's: never touched
	}
	if bytes.Equal(sec.Data["ca.crt"], data) {
		return nil
	}
	base := sec.DeepCopy()
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data["ca.crt"] = data
	if err := r.Client.Patch(ctx, sec, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("updating Secret %s/%s: %w", ns, name, err)
	}
	return nil
}

// writeStatus applies status.rootRotation and the RootRotation condition
// with relay-issuer's rotation field owner, when they changed.
func (r *RootTrust) writeStatus(ctx context.Context, iss relayv1.RelayIssuerObject, cur *relayv1.RelayIssuerStatus, out outcome) error {
	old := meta.FindStatusCondition(cur.Conditions, relayv1.IssuerConditionRootRotation)
	var c *metav1.Condition
	if out.cond != nil {
		c = out.cond.DeepCopy()
		c.ObservedGeneration = iss.GetGeneration()
		c.LastTransitionTime = metav1.NewTime(r.now())
		if old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
	}
	sameCond := (old == nil && c == nil) || (old != nil && c != nil && old.Status == c.Status && old.Reason == c.Reason &&
		old.Message == c.Message && old.ObservedGeneration == c.ObservedGeneration)
	if sameCond && equalStatus(cur.RootRotation, out.status) {
		return nil
	}
	status := map[string]any{}
	if c != nil {
		cm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
		if err != nil {
			return err
		}
		status["conditions"] = []any{cm}
	}
	if out.status != nil {
		sm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(out.status)
		if err != nil {
			return err
		}
		status["rootRotation"] = sm
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": relayv1.GroupVersion.String(),
		"kind":       r.Kind,
		"metadata":   map[string]any{"name": iss.GetName(), "namespace": iss.GetNamespace()},
		"status":     status,
	}}
	if err := r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(RotationFieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing the root rotation status of %s %s: %w", r.Kind, iss.GetName(), err)
	}
	return nil
}

func equalStatus(a, b *relayv1.RootRotationStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(a)
	y, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(b)
	return fmt.Sprint(x) == fmt.Sprint(y)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// onOldRoot says whether the cluster may still hold a live certificate that
// chains to the old root alone, newRoot being the rotation's new root. A
// leaf issued before activation does. The cluster holds its last
// certificate, or, when the answer that carried it was lost, the one before
// it: both count while live, so one renewal after activation is not enough
// to retire on; the one after it is. A previous certificate recorded before
// its expiry was (an older relay-issuer) has no expiry here and is not
// counted.
func onOldRoot(s relayv1.RelayClusterStatus, newRoot string, now time.Time) bool {
	live := func(t *metav1.Time) bool { return t != nil && t.After(now) }
	if live(s.LastCertificateNotAfter) && !slices.Contains(s.LastCertificateRoots, newRoot) {
		return true
	}
	return s.PreviousCertificateSerial != "" && live(s.PreviousCertificateNotAfter) && !slices.Contains(s.PreviousCertificateRoots, newRoot)
}
