// Package endpoint is the issuance endpoint served by relay-issuer in the
// management cluster (the istio-csr pattern): a remote signing call becomes a
// CertificateRequest for the CA-mode issuer, annotated with the caller's
// cluster and identity proof. It checks the cluster and proof first (cheap)
// and creates nothing for a refused call; the issuer checks them again. The
// endpoint waits for the request, returns the chain or the issuer's reason,
// and deletes the request.
package endpoint

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/issuance"
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
	// RatePerCluster and Burst bound how often one cluster may call.
	RatePerCluster rate.Limit
	Burst          int
	// KeepRequests leaves the CertificateRequests in place (for debugging).
	KeepRequests bool
	// Verifier, when set, checks each call's cluster and identity proof
	// before anything is created (SPEC section 4: the cheap check first; the
	// issuer checks again). relay-issuer sets it to its signer.
	Verifier Verifier
	// RefusalsPerAddress and RefusalBurst bound how often one caller address
	// may be refused, so a caller without a valid proof cannot use up the
	// budget of the cluster it names.
	RefusalsPerAddress rate.Limit
	RefusalBurst       int
}

// Verifier checks that a cluster may enrol with a CSR (DER) and identity
// proof. It returns a *policy.Refusal for a refused caller.
type Verifier interface {
	VerifyIdentity(ctx context.Context, iss relayv1.RelayIssuerObject, cluster string, csrDER []byte, presented string) error
}

// Defaults for Config fields left zero.
const (
	DefaultTimeout        = 30 * time.Second
	DefaultMaxConcurrent  = 64
	DefaultRatePerCluster = rate.Limit(0.2)
	DefaultBurst          = 5
	// DefaultRefusalsPerAddress and DefaultRefusalBurst: a caller address
	// may be refused 10 times at once, then once every 10 seconds.
	DefaultRefusalsPerAddress = rate.Limit(0.1)
	DefaultRefusalBurst       = 10
)

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
	if c.RatePerCluster <= 0 {
		c.RatePerCluster = DefaultRatePerCluster
	}
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	if c.RefusalsPerAddress <= 0 {
		c.RefusalsPerAddress = DefaultRefusalsPerAddress
	}
	if c.RefusalBurst <= 0 {
		c.RefusalBurst = DefaultRefusalBurst
	}
	return nil
}

// Server implements issuance.Server.
type Server struct {
	cfg     Config
	cm      cmclient.Interface
	issuers client.Reader
	log     logr.Logger
	slots   chan struct{}

	mu       sync.Mutex
	limiters map[string]*limiter
	refusals map[string]*limiter
}

type limiter struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

var _ issuance.Server = (*Server)(nil)

// New returns an endpoint that creates CertificateRequests with cm and reads
// its target issuer with issuers.
func New(cfg Config, cm cmclient.Interface, issuers client.Reader, log logr.Logger) (*Server, error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, cm: cm, issuers: issuers, log: log,
		slots:    make(chan struct{}, cfg.MaxConcurrent),
		limiters: map[string]*limiter{},
		refusals: map[string]*limiter{},
	}, nil
}

// allow takes one token from the cluster's bucket.
func (s *Server) allow(cluster string, now time.Time) bool {
	return s.take(s.limiters, cluster, s.cfg.RatePerCluster, s.cfg.Burst, now, 1)
}

// refusalsLeft reports whether addr may still be refused (without taking).
func (s *Server) refusalsLeft(addr string, now time.Time) bool {
	return s.take(s.refusals, addr, s.cfg.RefusalsPerAddress, s.cfg.RefusalBurst, now, 0)
}

// refusedFrom charges one refusal to addr.
func (s *Server) refusedFrom(addr string, now time.Time) {
	s.take(s.refusals, addr, s.cfg.RefusalsPerAddress, s.cfg.RefusalBurst, now, 1)
}

func (s *Server) take(m map[string]*limiter, key string, r rate.Limit, burst int, now time.Time, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(m) > 10000 { // forget keys idle for a while
		for k, l := range m {
			if now.Sub(l.lastSeen) > 10*time.Minute {
				delete(m, k)
			}
		}
	}
	l, ok := m[key]
	if !ok {
		l = &limiter{lim: rate.NewLimiter(r, burst)}
		m[key] = l
	}
	l.lastSeen = now
	if n == 0 {
		return l.lim.TokensAt(now) >= 1
	}
	return l.lim.AllowN(now, n)
}

// callerAddress is the caller's IP (no port), the key of refusal limits.
func callerAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// validate checks a request's shape; the issuer checks what it means.
func validate(req *issuance.SignRequest) ([]cmapi.KeyUsage, error) {
	if err := proof.ValidateCluster(req.Cluster); err != nil {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCluster, err.Error())
	}
	block, rest := pem.Decode(req.CSR)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) > 0 {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, "csr must hold exactly one PEM CERTIFICATE REQUEST")
	}
	if _, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, fmt.Sprintf("the CSR does not parse: %v", err))
	}
	if req.Proof == "" {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonMissingIdentityProof, "the request carries no identity proof")
	}
	if len(req.Proof) > 128 {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidIdentityProof, "the identity proof is too long to be an HMAC-SHA256")
	}
	if req.DurationSeconds < 0 {
		return nil, issuance.Refusal(codes.InvalidArgument, "InvalidDuration", "durationSeconds must not be negative")
	}
	if len(req.Usages) > 16 {
		return nil, issuance.Refusal(codes.InvalidArgument, policy.ReasonInvalidCSR, "too many usages")
	}
	usages := make([]cmapi.KeyUsage, 0, len(req.Usages))
	for _, u := range req.Usages {
		usages = append(usages, cmapi.KeyUsage(u))
	}
	return usages, nil
}

// Sign handles one enrollment or renewal call and counts its outcome.
func (s *Server) Sign(ctx context.Context, req *issuance.SignRequest) (*issuance.SignResponse, error) {
	resp, err := s.sign(ctx, req)
	metrics.Enrollments.WithLabelValues(enrollmentResult(err), issuance.ReasonOf(err)).Inc()
	return resp, err
}

func (s *Server) sign(ctx context.Context, req *issuance.SignRequest) (*issuance.SignResponse, error) {
	start := time.Now()
	usages, err := validate(req)
	if err != nil {
		return nil, err
	}
	log := s.log.WithValues("cluster", req.Cluster)
	addr := callerAddress(ctx)
	if !s.refusalsLeft(addr, start) {
		log.Info("enrollment refused: the caller's address was refused too often", "address", addr)
		return nil, issuance.Refusal(codes.ResourceExhausted, "TooManyRefusals",
			fmt.Sprintf("calls from %s were refused too often; retry later", addr))
	}
	iss, err := s.checkIssuer(ctx)
	if err != nil {
		return nil, err
	}
	if s.cfg.Verifier != nil {
		block, _ := pem.Decode(req.CSR)
		if err := s.cfg.Verifier.VerifyIdentity(ctx, iss, req.Cluster, block.Bytes, req.Proof); err != nil {
			var r *policy.Refusal
			if !errors.As(err, &r) {
				log.Error(err, "checking the identity proof")
				return nil, issuance.Refusal(codes.Unavailable, "", "the management cluster could not check the identity proof; retry later")
			}
			s.refusedFrom(addr, start)
			metrics.Requests.WithLabelValues("refused", r.Reason).Inc()
			log.Info("enrollment refused before a request was made", "reason", r.Reason, "address", addr)
			return nil, issuance.Refusal(codes.PermissionDenied, r.Reason, r.Message)
		}
	}
	if !s.allow(req.Cluster, start) {
		log.Info("enrollment rate limited")
		return nil, issuance.Refusal(codes.ResourceExhausted, "RateLimited",
			fmt.Sprintf("cluster %q is calling more often than %.2g times per second (burst %d); retry later", req.Cluster, float64(s.cfg.RatePerCluster), s.cfg.Burst))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return nil, issuance.Refusal(codes.ResourceExhausted, "Busy", fmt.Sprintf("no free enrollment slot within %s (%d calls in progress); retry later", s.cfg.Timeout, s.cfg.MaxConcurrent))
	}

	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "relay-enroll-" + req.Cluster + "-",
			Namespace:    s.cfg.Namespace,
			Labels:       map[string]string{LabelEnrollment: "true", LabelCluster: req.Cluster},
			Annotations: map[string]string{
				relayv1.ClusterAnnotation:       req.Cluster,
				relayv1.IdentityProofAnnotation: req.Proof,
			},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   req.CSR,
			Usages:    usages,
			IsCA:      req.IsCA,
			IssuerRef: cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: s.cfg.IssuerKind, Name: s.cfg.IssuerName},
		},
	}
	if req.DurationSeconds > 0 {
		cr.Spec.Duration = &metav1.Duration{Duration: time.Duration(req.DurationSeconds) * time.Second}
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

	resp, err := s.wait(ctx, created)
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

// checkIssuer refuses to forward to an issuer that does not require proofs:
// such an issuer would sign anything anyone on the network sends.
func (s *Server) checkIssuer(ctx context.Context) (relayv1.RelayIssuerObject, error) {
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

// wait watches the request by name from the version it was created at, so
// no update between creation and the watch is missed.
func (s *Server) wait(ctx context.Context, cr *cmapi.CertificateRequest) (*issuance.SignResponse, error) {
	crs := s.cm.CertmanagerV1().CertificateRequests(cr.Namespace)
	last := cr
	for {
		if resp, err, done := outcome(last); done {
			return resp, err
		}
		w, err := crs.Watch(ctx, metav1.ListOptions{
			FieldSelector:   "metadata.name=" + cr.Name,
			ResourceVersion: last.ResourceVersion,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, s.timeout(last)
			}
			// The version may be too old to watch from: read it again.
			cur, gerr := crs.Get(ctx, cr.Name, metav1.GetOptions{})
			if gerr != nil {
				if ctx.Err() != nil {
					return nil, s.timeout(last)
				}
				return nil, issuance.Refusal(codes.Unavailable, "", "lost track of the management CertificateRequest; retry later")
			}
			last = cur
			continue
		}
		closed := false
		for !closed {
			select {
			case <-ctx.Done():
				w.Stop()
				return nil, s.timeout(last)
			case ev, ok := <-w.ResultChan():
				if !ok {
					closed = true
					break
				}
				switch ev.Type {
				case watch.Added, watch.Modified:
					if cur, ok := ev.Object.(*cmapi.CertificateRequest); ok {
						last = cur
						if resp, err, done := outcome(last); done {
							w.Stop()
							return resp, err
						}
					}
				case watch.Deleted:
					w.Stop()
					return nil, issuance.Refusal(codes.Aborted, "RequestDeleted", "the management CertificateRequest was deleted before it was signed; retry")
				case watch.Error:
					closed = true
				}
			}
		}
		w.Stop()
	}
}

func condition(cr *cmapi.CertificateRequest, t cmapi.CertificateRequestConditionType) *cmapi.CertificateRequestCondition {
	for i := range cr.Status.Conditions {
		if cr.Status.Conditions[i].Type == t {
			return &cr.Status.Conditions[i]
		}
	}
	return nil
}

// outcome reads a finished request: signed, refused or denied.
func outcome(cr *cmapi.CertificateRequest) (*issuance.SignResponse, error, bool) {
	ready := condition(cr, cmapi.CertificateRequestConditionReady)
	if denied := condition(cr, cmapi.CertificateRequestConditionDenied); denied != nil && denied.Status == cmmeta.ConditionTrue {
		return nil, issuance.Refusal(codes.PermissionDenied, cmapi.CertificateRequestReasonDenied, "the management cluster denied the request: "+denied.Message), true
	}
	if ready == nil {
		return nil, nil, false
	}
	if ready.Status == cmmeta.ConditionTrue && len(cr.Status.Certificate) > 0 {
		return &issuance.SignResponse{Certificate: cr.Status.Certificate, CA: cr.Status.CA}, nil, true
	}
	if ready.Reason != cmapi.CertificateRequestReasonFailed {
		return nil, nil, false
	}
	reason, msg := "Failed", ready.Message
	if inv := condition(cr, cmapi.CertificateRequestConditionInvalidRequest); inv != nil && inv.Status == cmmeta.ConditionTrue {
		reason, msg = inv.Reason, inv.Message
	}
	code := codes.InvalidArgument
	switch reason {
	case policy.ReasonInvalidIdentityProof, policy.ReasonMissingIdentityProof, policy.ReasonClusterRevoked,
		policy.ReasonClusterNotRegistered, policy.ReasonStaleTokenGeneration, policy.ReasonTokenScopeMismatch:
		code = codes.PermissionDenied
	}
	return nil, issuance.Refusal(code, reason, msg), true
}

func (s *Server) timeout(last *cmapi.CertificateRequest) error {
	state := "no status yet"
	if r := condition(last, cmapi.CertificateRequestConditionReady); r != nil {
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
