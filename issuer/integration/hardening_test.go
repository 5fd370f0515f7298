package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/policy"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/testpki"
)

// endpointFixture is a management control plane running relay-issuer with the
// issuance endpoint in front of a CA-mode RelayIssuer "relay" that requires
// proofs made with token.
type endpointFixture struct {
	c     *localcluster.Cluster
	addr  string
	root  *testpki.Cert
	inter *testpki.Cert // the signing intermediate
}

func startEndpoint(t *testing.T, cfg endpoint.Config, o app.Options) *endpointFixture {
	t.Helper()
	c := startCluster(t, "management")
	root := testpki.Root(t, "hardening root")
	inter := testpki.Intermediate(t, root, "hardening intermediate")
	server := testpki.Issue(t, root, testpki.Options{CommonName: serverName, DNSNames: []string{serverName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	createSecret(t, c, "relay-root-tls-secret", map[string][]byte{"ca.crt": root.CertPEM()})
	createSecret(t, c, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, c, "relay-identity-token-secret", map[string][]byte{"token": []byte(token)})
	createIssuer(t, c, "relay", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}})
	dir, err := kubeletdir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Write(map[string][]byte{"tls.crt": server.CertPEM(), "tls.key": server.KeyPEM(t)}); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.IssuerName = "relay"
	o.Issuance = &app.Issuance{Config: cfg, Listener: lis, CertDir: dir.Path()}
	runIssuer(t, c, o)
	waitIssuer(t, c, "relay", metav1.ConditionTrue, "")
	return &endpointFixture{c: c, addr: lis.Addr().String(), root: root, inter: inter}
}

// client dials the endpoint from a chosen loopback source address, so tests
// can play callers on different hosts.
func (f *endpointFixture) client(t *testing.T, source string) issuancev1.IssuanceClient {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	cc, err := grpc.NewClient(f.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool(f.root.Cert), ServerName: serverName})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return issuancev1.NewIssuanceClient(cc)
}

// signRequest builds a call for cluster with a fresh CSR and a proof made
// with cluster's own token derived from the root token tok (SPEC §4).
func signRequest(t *testing.T, cluster, tok string, durationSeconds int64) *issuancev1.SignRequest {
	t.Helper()
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{cluster}})
	return &issuancev1.SignRequest{
		Cluster: cluster, Csr: testpki.CSRPEM(der), Proof: clusterProof(t, tok, cluster, der),
		Usages: []string{"digital signature", "client auth"}, DurationSeconds: durationSeconds,
	}
}

// watchEnrollments records every enrollment CertificateRequest created from
// now on, by cluster.
func watchEnrollments(t *testing.T, c *localcluster.Cluster) (created func() map[string]int) {
	t.Helper()
	cm, err := cmclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	crs := cm.CertmanagerV1().CertificateRequests(ns)
	list, err := crs.List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	w, err := crs.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if cr, ok := ev.Object.(*cmapi.CertificateRequest); ok && ev.Type == watch.Added {
				mu.Lock()
				seen[cr.Annotations[relayv1.ClusterAnnotation]]++
				mu.Unlock()
			}
		}
	}()
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

func reasonOf(err error) string {
	if r := issuance.ReasonOf(err); r != "" {
		return r
	}
	return status.Code(err).String()
}

// TestEndpointHardening attacks the issuance endpoint on a real control plane:
// lock-out of a victim cluster, a flood of bad proofs under rotating names,
// and durations that overflow.
func TestEndpointHardening(t *testing.T) {
	f := startEndpoint(t, endpoint.Config{Timeout: time.Minute, RatePerCluster: 0.2, Burst: 5, RefusedRatePerSource: 1, RefusedBurstPerSource: 20}, app.Options{})
	ctx := t.Context()
	attacker := f.client(t, "127.0.0.1")
	victimHost := f.client(t, "127.0.0.2")

	t.Run("bad proofs naming a cluster do not lock it out", func(t *testing.T) {
		for i := range 100 {
			_, err := attacker.Sign(ctx, signRequest(t, "victim", wrongToken, 3600))
			switch c := status.Code(err); {
			case c == codes.PermissionDenied && issuance.ReasonOf(err) == policy.ReasonInvalidIdentityProof:
			case c == codes.ResourceExhausted && issuance.ReasonOf(err) == "TooManyRefusals":
			default:
				t.Fatalf("bad-proof call %d: want PermissionDenied/InvalidIdentityProof or TooManyRefusals, got %v", i, err)
			}
		}
		// The victim still renews, from its own host and even from the
		// attacker's (a shared NAT): a good proof is never held back.
		for name, cl := range map[string]issuancev1.IssuanceClient{"own host": victimHost, "attacker's host": attacker} {
			resp, err := cl.Sign(ctx, signRequest(t, "victim", token, 3600))
			if err != nil {
				t.Fatalf("the victim's renewal from its %s after the attack: %v", name, err)
			}
			if leaf := parseChain(t, resp.Certificate)[0]; leaf.DNSNames[0] != "victim" {
				t.Fatalf("signed for %v, want victim", leaf.DNSNames)
			}
		}
	})

	t.Run("a flood of bad proofs under rotating names creates no CertificateRequest", func(t *testing.T) {
		created := watchEnrollments(t, f.c)
		var refused, throttled atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for w := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					_, err := attacker.Sign(ctx, signRequest(t, fmt.Sprintf("flood-%d-%d", w, i), wrongToken, 3600))
					switch reasonOf(err) {
					case policy.ReasonInvalidIdentityProof:
						refused.Add(1)
					case "TooManyRefusals":
						throttled.Add(1)
					default:
						errs <- fmt.Errorf("flood call %d/%d: %v", w, i, err)
					}
				}
			}()
		}
		// A legitimate cluster renews during the flood, first try.
		start := time.Now()
		if _, err := victimHost.Sign(ctx, signRequest(t, "legit", token, 3600)); err != nil {
			t.Fatalf("a legitimate renewal during the flood: %v", err)
		}
		legit := time.Since(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := refused.Load() + throttled.Load(); n != 1000 {
			t.Fatalf("%d of 1000 flood calls were refused", n)
		}
		if throttled.Load() == 0 {
			t.Fatal("no flood call was throttled by the source's refusal budget")
		}
		// The legitimate request was created, so the watch has seen at
		// least that far; give it a moment more for any stray event.
		eventually(t, 10*time.Second, "the watch to see the legitimate request", func(context.Context) (bool, string, error) {
			got := created()
			return got["legit"] == 1, fmt.Sprint(got), nil
		})
		got := created()
		delete(got, "legit")
		if len(got) > 0 {
			t.Fatalf("bad proofs created CertificateRequests: %v", got)
		}
		t.Logf("flood: %d refused, %d throttled; the legitimate renewal took %s", refused.Load(), throttled.Load(), legit.Round(time.Millisecond))
	})

	t.Run("durations", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			seconds int64
		}{
			{"negative", -1},
			{"overflowing time.Duration", 1 << 62},
			{"the largest int64", 1<<63 - 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := victimHost.Sign(ctx, signRequest(t, "durations", token, tc.seconds))
				if status.Code(err) != codes.InvalidArgument || issuance.ReasonOf(err) != policy.ReasonInvalidDuration {
					t.Fatalf("durationSeconds %d: want InvalidArgument/InvalidDuration, got %v", tc.seconds, err)
				}
			})
		}
		t.Run("a century is capped, never wrapped", func(t *testing.T) {
			before := time.Now()
			resp, err := victimHost.Sign(ctx, signRequest(t, "century", token, 100*365*24*3600))
			if err != nil {
				t.Fatal(err)
			}
			leaf := parseChain(t, resp.Certificate)[0]
			if !leaf.NotAfter.After(before) || leaf.NotAfter.After(before.Add(endpoint.DefaultMaxDuration+time.Minute)) {
				t.Fatalf("NotAfter %s: want after now and within %s", leaf.NotAfter, endpoint.DefaultMaxDuration)
			}
		})
	})

	t.Run("the signer refuses a non-positive lifetime on a request made directly", func(t *testing.T) {
		der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"direct"}})
		cr := &cmapi.CertificateRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "negative-duration", Annotations: map[string]string{
				relayv1.ClusterAnnotation: "direct", relayv1.IdentityProofAnnotation: clusterProof(t, token, "direct", der)}},
			Spec: cmapi.CertificateRequestSpec{
				Request: testpki.CSRPEM(der), Usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
				Duration:  &metav1.Duration{Duration: -time.Hour},
				IssuerRef: cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: "RelayIssuer", Name: "relay"},
			},
		}
		if err := f.c.Client.Create(ctx, cr); err != nil {
			t.Skipf("the control plane refuses a negative duration itself: %v", err)
		}
		got := waitCR(t, f.c, cr.Name)
		if len(got.Status.Certificate) > 0 {
			t.Fatal("a request with a negative duration was signed")
		}
		if inv := apiutil.GetCertificateRequestCondition(got, cmapi.CertificateRequestConditionInvalidRequest); inv == nil || inv.Reason != policy.ReasonInvalidDuration {
			t.Fatalf("InvalidRequest condition %+v, want reason %s", inv, policy.ReasonInvalidDuration)
		}
	})
}

// TestRemoteAndCAInOneProcess runs a CA-mode issuer with the endpoint and a
// remote issuer that calls that endpoint in one relay-issuer with a single
// worker. The remote call must not hold the worker the CA-mode request needs
// (it deadlocked until the issuance timeout before).
func TestRemoteAndCAInOneProcess(t *testing.T) {
	f := startEndpoint(t, endpoint.Config{Timeout: 20 * time.Second}, app.Options{Workers: 1})
	// The remote side holds only its cluster token, as a workload cluster does.
	createSecret(t, f.c, "onebox-cluster-token", map[string][]byte{"token": clusterToken(t, []byte(token), "onebox", 1)})
	createRemoteIssuer(t, f.c, "remote", "onebox", f.addr, &relayv1.TokenSecretRef{Name: "onebox-cluster-token"})
	waitIssuer(t, f.c, "remote", metav1.ConditionTrue, "")
	for i := range 3 {
		der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"onebox"}})
		name := fmt.Sprintf("onebox-%d", i)
		start := time.Now()
		createCR(t, f.c, crOptions{name: name, issuer: "remote", csrPEM: testpki.CSRPEM(der)})
		cr := waitCR(t, f.c, name)
		if len(cr.Status.Certificate) == 0 {
			t.Fatalf("request %s through the remote issuer was not signed: %+v", name, cr.Status.Conditions)
		}
		if leaf := parseChain(t, cr.Status.Certificate)[0]; leaf.DNSNames[0] != "onebox" {
			t.Fatalf("signed for %v, want onebox", leaf.DNSNames)
		}
		t.Logf("request %d signed through the endpoint in %s", i, time.Since(start).Round(time.Millisecond))
	}
}
