package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/tap"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/metrics"
)

// Runnable serves the endpoint on a listen address until its context ends.
// It implements controller-runtime's manager.Runnable and runs on every
// replica, leader or not: the endpoint only records requests.
type Runnable struct {
	Server *Server
	// Addr is the listen address; Listener, when set, is used instead.
	Addr     string
	Listener net.Listener
	// TLS holds the serving certificate (GetCertificate reloads it).
	TLS *tls.Config
	// GracePeriod is how long calls in progress may finish on shutdown.
	GracePeriod time.Duration
	// Informers gives the shared CertificateRequest informer the calls wait
	// on (the manager's cache).
	Informers cache.Informers
}

// NeedLeaderElection reports false: every replica serves.
func (r *Runnable) NeedLeaderElection() bool { return false }

// Start serves until ctx ends, then drains.
func (r *Runnable) Start(ctx context.Context) error {
	if r.TLS == nil {
		return errors.New("the issuance endpoint needs a TLS serving certificate")
	}
	if r.Informers == nil {
		return errors.New("the issuance endpoint needs an informer source for CertificateRequests")
	}
	if err := r.Server.events.start(ctx, r.Informers); err != nil {
		return err
	}
	lis := r.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", r.Addr); err != nil {
			return fmt.Errorf("issuance endpoint: %w", err)
		}
	}
	tlsCfg := r.TLS.Clone()
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	// A client certificate is asked for, not required: a renewal by
	// possession presents one and the endpoint verifies it per call
	// (possession.go); an enrollment with a token proof presents none.
	if tlsCfg.ClientAuth == tls.NoClientCert {
		tlsCfg.ClientAuth = tls.RequestClientCert
	}
	g, hs := r.grpcServer(credentials.NewTLS(tlsCfg))

	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	r.Server.log.Info("issuance endpoint serving", "address", lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("issuance endpoint: %w", err)
	case <-ctx.Done():
	}
	hs.Shutdown()
	grace := r.GracePeriod
	if grace <= 0 {
		grace = 10 * time.Second
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
	}
	return nil
}

// grpcServer builds the gRPC server of the endpoint: the issuance service
// (protobuf only) and the health service, which reports it serving.
func (r *Runnable) grpcServer(creds credentials.TransportCredentials) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(issuance.MaxRequestBytes),
		grpc.MaxConcurrentStreams(uint32(r.Server.cfg.MaxConcurrent*4)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.InTapHandle(r.Server.checkEncoding),
	)
	issuancev1.RegisterIssuanceServer(g, r.Server)
	hs := health.NewServer()
	hs.SetServingStatus(issuance.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return g, hs
}

// checkEncoding runs before a call's stream is opened (grpc.InTapHandle) and
// refuses one whose messages are not protobuf: a remote issuer from before
// the generated protocol sends JSON, which would otherwise fail as an
// unmarshalling error that says nothing useful. The refusal is logged and
// counted like the endpoint's others, within the source's refusal budget.
func (s *Server) checkEncoding(ctx context.Context, info *tap.Info) (context.Context, error) {
	err := issuance.CheckEncoding(info.Header.Get("content-type"))
	if err == nil {
		return ctx, nil
	}
	metrics.Enrollments.WithLabelValues(enrollmentResult(err), issuance.ReasonOf(err)).Inc()
	return ctx, s.refuse(sourceOf(ctx), "", time.Now(), err)
}
