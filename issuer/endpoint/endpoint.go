// Package endpoint is the issuance endpoint served by relay-issuer in the
// management cluster (the istio-csr pattern): a remote signing call becomes a
// CertificateRequest for the CA-mode issuer, annotated with the caller's
// cluster and identity proof. The endpoint waits for the request, returns the
// chain or the issuer's reason, and deletes the request.
//
// Before it creates anything the endpoint checks the call's shape and its
// identity proof (through a ProofVerifier, the same check the issuer makes),
// so a call with a bad proof leaves no trace in the cluster; the issuer still
// decides again. Limits are kept per verified cluster, and refused calls are
// counted per source address, so no caller can use up another cluster's
// budget. Every map and queue the endpoint keeps is bounded.
package endpoint

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/metrics"
	"github.com/relaytls/relaytls/issuer/policy"
)

// Labels on the CertificateRequests the endpoint creates.
const (
	LabelEnrollment = "relaytls.io/enrollment"
	LabelCluster    = "relaytls.io/cluster"
)

// Config configures the endpoint.
type Config struct {
	// Namespace is where CertificateRequests are created; for a RelayIssuer
	// it is the issuer's namespace.
	Namespace string
	// IssuerKind is RelayIssuer or RelayClusterIssuer; IssuerName names it.
	IssuerKind string
	IssuerName string
	// Timeout bounds one call, from arrival to answer.
	Timeout time.Duration
	// MaxConcurrent bounds calls in progress; more wait for a slot until
	// their deadline.
	MaxConcurrent int
	// MaxWaiting bounds calls waiting for a slot; more are refused at once
	// with Busy.
	MaxWaiting int
	// RatePerCluster and Burst bound how often one verified cluster may call.
	RatePerCluster rate.Limit
	Burst          int
	// MaxClusters bounds how many clusters' rate limits are remembered; the
	// least recently seen is forgotten first. Only clusters whose proof was
	// verified enter it.
	MaxClusters int
	// RefusedRatePerSource and RefusedBurstPerSource bound how many refused
	// calls (bad shape or bad proof) one source address gets a full answer
	// for; beyond that its refusals are answered with ResourceExhausted and
	// not logged. A call with a good proof is never held back by them.
	RefusedRatePerSource  rate.Limit
	RefusedBurstPerSource int
	// MaxSources bounds how many source addresses are remembered.
	MaxSources int
	// MaxDuration caps the lifetime a call may ask for; a longer one is
	// shortened to it (the issuer's maxDuration may shorten it further). A
	// negative or overflowing duration is refused.
	MaxDuration time.Duration
	// KeepRequests leaves the CertificateRequests in place (for debugging).
	KeepRequests bool
}

// Defaults for Config fields left zero.
const (
	DefaultTimeout               = 30 * time.Second
	DefaultMaxConcurrent         = 64
	DefaultRatePerCluster        = rate.Limit(0.2)
	DefaultBurst                 = 5
	DefaultMaxClusters           = 10000
	DefaultRefusedRatePerSource  = rate.Limit(1)
	DefaultRefusedBurstPerSource = 20
	DefaultMaxSources            = 10000
	DefaultMaxDuration           = 720 * time.Hour
)

// maxDurationSeconds is the longest duration, in seconds, a time.Duration
// can hold.
const maxDurationSeconds = math.MaxInt64 / int64(time.Second)

func (c *Config) complete() error {
	if c.Namespace == "" || c.IssuerName == "" {
		return errors.New("the issuance endpoint needs a namespace and an issuer name")
	}
	switch c.IssuerKind {
	case "":
		c.IssuerKind = "RelayIssuer"
	case "RelayIssuer", "RelayClusterIssuer":
	default:
		return fmt.Errorf("the issuance endpoint's issuer kind must be RelayIssuer or RelayClusterIssuer, not %q", c.IssuerKind)
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.MaxWaiting <= 0 {
		c.MaxWaiting = 4 * c.MaxConcurrent
	}
	if c.RatePerCluster <= 0 {
		c.RatePerCluster = DefaultRatePerCluster
	}
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxClusters <= 0 {
		c.MaxClusters = DefaultMaxClusters
	}
	if c.RefusedRatePerSource <= 0 {
		c.RefusedRatePerSource = DefaultRefusedRatePerSource
	}
	if c.RefusedBurstPerSource <= 0 {
		c.RefusedBurstPerSource = DefaultRefusedBurstPerSource
	}
	if c.MaxSources <= 0 {
		c.MaxSources = DefaultMaxSources
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = DefaultMaxDuration
	}
	return nil
}

// ProofVerifier checks a call's identity proof for a cluster and a CSR (DER)
// against the target issuer, the way the issuer itself will check it. A bad
// proof returns a *policy.Refusal; any other error means the check could not
// be made (the caller retries). The signer implements it.
type ProofVerifier interface {
	VerifyProof(ctx context.Context, iss issuerapi.Issuer, cluster string, csrDER []byte, presented string) error
}

// Server implements the generated issuancev1.IssuanceServer.
type Server struct {
	issuancev1.UnimplementedIssuanceServer

	cfg     Config
	cm      cmclient.Interface
	issuers client.Reader
	verify  ProofVerifier
	log     logr.Logger
	slots   chan struct{}
	waiting chan struct{}
	events  *requestEvents

	// clusters and sources hold *rate.Limiter values; each is bounded and
	// safe for concurrent use.
	clusters *lru.Cache
	sources  *lru.Cache
	mu       sync.Mutex // serialises get-or-create in the caches
}

var _ issuancev1.IssuanceServer = (*Server)(nil)

// New returns an endpoint that creates CertificateRequests with cm, reads its
// target issuer with issuers and checks proofs with verify.
func New(cfg Config, cm cmclient.Interface, issuers client.Reader, verify ProofVerifier, log logr.Logger) (*Server, error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	if verify == nil {
		return nil, errors.New("the issuance endpoint needs a proof verifier")
	}
	return &Server{
		cfg: cfg, cm: cm, issuers: issuers, verify: verify, log: log,
		slots:    make(chan struct{}, cfg.MaxConcurrent),
		waiting:  make(chan struct{}, cfg.MaxWaiting),
		events:   newRequestEvents(),
		clusters: lru.New(cfg.MaxClusters),
		sources:  lru.New(cfg.MaxSources),
	}, nil
}

// limiter returns the bucket of key in c, creating it when missing.
func (s *Server) limiter(c *lru.Cache, key string, r rate.Limit, burst int) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := c.Get(key); ok {
		return v.(*rate.Limiter)
	}
	l := rate.NewLimiter(r, burst)
	c.Add(key, l)
	return l
}

// allow takes one token from a verified cluster's bucket.
func (s *Server) allow(cluster string, now time.Time) bool {
	return s.limiter(s.clusters, cluster, s.cfg.RatePerCluster, s.cfg.Burst).AllowN(now, 1)
}

// sourceOf is the caller's IP address, the key of its refusal budget.
func sourceOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// refuse answers a refused call. Within the source's refusal budget the
// caller gets the refusal and it is logged; beyond it the caller is told to
// slow down and nothing is logged, so a flood cannot fill the logs.
func (s *Server) refuse(source, cluster string, now time.Time, err error) error {
	if !s.limiter(s.sources, source, s.cfg.RefusedRatePerSource, s.cfg.RefusedBurstPerSource).AllowN(now, 1) {
		return issuance.Refusal(codes.ResourceExhausted, "TooManyRefusals",
			fmt.Sprintf("too many refused calls from %s (more than %.2g per second, burst %d); retry later", source, float64(s.cfg.RefusedRatePerSource), s.cfg.RefusedBurstPerSource))
	}
	s.log.Info("enrollment refused", "cluster", cluster, "source", source, "reason", issuance.ReasonOf(err), "message", status.Convert(err).Message())
	return err
}

// checked is a call whose shape is valid.
type checked struct {
	der      []byte
	usages   []cmapi.KeyUsage
	duration time.Duration // zero: the issuer's default
	// possession: the call renews by proof of possession (possession.go);
	// renewalOf and attestation are set once it is verified.
	possession             bool
	renewalOf, attestation string
	// heldBundle is the caller's reported trust bundle, comma separated;
	// empty when it reported none (an older remote issuer).
	heldBundle string
}

// heldBundle checks the reported trust bundle: at most issuance.MaxTrustBundle
// distinct SHA-256 fingerprints in lowercase hex.
func heldBundle(fps []string) (string, error) {
	if len(fps) > issuance.MaxTrustBundle {
		return "", issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidTrustBundle,
			fmt.Sprintf("trustBundle lists %d roots; at most %d are accepted", len(fps), issuance.MaxTrustBundle))
	}
	seen := make(map[string]bool, len(fps))
	for i, fp := range fps {
		if len(fp) != 64 || strings.Trim(fp, "0123456789abcdef") != "" {
			return "", issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidTrustBundle,
				fmt.Sprintf("trustBundle[%d] is not a SHA-256 fingerprint (64 lowercase hex digits)", i))
		}
		if seen[fp] {
			return "", issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidTrustBundle,
				fmt.Sprintf("trustBundle[%d] repeats an earlier root", i))
		}
		seen[fp] = true
	}
	return strings.Join(fps, ","), nil
}

// validate checks a request's shape; the issuer checks what it means.
func (s *Server) validate(req *issuancev1.SignRequest, possession bool) (*checked, error) {
	if err := proof.ValidateCluster(req.Cluster); err != nil {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCluster, err.Error())
	}
	block, rest := pem.Decode(req.Csr)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, "csr must hold exactly one PEM CERTIFICATE REQUEST")
	}
	if _, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, fmt.Sprintf("the CSR does not parse: %v", err))
	}
	if req.Proof == "" && !possession {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonMissingIdentityProof, "the request carries no identity proof and the caller presented no client certificate to renew with")
	}
	if len(req.Proof) > 128 {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidIdentityProof, "the identity proof is too long to be an HMAC-SHA256")
	}
	c := &checked{der: block.Bytes, possession: possession}
	var err error
	if c.duration, err = s.duration(req.DurationSeconds); err != nil {
		return nil, err
	}
	if len(req.Usages) > 16 {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, "too many usages")
	}
	c.usages = make([]cmapi.KeyUsage, 0, len(req.Usages))
	for _, u := range req.Usages {
		c.usages = append(c.usages, cmapi.KeyUsage(u))
	}
	if c.heldBundle, err = heldBundle(req.TrustBundle); err != nil {
		return nil, err
	}
	return c, nil
}

// duration turns a requested lifetime in seconds into the one asked of the
// issuer: zero is the issuer's default, negative or overflowing is refused,
// longer than MaxDuration is shortened to it.
func (s *Server) duration(seconds int64) (time.Duration, error) {
	switch {
	case seconds < 0:
		return 0, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidDuration, fmt.Sprintf("durationSeconds must not be negative, got %d", seconds))
	case seconds > maxDurationSeconds:
		return 0, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidDuration, fmt.Sprintf("durationSeconds %d is too large to be a duration (at most %d)", seconds, maxDurationSeconds))
	}
	return min(time.Duration(seconds)*time.Second, s.cfg.MaxDuration), nil
}

// Sign handles one enrollment or renewal call and counts its outcome.
func (s *Server) Sign(ctx context.Context, req *issuancev1.SignRequest) (*issuancev1.SignResponse, error) {
	resp, err := s.sign(ctx, req)
	metrics.Enrollments.WithLabelValues(enrollmentResult(err), issuance.ReasonOf(err)).Inc()
	if req.Proof == "" && len(peerChain(ctx)) > 0 {
		countRenewal(err)
	}
	return resp, err
}

// admit decides, before anything is created, whether a call may proceed: its
// shape, the target issuer, the identity proof, then the verified cluster's
// rate limit.
func (s *Server) admit(ctx context.Context, req *issuancev1.SignRequest, now time.Time) (*checked, error) {
	source := sourceOf(ctx)
	// No token proof and a client certificate: a renewal by possession.
	chain := peerChain(ctx)
	c, err := s.validate(req, req.Proof == "" && len(chain) > 0)
	if err != nil {
		return nil, s.refuse(source, req.Cluster, now, err)
	}
	iss, err := s.issuer(ctx)
	if err != nil {
		return nil, err
	}
	if c.possession {
		if err := s.verifyPossession(ctx, iss, req, c, chain); err != nil {
			if status.Code(err) == codes.PermissionDenied {
				return nil, s.refuse(source, req.Cluster, now, err)
			}
			return nil, err
		}
	} else if err := s.verify.VerifyProof(ctx, iss, req.Cluster, c.der, req.Proof); err != nil {
		var r *policy.Refusal
		if !errors.As(err, &r) {
			s.log.Error(err, "checking an identity proof", "cluster", req.Cluster)
			return nil, issuance.Refusal(codes.Unavailable, "", "the management cluster cannot check identity proofs right now; retry later")
		}
		return nil, s.refuse(source, req.Cluster, now, issuance.Refusal(codes.PermissionDenied, r.Reason, r.Message))
	}
	if !s.allow(req.Cluster, now) {
		s.log.Info("enrollment rate limited", "cluster", req.Cluster)
		return nil, issuance.Refusal(codes.ResourceExhausted, "RateLimited",
			fmt.Sprintf("cluster %q is calling more often than %.2g times per second (burst %d); retry later", req.Cluster, float64(s.cfg.RatePerCluster), s.cfg.Burst))
	}
	return c, nil
}

func (s *Server) sign(ctx context.Context, req *issuancev1.SignRequest) (*issuancev1.SignResponse, error) {
	start := time.Now()
	c, err := s.admit(ctx, req, start)
	if err != nil {
		return nil, err
	}
	log := s.log.WithValues("cluster", req.Cluster)
	if c.possession {
		log = log.WithValues("renewalOf", c.renewalOf)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	select {
	case s.waiting <- struct{}{}:
	default:
		return nil, issuance.Refusal(codes.ResourceExhausted, "Busy", fmt.Sprintf("%d calls are already waiting for one of %d enrollment slots; retry later", s.cfg.MaxWaiting, s.cfg.MaxConcurrent))
	}
	select {
	case s.slots <- struct{}{}:
		<-s.waiting
		defer func() { <-s.slots }()
	case <-ctx.Done():
		<-s.waiting
		return nil, issuance.Refusal(codes.ResourceExhausted, "Busy", fmt.Sprintf("no free enrollment slot within %s (%d calls in progress); retry later", s.cfg.Timeout, s.cfg.MaxConcurrent))
	}

	// The name is chosen here, not by the API server, so the call can
	// subscribe to the request's events before the request exists.
	name := "relay-enroll-" + req.Cluster + "-" + utilrand.String(8)
	events, unsubscribe := s.events.subscribe(s.cfg.Namespace, name)
	defer unsubscribe()
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   s.cfg.Namespace,
			Labels:      map[string]string{LabelEnrollment: "true", LabelCluster: req.Cluster},
			Annotations: map[string]string{relayv1.ClusterAnnotation: req.Cluster},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   req.Csr,
			Usages:    c.usages,
			IsCA:      req.IsCa,
			IssuerRef: cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: s.cfg.IssuerKind, Name: s.cfg.IssuerName},
		},
	}
	if c.possession {
		cr.Annotations[relayv1.RenewalOfAnnotation] = c.renewalOf
		cr.Annotations[relayv1.RenewalAttestationAnnotation] = c.attestation
	} else {
		cr.Annotations[relayv1.IdentityProofAnnotation] = req.Proof
	}
	if c.heldBundle != "" {
		cr.Annotations[relayv1.HeldTrustBundleAnnotation] = c.heldBundle
	}
	if c.duration > 0 {
		cr.Spec.Duration = &metav1.Duration{Duration: c.duration}
	}
	crs := s.cm.CertmanagerV1().CertificateRequests(s.cfg.Namespace)
	created, err := crs.Create(ctx, cr, metav1.CreateOptions{FieldManager: "relay-issuer-endpoint"})
	if err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, "the management cluster rejected the request: "+err.Error())
		}
		log.Error(err, "creating the CertificateRequest")
		return nil, issuance.Refusal(codes.Unavailable, "", "the management cluster could not record the request; retry later")
	}
	log = log.WithValues("certificateRequest", created.Namespace+"/"+created.Name)
	if !s.cfg.KeepRequests {
		defer s.remove(created, log)
	}

	resp, err := s.wait(ctx, created, events)
	log.Info("enrollment finished", "signed", err == nil, "reason", issuance.ReasonOf(err), "duration", time.Since(start).Round(time.Millisecond).String())
	return resp, err
}

// enrollmentResult labels a call's outcome: signed, refused (the issuer or the
// approver said no) or failed (anything else; the caller retries).
func enrollmentResult(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return "signed"
	case codes.InvalidArgument, codes.PermissionDenied:
		return "refused"
	default:
		return "failed"
	}
}

// issuer reads the target issuer and refuses to forward to one that does not
// require proofs: such an issuer would sign anything anyone on the network
// sends.
func (s *Server) issuer(ctx context.Context) (issuerapi.Issuer, error) {
	var obj relayv1.RelayIssuerObject
	key := client.ObjectKey{Name: s.cfg.IssuerName}
	if s.cfg.IssuerKind == "RelayIssuer" {
		key.Namespace = s.cfg.Namespace
		obj = &relayv1.RelayIssuer{}
	} else {
		obj = &relayv1.RelayClusterIssuer{}
	}
	if err := s.issuers.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, issuance.Refusal(codes.FailedPrecondition, "IssuerNotFound", fmt.Sprintf("the management cluster has no %s %s to sign with", s.cfg.IssuerKind, key))
		}
		return nil, issuance.Refusal(codes.Unavailable, "", "the management cluster's issuer cannot be read; retry later")
	}
	if ca := obj.GetSpec().CA; ca == nil || ca.TokenSecretRef == nil {
		return nil, issuance.Refusal(codes.FailedPrecondition, "IssuerDoesNotRequireProof",
			fmt.Sprintf("the %s %s does not require identity proofs (spec.ca.tokenSecretRef), so the endpoint will not forward to it", s.cfg.IssuerKind, key))
	}
	return obj, nil
}

// wait follows the request through the shared informer until it is
// signed, refused or denied.
func (s *Server) wait(ctx context.Context, cr *cmapi.CertificateRequest, events <-chan requestEvent) (*issuancev1.SignResponse, error) {
	last := cr
	for {
		if resp, err, done := outcome(last); done {
			return resp, err
		}
		select {
		case <-ctx.Done():
			return nil, s.timeout(last)
		case ev := <-events:
			if ev.deleted {
				return nil, issuance.Refusal(codes.Aborted, "RequestDeleted", "the management CertificateRequest was deleted before it was signed; retry")
			}
			last = ev.cr
		}
	}
}

// outcome reads a finished request: signed, refused or denied.
func outcome(cr *cmapi.CertificateRequest) (*issuancev1.SignResponse, error, bool) {
	ready := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady)
	if denied := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionDenied); denied != nil && denied.Status == cmmeta.ConditionTrue {
		return nil, issuance.Refusal(codes.PermissionDenied, cmapi.CertificateRequestReasonDenied, "the management cluster denied the request: "+denied.Message), true
	}
	if ready == nil {
		return nil, nil, false
	}
	if ready.Status == cmmeta.ConditionTrue && len(cr.Status.Certificate) > 0 {
		return &issuancev1.SignResponse{Certificate: cr.Status.Certificate, Ca: cr.Status.CA}, nil, true
	}
	if ready.Reason != cmapi.CertificateRequestReasonFailed {
		return nil, nil, false
	}
	reason, msg := "Failed", ready.Message
	if inv := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionInvalidRequest); inv != nil && inv.Status == cmmeta.ConditionTrue {
		reason, msg = inv.Reason, inv.Message
	}
	code := codes.InvalidArgument
	switch reason {
	case policy.ReasonInvalidIdentityProof, policy.ReasonMissingIdentityProof, policy.ReasonClusterRevoked,
		policy.ReasonClusterNotRegistered, policy.ReasonStaleTokenGeneration, policy.ReasonTokenScopeMismatch,
		policy.ReasonRenewalCertificateInvalid, policy.ReasonRenewalIdentityMismatch:
		code = codes.PermissionDenied
	}
	return nil, issuance.Refusal(code, reason, msg), true
}

func (s *Server) timeout(last *cmapi.CertificateRequest) error {
	state := "no status yet"
	if r := apiutil.GetCertificateRequestCondition(last, cmapi.CertificateRequestConditionReady); r != nil {
		state = fmt.Sprintf("%s: %s", r.Reason, r.Message)
	}
	return issuance.Refusal(codes.DeadlineExceeded, "Timeout",
		fmt.Sprintf("the management CertificateRequest %s/%s was not signed within %s (last status: %s); retry later", last.Namespace, last.Name, s.cfg.Timeout, state))
}

// remove deletes a finished request, on its own deadline so a caller that
// went away still gets its request cleaned up.
func (s *Server) remove(cr *cmapi.CertificateRequest, log logr.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.cm.CertmanagerV1().CertificateRequests(cr.Namespace).Delete(ctx, cr.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		log.Error(err, "deleting the finished CertificateRequest")
	}
}
