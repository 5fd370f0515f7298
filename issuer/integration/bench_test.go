//go:build bench

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/e2e/kubeletdir"
	"github.com/relaytls/relaytls/internal/testpki"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/issuer/issuance"
)

// TestBenchEnrollment measures N simulated workload clusters enrolling at
// once through the issuance endpoint and the real CertificateRequest path,
// next to cert-manager's own CA issuer signing the same CSRs in the same run
// (the baseline). Built only with -tags bench: `make bench` runs it.
func TestBenchEnrollment(t *testing.T) {
	c := startCluster(t, "management")
	root := testpki.Root(t, "bench root")
	inter := testpki.Intermediate(t, root, "bench intermediate")
	server := testpki.Issue(t, root, testpki.Options{CommonName: serverName, DNSNames: []string{serverName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	createSecret(t, c, "relay-root-tls-secret", map[string][]byte{"ca.crt": root.CertPEM()})
	createSecret(t, c, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, c, "relay-identity-token-secret", map[string][]byte{"token": []byte(token)})
	createIssuer(t, c, "relay", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}})
	baseline := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "baseline-ca"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "relay-tls-signing-secret"}}}}
	if err := c.Client.Create(t.Context(), baseline); err != nil {
		t.Fatal(err)
	}

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
	runIssuer(t, c, app.Options{Issuance: &app.Issuance{
		Config:   endpoint.Config{IssuerName: "relay", Timeout: 10 * time.Minute, MaxConcurrent: 64, RatePerCluster: 100, Burst: 10},
		Listener: lis,
		CertDir:  dir.Path(),
	}})
	waitIssuer(t, c, "relay", metav1.ConditionTrue, "")
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool(root.Cert), ServerName: serverName})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ic := issuance.NewClient(cc)
	cm, err := cmclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}

	type result struct {
		n                 int
		relay, ca         []time.Duration
		relayWall, caWall time.Duration
	}
	var results []result
	for _, n := range []int{100, 1000} {
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i], _ = testpki.CSR(t, testpki.CSROptions{DNSNames: []string{fmt.Sprintf("bench-%d-%d", n, i)}})
		}
		r := result{n: n}
		r.relay, r.relayWall = enrollAll(t, ic, n, csrs)
		r.ca, r.caWall = signAllWithCA(t, cm, n, csrs)
		results = append(results, r)
	}

	t.Logf("enrollment benchmark (2-core machine; the baseline is cert-manager's CA issuer signing the same CSRs in this run)")
	t.Logf("%6s %-28s %10s %10s %10s", "N", "path", "certs/s", "p50", "p99")
	for _, r := range results {
		for _, row := range []struct {
			name string
			lat  []time.Duration
			wall time.Duration
		}{{"relay endpoint + RelayIssuer", r.relay, r.relayWall}, {"cert-manager CA issuer", r.ca, r.caWall}} {
			t.Logf("%6d %-28s %10.1f %10s %10s", r.n, row.name, float64(r.n)/row.wall.Seconds(), pct(row.lat, 50), pct(row.lat, 99))
		}
		t.Logf("%6d %-28s %9.2fx %9.2fx %9.2fx", r.n, "ratio relay/baseline",
			(float64(r.n)/r.relayWall.Seconds())/(float64(r.n)/r.caWall.Seconds()),
			float64(pct(r.relay, 50))/float64(pct(r.ca, 50)), float64(pct(r.relay, 99))/float64(pct(r.ca, 99)))
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(time.Millisecond)
}

// enrollAll makes n concurrent endpoint calls and returns each latency and
// the wall time of the whole burst. Every call must succeed.
func enrollAll(t *testing.T, ic *issuance.Client, n int, csrs [][]byte) ([]time.Duration, time.Duration) {
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cluster := fmt.Sprintf("bench-%d-%d", n, i)
			t0 := time.Now()
			_, errs[i] = ic.Sign(t.Context(), &issuance.SignRequest{
				Cluster: cluster, CSR: testpki.CSRPEM(csrs[i]), Proof: clusterProof(t, token, cluster, csrs[i]),
				Usages: []string{"digital signature", "client auth"}, DurationSeconds: 3600,
			})
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("relay enrollment %d of %d: %v", i, n, err)
		}
	}
	return lat, wall
}

// signAllWithCA creates n CertificateRequests for cert-manager's CA issuer at
// once and returns each create-to-Ready latency and the wall time.
func signAllWithCA(t *testing.T, cm cmclient.Interface, n int, csrs [][]byte) ([]time.Duration, time.Duration) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	crs := cm.CertmanagerV1().CertificateRequests(ns)
	label := fmt.Sprintf("baseline-%d", n)
	w, err := crs.Watch(ctx, metav1.ListOptions{LabelSelector: "relaytls.io/bench=" + label})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	created := make([]time.Time, n)
	var mu sync.Mutex
	byName := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cr := &cmapi.CertificateRequest{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", label, i), Labels: map[string]string{"relaytls.io/bench": label}},
				Spec: cmapi.CertificateRequestSpec{
					Request: testpki.CSRPEM(csrs[i]), Usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
					Duration:  &metav1.Duration{Duration: time.Hour},
					IssuerRef: cmmeta.IssuerReference{Kind: "Issuer", Name: "baseline-ca"},
				},
			}
			mu.Lock()
			created[i] = time.Now()
			byName[cr.Name] = i
			mu.Unlock()
			if _, err := crs.Create(ctx, cr, metav1.CreateOptions{}); err != nil {
				t.Errorf("creating baseline request %d: %v", i, err)
			}
		}()
	}
	lat := make([]time.Duration, n)
	done := 0
	for done < n {
		select {
		case <-ctx.Done():
			t.Fatalf("baseline: %d of %d signed before the deadline", done, n)
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("baseline watch closed")
			}
			cr, isCR := ev.Object.(*cmapi.CertificateRequest)
			if !isCR || ev.Type == watch.Deleted || len(cr.Status.Certificate) == 0 {
				continue
			}
			mu.Lock()
			i, known := byName[cr.Name]
			mu.Unlock()
			if known && lat[i] == 0 {
				lat[i] = time.Since(created[i])
				done++
			}
		}
	}
	wall := time.Since(start)
	wg.Wait()
	return lat, wall
}
