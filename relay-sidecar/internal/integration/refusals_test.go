package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/test/testpki"
)

// mdCreds sends fixed metadata, or computes a proof for the connection and
// remembers it.
type mdCreds struct {
	mode, cluster string
	proof         string      // sent as is when not empty
	token         proof.Token // when set, compute a proof on this connection
	mu            sync.Mutex
	computed      string
	secure        bool
}

func (m *mdCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	md := map[string]string{frame.MDMode: m.mode, frame.MDCluster: m.cluster}
	if m.token != nil {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		ti := ri.AuthInfo.(credentials.TLSInfo)
		ekm, err := ti.State.ExportKeyingMaterial(proof.ExporterLabel, nil, proof.ExporterLength)
		if err != nil {
			return nil, err
		}
		p := proof.Tunnel(m.token, m.cluster, ekm)
		m.mu.Lock()
		m.computed = p
		m.mu.Unlock()
		md[frame.MDProof] = p
	} else if m.proof != "" {
		md[frame.MDProof] = m.proof
	}
	return md, nil
}

func (m *mdCreds) RequireTransportSecurity() bool { return m.secure }

// rawHello makes one connection with tlsConf (nil: h2c) and calls Hello.
func rawHello(t *testing.T, addr string, tlsConf *tls.Config, md *mdCreds) error {
	t.Helper()
	tc := insecure.NewCredentials()
	if tlsConf != nil {
		tc = credentials.NewTLS(tlsConf)
		md.secure = true
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(tc), grpc.WithPerRPCCredentials(md),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frame.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := cc.NewStream(ctx, &frame.HelloStreamDesc, frame.HelloMethod)
	if err != nil {
		return err
	}
	if err := s.SendMsg(&frame.Frame{Kind: frame.KindHello}); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		var f frame.Frame
		if rerr := s.RecvMsg(&f); rerr != nil {
			return rerr
		}
		return err
	}
	_ = s.CloseSend()
	var f frame.Frame
	return s.RecvMsg(&f)
}

func clientTLS(e *env, certs ...tls.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(e.ca.Cert)
	return &tls.Config{RootCAs: roots, ServerName: serverName, Certificates: certs, MinVersion: tls.VersionTLS13}
}

func keyPair(t *testing.T, is *testpki.Issued) tls.Certificate {
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSModeRefusals(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeTLS})
	// A proof made on one session, to replay on another.
	ct := must[proof.Token](t)(proof.ClusterToken(e.tok, cluster, proof.DefaultGeneration))
	first := &mdCreds{mode: "tls", cluster: cluster, token: ct}
	if err := rawHello(t, e.srvAddr, clientTLS(e), first); err != nil {
		t.Fatalf("a correct proof was refused: %v", err)
	}
	other := must[proof.Token](t)(proof.GenerateToken())
	for _, tc := range []struct {
		name   string
		md     *mdCreds
		reason string
		msg    string
	}{
		{"no token", &mdCreds{mode: "tls", cluster: cluster}, access.ReasonMissingProof, "sent no tunnel proof"},
		{"wrong token", &mdCreds{mode: "tls", cluster: cluster, token: other}, access.ReasonInvalidProof, "does not match the relay identity token"},
		{"proof replayed from another session", &mdCreds{mode: "tls", cluster: cluster, proof: first.computed}, access.ReasonInvalidProof, "replayed from another session"},
		{"malformed proof", &mdCreds{mode: "tls", cluster: cluster, proof: "not-base64!"}, access.ReasonMalformedProof, "malformed tunnel proof"},
		{"proof for another cluster", &mdCreds{mode: "tls", cluster: "cluster-b", proof: first.computed}, access.ReasonInvalidProof, `"cluster-b"`},
		{"no cluster", &mdCreds{mode: "tls", token: ct}, access.ReasonMissingCluster, "did not send its cluster name"},
		{"my cluster token claiming another cluster", &mdCreds{mode: "tls", cluster: "cluster-b", token: ct}, access.ReasonInvalidProof, `"cluster-b"`},
		{"the root token itself (shared scope) against a per-cluster server", &mdCreds{mode: "tls", cluster: cluster, token: e.tok}, access.ReasonScopeMismatch, "other token scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := failures(e.srvSide.metrics, tc.reason)
			err := rawHello(t, e.srvAddr, clientTLS(e), tc.md)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("refusal %q does not say %q", err, tc.msg)
			}
			if got := failures(e.srvSide.metrics, tc.reason); got != before+1 {
				t.Errorf("failures{reason=%s} = %v, want %v", tc.reason, got, before+1)
			}
			if tc.md.computed != "" && strings.Contains(e.srvSide.logs.String(), tc.md.computed) {
				t.Error("a proof appears in the server log")
			}
			if first.computed != "" && strings.Contains(err.Error(), first.computed) {
				t.Error("a proof appears in the error")
			}
		})
	}
}

func TestTLSAgentWithWrongTokenIsNotReady(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeTLS, agentToken: must[proof.Token](t)(proof.GenerateToken())})
	waitFor(t, "the server to refuse the agent", 10*time.Second, func() bool {
		return failures(e.srvSide.metrics, access.ReasonInvalidProof) > 0
	})
	waitFor(t, "the agent to report the refusal", 10*time.Second, func() bool {
		err := e.ag.Ready()
		return err != nil && strings.Contains(err.Error(), "does not match the relay identity token")
	})
	if !strings.Contains(e.agSide.logs.String(), "reason=refused_by_server") {
		t.Error("agent log does not give the refusal reason")
	}
}

func TestMTLSRefusals(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeMTLS})
	otherCA := newCA(t, "another root")
	good := issue(t, e.ca, clientLeaf())
	if err := rawHello(t, e.srvAddr, clientTLS(e, keyPair(t, good)), &mdCreds{mode: "mtls"}); err != nil {
		t.Fatalf("a good client cert was refused: %v", err)
	}
	expired := clientLeaf()
	expired.NotBefore, expired.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	serverOnly := clientLeaf()
	serverOnly.Usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	noName := clientLeaf()
	noName.DNSNames = nil
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		md     *mdCreds
		reason string
	}{
		{"cert from another CA", []tls.Certificate{keyPair(t, issue(t, otherCA, clientLeaf()))}, &mdCreds{mode: "mtls"}, access.ReasonUntrusted},
		{"expired cert", []tls.Certificate{keyPair(t, issue(t, e.ca, expired))}, &mdCreds{mode: "mtls"}, access.ReasonExpired},
		{"server-auth-only cert", []tls.Certificate{keyPair(t, issue(t, e.ca, serverOnly))}, &mdCreds{mode: "mtls"}, access.ReasonWrongUsage},
		{"no cert", nil, &mdCreds{mode: "mtls"}, access.ReasonNoClientCert},
		{"cert without a cluster name", []tls.Certificate{keyPair(t, issue(t, e.ca, noName))}, &mdCreds{mode: "mtls"}, access.ReasonNoIdentity},
		{"cluster other than the cert's", []tls.Certificate{keyPair(t, good)}, &mdCreds{mode: "mtls", cluster: "cluster-b"}, access.ReasonClusterMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := failures(e.srvSide.metrics, tc.reason)
			err := rawHello(t, e.srvAddr, clientTLS(e, tc.certs...), tc.md)
			if err == nil {
				t.Fatal("accepted")
			}
			waitFor(t, fmt.Sprintf("failures{reason=%s}", tc.reason), 5*time.Second, func() bool {
				return failures(e.srvSide.metrics, tc.reason) == before+1
			})
			if !strings.Contains(e.srvSide.logs.String(), "reason="+tc.reason) {
				t.Errorf("server log does not name reason %s", tc.reason)
			}
		})
	}
}

func TestModeMismatchIsRefused(t *testing.T) {
	for _, tc := range []struct {
		server, agent access.Mode
		reason        string
	}{
		{access.ModeTLS, access.ModeInsecure, access.ReasonNotTLS},
		{access.ModeMTLS, access.ModeInsecure, access.ReasonNotTLS},
		{access.ModeInsecure, access.ModeTLS, access.ReasonTLSOnInsecure},
		{access.ModeInsecure, access.ModeMTLS, access.ReasonTLSOnInsecure},
		{access.ModeMTLS, access.ModeTLS, access.ReasonNoClientCert},
		{access.ModeTLS, access.ModeMTLS, access.ReasonModeMismatch},
	} {
		t.Run(fmt.Sprintf("server %s agent %s", tc.server, tc.agent), func(t *testing.T) {
			e := newEnv(t, envOpts{mode: tc.server, agentMode: tc.agent})
			waitFor(t, "the server to refuse with "+tc.reason, 10*time.Second, func() bool {
				return failures(e.srvSide.metrics, tc.reason) > 0
			})
			waitFor(t, "the agent to report the failure", 10*time.Second, func() bool {
				return strings.Contains(e.agSide.logs.String(), "relay connection failed")
			})
			if err := e.ag.Ready(); err == nil {
				t.Fatal("agent reports ready against a server in another mode")
			}
			// Nothing is carried: a tunnel is refused, never downgraded.
			a := e.startApp()
			time.Sleep(200 * time.Millisecond)
			if e.up.Stats().Received != 0 || e.up.Stats().Streams != 0 {
				t.Fatalf("the upstream got traffic across a mode mismatch: %+v", e.up.Stats())
			}
			_ = a
			if os.Getenv("SHOW_LOGS") != "" {
				t.Logf("agent log:\n%s", e.agSide.logs.String())
			}
		})
	}
}
