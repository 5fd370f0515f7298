//go:build bench

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/retry"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/testpki"
)

// TestBenchEnrollment measures N simulated workload clusters enrolling at
// once through the issuance endpoint and the real CertificateRequest path,
// next to cert-manager's own CA issuer signing the same CSRs in the same run
// (the baseline). Built only with -tags bench: `make bench` runs it.
//
// Fairness: both sides get the same client rate (cert-manager's controllers
// are given relay-issuer's default of 50/s, burst 100), the order of the two
// paths alternates from one N to the next, and the baseline's watch is a
// RetryWatcher, so a closed watch resumes instead of ending the run.
func TestBenchEnrollment(t *testing.T) {
	c := startClusterWith(t, "management", func(o *localcluster.Options) {
		o.KubernetesAPIQPS, o.KubernetesAPIBurst = 50, 100
	})
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
		Config:   endpoint.Config{IssuerName: "relay", Timeout: 10 * time.Minute, MaxConcurrent: 64, MaxWaiting: 1000, RatePerCluster: 100, Burst: 10},
		Listener: lis,
		CertDir:  dir.Path(),
	}})
	waitIssuer(t, c, "relay", metav1.ConditionTrue, "")
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool(root.Cert), ServerName: serverName})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ic := issuancev1.NewIssuanceClient(cc)
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
	sizes := []int{100, 1000, 200}
	if env := os.Getenv("RELAYTLS_BENCH_N"); env != "" { // e.g. "100,200" for a quick run
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				t.Fatalf("RELAYTLS_BENCH_N: %q is not a positive number", f)
			}
			sizes = append(sizes, n)
		}
	}
	for round, n := range sizes {
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i], _ = testpki.CSR(t, testpki.CSROptions{DNSNames: []string{fmt.Sprintf("bench-%d-%d", n, i)}})
		}
		r := result{n: n}
		relay := func() { r.relay, r.relayWall = enrollAll(t, ic, n, csrs) }
		ca := func() { r.ca, r.caWall = signAllWithCA(t, cm, n, csrs) }
		if round%2 == 0 {
			relay()
			ca()
		} else {
			ca()
			relay()
		}
		results = append(results, r)
		t.Logf("measured N=%d: relay %s, baseline %s (wall)", n, r.relayWall.Round(time.Millisecond), r.caWall.Round(time.Millisecond))
	}

	t.Logf("enrollment benchmark (2-core machine; the baseline is cert-manager's CA issuer signing the same CSRs in this run; order alternates: N=100 relay first, N=1000 baseline first, N=200 relay first)")
	t.Logf("%6s %-28s %10s %10s %10s %10s", "N", "path", "certs/s", "p50", "p99", "wall")
	for _, r := range results {
		for _, row := range []struct {
			name string
			lat  []time.Duration
			wall time.Duration
		}{{"relay endpoint + RelayIssuer", r.relay, r.relayWall}, {"cert-manager CA issuer", r.ca, r.caWall}} {
			t.Logf("%6d %-28s %10.1f %10s %10s %10s", r.n, row.name, float64(r.n)/row.wall.Seconds(), pct(row.lat, 50), pct(row.lat, 99), row.wall.Round(time.Millisecond))
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
func enrollAll(t *testing.T, ic issuancev1.IssuanceClient, n int, csrs [][]byte) ([]time.Duration, time.Duration) {
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
			_, errs[i] = ic.Sign(t.Context(), &issuancev1.SignRequest{
				Cluster: cluster, Csr: testpki.CSRPEM(csrs[i]), Proof: clusterProof(t, token, cluster, csrs[i]),
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
	selector := "relaytls.io/bench=" + label
	list, err := crs.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	// A RetryWatcher resumes from the last version seen when the server
	// closes the watch.
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &toolscache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return crs.Watch(ctx, o)
		},
	})
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
			// An overloaded API server or webhook times out now and then;
			// retry such errors as a client would, counted from the first try.
			err := retry.OnError(wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 8},
				func(err error) bool { return !apierrors.IsAlreadyExists(err) && ctx.Err() == nil },
				func() error { _, err := crs.Create(ctx, cr, metav1.CreateOptions{}); return err })
			if err != nil && !apierrors.IsAlreadyExists(err) {
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
				t.Fatalf("baseline: the retrying watch ended (%d of %d signed)", done, n)
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
