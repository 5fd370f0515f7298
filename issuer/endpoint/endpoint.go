// Package endpoint is the issuance endpoint served by relay-issuer in the
// management cluster (the istio-csr pattern): a remote signing call becomes a
// CertificateRequest for the CA-mode issuer, annotated with the caller's
// cluster and identity proof. The endpoint waits for the request, returns the
// chain or the issuer's reason, and deletes the request. It decides nothing
// itself: the issuer checks the proof.
package endpoint

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
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
}

// Defaults for Config fields left zero.
const (
	DefaultTimeout        = 30 * time.Second
	DefaultMaxConcurrent  = 64
	DefaultRatePerCluster = rate.Limit(0.2)
	DefaultBurst          = 5
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
	}, nil
}

// allow takes one token from the cluster's bucket.
func (s *Server) allow(cluster string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.limiters) > 10000 { // forget clusters idle for a while
		for k, l := range s.limiters {
			if now.Sub(l.lastSeen) > 10*time.Minute {
				delete(s.limiters, k)
			}
		}
	}
	l, ok := s.limiters[cluster]
	if !ok {
		l = &limiter{lim: rate.NewLimiter(s.cfg.RatePerCluster, s.cfg.Burst)}
		s.limiters[cluster] = l
	}
	l.lastSeen = now
	return l.lim.AllowN(now, 1)
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
	if err := s.checkIssuer(ctx); err != nil {
		return nil, err
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
func (s *Server) checkIssuer(ctx context.Context) error {
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
			return issuance.Refusal(codes.FailedPrecondition, "IssuerNotFound", fmt.Sprintf("the management cluster has no %s %s to sign with", s.cfg.IssuerKind, key))
		}
		return issuance.Refusal(codes.Unavailable, "", "the management cluster's issuer cannot be read; retry later")
	}
	if ca := obj.GetSpec().CA; ca == nil || ca.TokenSecretRef == nil {
		return issuance.Refusal(codes.FailedPrecondition, "IssuerDoesNotRequireProof",
			fmt.Sprintf("the %s %s does not require identity proofs (spec.ca.tokenSecretRef), so the endpoint will not forward to it", s.cfg.IssuerKind, key))
	}
	return nil
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
	if reason == policy.ReasonInvalidIdentityProof || reason == policy.ReasonMissingIdentityProof {
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
