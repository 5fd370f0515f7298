package signer

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
)

// DefaultMaxRemoteCalls bounds the remote signing calls in flight at once in
// one relay-issuer when Signer.MaxRemoteCalls is zero.
const DefaultMaxRemoteCalls = 256

// remoteState is what remote issuers share across reconciles: one gRPC
// connection per issuer (rebuilt when its endpoint, server name or trust
// bundle changes) and the signing calls in flight, so that a reconcile
// never waits for the management cluster while holding a worker.
type remoteState struct {
	mu    sync.Mutex
	conns map[types.NamespacedName]*remoteConn
	calls map[types.UID]*remoteCall
	done  chan event.GenericEvent
}

type remoteConn struct {
	key string // endpoint, server name and trust bundle digest
	cc  *grpc.ClientConn
}

// remoteCall is one Sign call to the endpoint on behalf of a request.
type remoteCall struct {
	finished chan struct{}
	resp     *issuancev1.SignResponse
	err      error
	ended    time.Time
}

func (s *Signer) maxRemoteCalls() int {
	if s.MaxRemoteCalls <= 0 {
		return DefaultMaxRemoteCalls
	}
	return s.MaxRemoteCalls
}

func (s *Signer) state() *remoteState {
	s.remoteOnce.Do(func() {
		s.remote = &remoteState{
			conns: map[types.NamespacedName]*remoteConn{},
			calls: map[types.UID]*remoteCall{},
			done:  make(chan event.GenericEvent, 1024),
		}
	})
	return s.remote
}

// RemoteDone delivers a CertificateRequest (namespace and name only) each
// time a remote signing call made for it has finished, so its controller can
// collect the answer at once. The controller watches it.
func (s *Signer) RemoteDone() <-chan event.GenericEvent { return s.state().done }

// conn returns the issuer's connection to its endpoint, dialling a new one
// (and closing the old) when the endpoint, the server name or the trust
// bundle changed. grpc-go reconnects a broken connection by itself.
func (s *Signer) conn(issuer types.NamespacedName, spec *relayv1.RemoteIssuerSpec, m *remoteMaterial) (*grpc.ClientConn, error) {
	key := fmt.Sprintf("%s|%s|%x", spec.Endpoint, serverName(spec), m.bundleDigest)
	st := s.state()
	st.mu.Lock()
	defer st.mu.Unlock()
	if c, ok := st.conns[issuer]; ok {
		if c.key == key {
			return c.cc, nil
		}
		c.cc.Close()
		delete(st.conns, issuer)
	}
	cc, err := dialEndpoint(spec, m, nil)
	if err != nil {
		return nil, err
	}
	st.conns[issuer] = &remoteConn{key: key, cc: cc}
	return cc, nil
}

// dialEndpoint makes the gRPC client of a remote issuer's endpoint, trusting
// m's roots, presenting certs (none for token calls; the client certificate
// for renewals by possession).
func dialEndpoint(spec *relayv1.RemoteIssuerSpec, m *remoteMaterial, certs []tls.Certificate) (*grpc.ClientConn, error) {
	creds := credentials.NewTLS(&tls.Config{
		RootCAs:      m.roots,
		ServerName:   serverName(spec),
		MinVersion:   tls.VersionTLS12,
		Certificates: certs,
	})
	cc, err := grpc.NewClient(spec.Endpoint,
		grpc.WithTransportCredentials(creds),
		// The endpoint allows pings every 10 s at the most.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("issuance endpoint %q: %w", spec.Endpoint, err)
	}
	return cc, nil
}

// Close closes the remote issuers' connections.
func (s *Signer) Close() {
	st := s.state()
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, c := range st.conns {
		c.cc.Close()
		delete(st.conns, k)
	}
	s.closePossession()
}

func bundleDigest(pool []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range pool {
		h.Write(c.Raw)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// callResult is what start reports: the finished call's answer, or that
// the call is in flight (started now or before).
type callResult struct {
	inFlight bool
	full     bool // too many calls in flight: none was started
	resp     *issuancev1.SignResponse
	err      error
}

// call starts the Sign call for a request, or collects its answer when it
// has finished. The call runs on its own goroutine and deadline, not on the
// reconcile's, so it survives the reconcile that started it.
func (s *Signer) call(cr metav1.Object, cc *grpc.ClientConn, req *issuancev1.SignRequest) callResult {
	st := s.state()
	limit := s.maxRemoteCalls()
	st.mu.Lock()
	defer st.mu.Unlock()
	uid := cr.GetUID()
	if c, ok := st.calls[uid]; ok {
		select {
		case <-c.finished:
			delete(st.calls, uid)
			return callResult{resp: c.resp, err: c.err}
		default:
			return callResult{inFlight: true}
		}
	}
	// Forget answers nobody came back for (their request was deleted).
	for k, c := range st.calls {
		if !c.ended.IsZero() && time.Since(c.ended) > 10*time.Minute {
			delete(st.calls, k)
		}
	}
	if len(st.calls) >= limit {
		return callResult{full: true}
	}
	c := &remoteCall{finished: make(chan struct{})}
	st.calls[uid] = c
	ref := &cmapi.CertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: cr.GetNamespace(), Name: cr.GetName(), UID: uid}}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), RemoteCallTimeout)
		defer cancel()
		resp, err := issuancev1.NewIssuanceClient(cc).Sign(ctx, req)
		if err == nil && len(resp.GetCertificate()) == 0 {
			resp, err = nil, errors.New("the issuance endpoint answered without a certificate")
		}
		st.mu.Lock()
		c.resp, c.err, c.ended = resp, err, time.Now()
		close(c.finished)
		st.mu.Unlock()
		select {
		case st.done <- event.GenericEvent{Object: ref}:
		default: // the request's requeue collects it
		}
	}()
	return callResult{inFlight: true}
}
