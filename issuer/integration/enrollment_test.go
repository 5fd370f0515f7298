package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/clusterlist"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/policy"
	"github.com/relaytls/relaytls/issuer/signer"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/testpki"
)

const serverName = "relay.mgmt.test"

// enrollment is a management and a workload cluster with the issuance
// endpoint between them.
type enrollment struct {
	mgmt, wl *localcluster.Cluster
	addr     string // the endpoint's listen address
	certDir  *kubeletdir.Dir
	stopMgmt func()
	// t is the test that owns the clusters; issuers started from a subtest
	// must live as long as it, not as long as the subtest.
	t *testing.T
}

// startMgmtIssuer runs the management relay-issuer with the endpoint on addr.
func (e *enrollment) startMgmtIssuer() {
	t := e.t
	t.Helper()
	lis, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", e.addr, err)
	}
	e.addr = lis.Addr().String()
	e.stopMgmt = runIssuer(t, e.mgmt, app.Options{Issuance: &app.Issuance{
		Config:   endpoint.Config{IssuerName: "relay", Timeout: time.Minute, RatePerCluster: 10, Burst: 10},
		Listener: lis,
		CertDir:  e.certDir.Path(),
	}})
}

// serve projects the management server Secret for the endpoint and starts the
// management issuer and the workload issuer.
func (e *enrollment) serve(t *testing.T) {
	t.Helper()
	var err error
	if e.certDir, err = kubeletdir.New(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	server := getSecret(t, e.mgmt.Client, "relay-server-tls-secret")
	if err := e.certDir.Write(map[string][]byte{"tls.crt": server.Data["tls.crt"], "tls.key": server.Data["tls.key"]}); err != nil {
		t.Fatal(err)
	}
	e.addr = "127.0.0.1:0"
	e.startMgmtIssuer()
	runIssuer(t, e.wl, app.Options{})
}

// register copies what a workload cluster needs (the root's ca.crt and its
// own cluster token, never the root token) and creates the remote issuer and the relay-client
// Certificate, as `relayctl register` will.
func (e *enrollment) register(t *testing.T, cluster string) {
	t.Helper()
	root := getSecret(t, e.mgmt.Client, "relay-root-tls-secret")
	tok := getSecret(t, e.mgmt.Client, "relay-identity-token-secret")
	createSecret(t, e.wl, "relay-root-tls-secret", map[string][]byte{"ca.crt": root.Data["ca.crt"]})
	createSecret(t, e.wl, "relay-identity-token-secret", map[string][]byte{"token": clusterToken(t, tok.Data["token"], cluster, 1)})
	createRemoteIssuer(t, e.wl, "relay", cluster, e.addr, nil)
	waitIssuer(t, e.wl, "relay", metav1.ConditionTrue, "")
	createClientCertificate(t, e.wl, "relay-client", "relay-tls-client-secret", "relay", cluster)
}

func createRemoteIssuer(t *testing.T, c *localcluster.Cluster, name, cluster, addr string, tok *relayv1.TokenSecretRef) {
	t.Helper()
	iss := &relayv1.RelayIssuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: relayv1.RelayIssuerSpec{Remote: &relayv1.RemoteIssuerSpec{
			Endpoint: addr, ServerName: serverName, Cluster: cluster, TokenSecretRef: tok,
		}},
	}
	if err := c.Client.Create(t.Context(), iss); err != nil {
		t.Fatalf("creating the remote RelayIssuer %s: %v", name, err)
	}
}

func createClientCertificate(t *testing.T, c *localcluster.Cluster, name, secret, issuer, dnsName string) {
	t.Helper()
	crt := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cmapi.CertificateSpec{
			SecretName:  secret,
			DNSNames:    []string{dnsName},
			Duration:    &metav1.Duration{Duration: 2 * time.Hour},
			RenewBefore: &metav1.Duration{Duration: 40 * time.Minute},
			Usages:      []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
			PrivateKey:  &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
			IssuerRef:   cmmeta.IssuerReference{Group: relayv1.GroupVersion.Group, Kind: "RelayIssuer", Name: issuer},
		},
	}
	if err := c.Client.Create(t.Context(), crt); err != nil {
		t.Fatalf("creating Certificate %s: %v", name, err)
	}
}

// verifyClientSecret checks relay-tls-client-secret: tls.crt is leaf +
// intermediate, ca.crt the root, the leaf verifies for client auth with DNS
// SAN = cluster and carries tls.key's public key.
func verifyClientSecret(t *testing.T, c *localcluster.Cluster, name, cluster string, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	s := getSecret(t, c.Client, name)
	chain := parseChain(t, s.Data["tls.crt"])
	if len(chain) != 2 || !chain[1].IsCA {
		t.Fatalf("tls.crt holds %d certificates; want leaf + intermediate", len(chain))
	}
	cas := parseChain(t, s.Data["ca.crt"])
	if len(cas) != 1 || !cas[0].Equal(root) {
		t.Fatal("ca.crt is not the management root")
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inters.AddCert(chain[1])
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the client certificate does not verify against the root: %v", err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != cluster {
		t.Fatalf("client certificate DNS SANs %v; want [%s]", leaf.DNSNames, cluster)
	}
	key, err := pki.DecodePrivateKeyBytes(s.Data["tls.key"])
	if err != nil {
		t.Fatalf("tls.key: %v", err)
	}
	if ok, err := pki.PublicKeyMatchesCertificate(key.Public(), leaf); err != nil || !ok {
		t.Fatal("tls.key does not match tls.crt")
	}
	return leaf
}

// renew marks a Certificate for renewal the way `cmctl renew` does.
func renew(t *testing.T, c *localcluster.Cluster, name string) {
	t.Helper()
	eventually(t, 10*time.Second, "marking "+name+" for renewal", func(ctx context.Context) (bool, string, error) {
		var cur cmapi.Certificate
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cur); err != nil {
			return false, err.Error(), nil
		}
		cur.Status.Conditions = append(cur.Status.Conditions, cmapi.CertificateCondition{
			Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue,
			Reason: "ManuallyTriggered", Message: "renewal requested by the test",
		})
		if err := c.Client.Status().Update(ctx, &cur); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}

func waitCertificateReady(t *testing.T, c *localcluster.Cluster, name string) {
	t.Helper()
	eventually(t, 60*time.Second, "Certificate "+name+" Ready", func(ctx context.Context) (bool, string, error) {
		var crt cmapi.Certificate
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &crt); err != nil {
			return false, err.Error(), nil
		}
		if cond := apiutil.GetCertificateCondition(&crt, cmapi.CertificateConditionReady); cond != nil {
			return cond.Status == cmmeta.ConditionTrue, cond.Reason + ": " + cond.Message, nil
		}
		return false, "no Ready condition", nil
	})
}

// waitNoEnrollmentRequests waits until the endpoint has removed every
// CertificateRequest it created in the management cluster.
func waitNoEnrollmentRequests(t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	eventually(t, 30*time.Second, "the management enrollment CertificateRequests to be deleted", func(ctx context.Context) (bool, string, error) {
		var l cmapi.CertificateRequestList
		if err := c.Client.List(ctx, &l, client.InNamespace(ns), client.MatchingLabels{endpoint.LabelEnrollment: "true"}); err != nil {
			return false, err.Error(), nil
		}
		return len(l.Items) == 0, fmt.Sprintf("%d left", len(l.Items)), nil
	})
}

// enrollAndRenew is what modes 4 and 5 share: the workload relay-client
// Certificate becomes Ready, verifies against the root, renews with a new
// key and serial, and the management side keeps no requests.
func enrollAndRenew(t *testing.T, e *enrollment, root *x509.Certificate) {
	t.Helper()
	e.register(t, "cluster-1")
	waitCertificateReady(t, e.wl, "relay-client")
	first := verifyClientSecret(t, e.wl, "relay-tls-client-secret", "cluster-1", root)

	renew(t, e.wl, "relay-client")
	serial := waitSecretSerial(t, e.wl.Client, "relay-tls-client-secret", first.SerialNumber)
	waitCertificateReady(t, e.wl, "relay-client")
	second := verifyClientSecret(t, e.wl, "relay-tls-client-secret", "cluster-1", root)
	if second.SerialNumber.Cmp(serial) != 0 || second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the renewal did not give a new serial")
	}
	if same, _ := pki.PublicKeysEqual(first.PublicKey, second.PublicKey); same {
		t.Fatal("the renewal kept the old key")
	}
	waitNoEnrollmentRequests(t, e.mgmt)
}

// TestEnrollmentSelfSigned is mode 4: cert-manager builds the whole chain in
// the management cluster and the issuer generates the token.
func TestEnrollmentSelfSigned(t *testing.T) {
	e := &enrollment{mgmt: startCluster(t, "management"), wl: startCluster(t, "workload"), t: t}
	ctx := t.Context()
	ca := func(name, secret, issuer string, isCA bool, extra func(*cmapi.CertificateSpec)) *cmapi.Certificate {
		crt := &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: cmapi.CertificateSpec{
				CommonName: name, SecretName: secret, IsCA: isCA,
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:  cmmeta.IssuerReference{Kind: "Issuer", Name: issuer},
			},
		}
		if extra != nil {
			extra(&crt.Spec)
		}
		return crt
	}
	for _, obj := range []client.Object{
		&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "selfsigned"}, Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}},
		ca("relay-root", "relay-root-tls-secret", "selfsigned", true, nil),
		&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "relay-root"}, Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "relay-root-tls-secret"}}}},
		ca("relay-intermediate", "relay-tls-signing-secret", "relay-root", true, nil),
		ca("relay-server", "relay-server-tls-secret", "relay-root", false, func(s *cmapi.CertificateSpec) {
			s.DNSNames = []string{serverName}
			s.IPAddresses = []string{"127.0.0.1"}
			s.Usages = []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageServerAuth}
		}),
	} {
		if err := e.mgmt.Client.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	for _, name := range []string{"relay-root", "relay-intermediate", "relay-server"} {
		waitCertificateReady(t, e.mgmt, name)
	}
	createIssuer(t, e.mgmt, "relay", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}, GenerateToken: true})
	e.serve(t)
	waitIssuer(t, e.mgmt, "relay", metav1.ConditionTrue, "")
	root := parseChain(t, getSecret(t, e.mgmt.Client, "relay-root-tls-secret").Data["ca.crt"])[0]
	enrollAndRenew(t, e, root)

	t.Run("the endpoint serves a renewed server certificate without a restart", func(t *testing.T) {
		before := endpointSerial(t, e.addr, root)
		renew(t, e.mgmt, "relay-server")
		waitSecretSerial(t, e.mgmt.Client, "relay-server-tls-secret", before)
		server := getSecret(t, e.mgmt.Client, "relay-server-tls-secret")
		if err := e.certDir.Write(map[string][]byte{"tls.crt": server.Data["tls.crt"], "tls.key": server.Data["tls.key"]}); err != nil {
			t.Fatal(err)
		}
		want := parseChain(t, server.Data["tls.crt"])[0].SerialNumber
		eventually(t, 30*time.Second, "the endpoint to serve the renewed certificate", func(ctx context.Context) (bool, string, error) {
			got := endpointSerial(t, e.addr, root)
			return got.Cmp(want) == 0, "serving serial " + got.Text(16), nil
		})
		// And enrollment still works through it.
		renew(t, e.wl, "relay-client")
		old := parseChain(t, getSecret(t, e.wl.Client, "relay-tls-client-secret").Data["tls.crt"])[0]
		waitSecretSerial(t, e.wl.Client, "relay-tls-client-secret", old.SerialNumber)
	})
}

// endpointSerial is the serial of the certificate the endpoint serves now.
func endpointSerial(t *testing.T, addr string, root *x509.Certificate) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(root), ServerName: serverName, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS to the endpoint: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestEnrollmentBringYourOwn is mode 5 (a user's PKI and token, stored by
// hand) and the refusals of the enrollment path.
func TestEnrollmentBringYourOwn(t *testing.T) {
	e := &enrollment{mgmt: startCluster(t, "management"), wl: startCluster(t, "workload"), t: t}
	root := testpki.Root(t, "user root")
	inter := testpki.Intermediate(t, root, "user intermediate")
	server := testpki.Issue(t, root, testpki.Options{CommonName: serverName, DNSNames: []string{serverName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	createSecret(t, e.mgmt, "relay-root-tls-secret", map[string][]byte{"ca.crt": root.CertPEM()})
	createSecret(t, e.mgmt, "relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, e.mgmt, "relay-server-tls-secret", map[string][]byte{"tls.crt": server.CertPEM(), "tls.key": server.KeyPEM(t), "ca.crt": root.CertPEM()})
	createSecret(t, e.mgmt, "relay-identity-token-secret", map[string][]byte{"token": []byte(token)})
	createIssuer(t, e.mgmt, "relay", relayv1.CAIssuerSpec{TokenSecretRef: &relayv1.TokenSecretRef{}})
	e.serve(t)
	waitIssuer(t, e.mgmt, "relay", metav1.ConditionTrue, "")
	enrollAndRenew(t, e, root.Cert)

	t.Run("a wrong token gets no certificate, and the request says why", func(t *testing.T) {
		createSecret(t, e.wl, "wrong-token", map[string][]byte{"token": []byte(wrongToken)})
		createRemoteIssuer(t, e.wl, "wrong", "cluster-2", e.addr, &relayv1.TokenSecretRef{Name: "wrong-token"})
		waitIssuer(t, e.wl, "wrong", metav1.ConditionTrue, "")
		createClientCertificate(t, e.wl, "wrong-client", "wrong-client-tls", "wrong", "cluster-2")
		cr := waitCertificateRequestFor(t, e.wl, "wrong-client")
		inv := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionInvalidRequest)
		if inv == nil || inv.Reason != policy.ReasonInvalidIdentityProof || !strings.Contains(inv.Message, "identity proof was refused") {
			t.Fatalf("InvalidRequest condition %+v; want reason %s saying the identity proof was refused", inv, policy.ReasonInvalidIdentityProof)
		}
		if r := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady); !strings.Contains(r.Message, "identity proof was refused") || len(cr.Status.Certificate) > 0 {
			t.Fatalf("Ready message %q, %d certificate bytes; want the refusal and no certificate", r.Message, len(cr.Status.Certificate))
		}
		var s corev1.Secret
		if err := e.wl.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "wrong-client-tls"}, &s); err == nil && len(s.Data["tls.crt"]) > 0 {
			t.Fatal("a certificate exists for the wrong token")
		}
	})

	t.Run("cluster-1's token cannot claim another cluster's name", func(t *testing.T) {
		// The workload cluster holds cluster-1's cluster token and names
		// cluster-3: the proof is checked with cluster-3's key and fails,
		// before the CSR's names are even looked at.
		createRemoteIssuer(t, e.wl, "mismatch", "cluster-3", e.addr, nil)
		waitIssuer(t, e.wl, "mismatch", metav1.ConditionTrue, "")
		createClientCertificate(t, e.wl, "mismatch-client", "mismatch-client-tls", "mismatch", "cluster-1")
		cr := waitCertificateRequestFor(t, e.wl, "mismatch-client")
		if inv := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionInvalidRequest); inv == nil || inv.Reason != policy.ReasonInvalidIdentityProof || !strings.Contains(inv.Message, `"cluster-3"`) {
			t.Fatalf("InvalidRequest condition %+v; want reason %s naming cluster-3", inv, policy.ReasonInvalidIdentityProof)
		}
		if strings.Contains(cr.Status.Conditions[0].Message, string(getSecret(t, e.wl.Client, "relay-identity-token-secret").Data["token"])) {
			t.Fatal("the refusal shows the token")
		}
	})

	t.Run("a renewal while the endpoint is down leaves the Secret alone and succeeds once it is back", func(t *testing.T) {
		before := getSecret(t, e.wl.Client, "relay-tls-client-secret")
		e.stopMgmt()
		renew(t, e.wl, "relay-client")
		cr := waitPendingRequestFor(t, e.wl, "relay-client")
		if r := apiutil.GetCertificateRequestCondition(cr, cmapi.CertificateRequestConditionReady); !strings.Contains(r.Message, "issuance endpoint") {
			t.Fatalf("pending request message %q does not mention the endpoint", r.Message)
		}
		consistently(t, 3*time.Second, "the client Secret stays untouched while the endpoint is down", func(ctx context.Context) (bool, string, error) {
			cur := getSecret(t, e.wl.Client, "relay-tls-client-secret")
			return string(cur.Data["tls.crt"]) == string(before.Data["tls.crt"]) && string(cur.Data["tls.key"]) == string(before.Data["tls.key"]), "the Secret changed", nil
		})
		e.startMgmtIssuer()
		old := parseChain(t, before.Data["tls.crt"])[0]
		waitSecretSerial(t, e.wl.Client, "relay-tls-client-secret", old.SerialNumber)
		waitCertificateReady(t, e.wl, "relay-client")
		verifyClientSecret(t, e.wl, "relay-tls-client-secret", "cluster-1", root.Cert)
	})

	// Direct calls to the endpoint, as a misbehaving or busy caller.
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool(root.Cert), ServerName: serverName})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ic := issuancev1.NewIssuanceClient(cc)
	goodRequest := func(t *testing.T, cluster string) *issuancev1.SignRequest {
		der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{cluster}})
		return &issuancev1.SignRequest{Cluster: cluster, Csr: testpki.CSRPEM(der), Proof: clusterProof(t, token, cluster, der),
			Usages: []string{"digital signature", "client auth"}, DurationSeconds: 3600}
	}

	t.Run("oversized and malformed requests are refused with a reason", func(t *testing.T) {
		big := goodRequest(t, "cluster-9")
		big.Csr = append(big.Csr, make([]byte, issuance.MaxRequestBytes)...)
		garbled := goodRequest(t, "cluster-9")
		garbled.Csr = []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
		badName := goodRequest(t, "cluster-9")
		badName.Cluster = "Not_A_Label"
		noProof := goodRequest(t, "cluster-9")
		noProof.Proof = ""
		fp := strings.Repeat("ab", 32)
		tooManyRoots := goodRequest(t, "cluster-9")
		for i := range issuance.MaxTrustBundle + 1 {
			tooManyRoots.TrustBundle = append(tooManyRoots.TrustBundle, fmt.Sprintf("%064x", i))
		}
		notFingerprint := goodRequest(t, "cluster-9")
		notFingerprint.TrustBundle = []string{fp, strings.ToUpper(fp)}
		repeated := goodRequest(t, "cluster-9")
		repeated.TrustBundle = []string{fp, fp}
		for _, tc := range []struct {
			name   string
			req    *issuancev1.SignRequest
			code   codes.Code
			reason string
		}{
			{"oversized", big, codes.ResourceExhausted, ""},
			{"CSR that does not parse", garbled, codes.InvalidArgument, policy.ReasonInvalidCSR},
			{"cluster name not a DNS label", badName, codes.InvalidArgument, policy.ReasonInvalidCluster},
			{"no proof", noProof, codes.InvalidArgument, policy.ReasonMissingIdentityProof},
			{"trust bundle of more roots than the bound", tooManyRoots, codes.InvalidArgument, policy.ReasonInvalidTrustBundle},
			{"trust bundle entry that is not a fingerprint", notFingerprint, codes.InvalidArgument, policy.ReasonInvalidTrustBundle},
			{"trust bundle naming a root twice", repeated, codes.InvalidArgument, policy.ReasonInvalidTrustBundle},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := ic.Sign(t.Context(), tc.req)
				if status.Code(err) != tc.code || issuance.ReasonOf(err) != tc.reason {
					t.Fatalf("got %v (reason %q); want code %s reason %q", err, issuance.ReasonOf(err), tc.code, tc.reason)
				}
			})
		}
	})

	t.Run("a burst of 200 concurrent enrollments is served without errors", func(t *testing.T) {
		const n = 200
		reqs := make([]*issuancev1.SignRequest, n)
		for i := range reqs {
			reqs[i] = goodRequest(t, fmt.Sprintf("burst-%d", i))
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := ic.Sign(t.Context(), reqs[i])
				if err == nil {
					leaf := parseChain(t, resp.Certificate)[0]
					if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != reqs[i].Cluster {
						err = fmt.Errorf("certificate for %v, want %s", leaf.DNSNames, reqs[i].Cluster)
					}
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		failed := 0
		for i, err := range errs {
			if err != nil {
				failed++
				if failed <= 5 {
					t.Errorf("enrollment %d: %v", i, err)
				}
			}
		}
		if failed > 0 {
			t.Fatalf("%d of %d enrollments failed", failed, n)
		}
		waitNoEnrollmentRequests(t, e.mgmt)
	})

	t.Run("inventory: revocation, generation bump and scope are enforced by the endpoint", func(t *testing.T) {
		const cluster = "inventory-1"
		rc := &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cluster}}
		if err := e.mgmt.Client.Create(t.Context(), rc); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.Sign(t.Context(), goodRequest(t, cluster)); err != nil {
			t.Fatalf("a registered cluster with its own token: %v", err)
		}
		waitRelayCluster(t, e.mgmt, cluster, func(rc *relayv1.RelayCluster) bool {
			return rc.Status.LastCertificateSerial != "" && rc.Status.LastCertificateNotAfter != nil
		})

		t.Run("the trust bundle the cluster reports is what it is recorded to hold, not what was sent", func(t *testing.T) {
			// A report without the root the endpoint returns: the answer
			// carries the root, but the cluster is recorded with what it
			// said it had (the answer of an earlier call may have been lost).
			other := strings.Repeat("0f", 32)
			req := goodRequest(t, cluster)
			req.TrustBundle = []string{other}
			resp, err := ic.Sign(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			sent := signer.Fingerprints(resp.Ca)
			if len(sent) == 0 || slices.Contains(sent, other) {
				t.Fatalf("the answer's ca.crt %v", sent)
			}
			var rc relayv1.RelayCluster
			if err := e.mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: cluster}, &rc); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rc.Status.LastTrustBundle, []string{other}) {
				t.Fatalf("lastTrustBundle = %v; want the reported %v, not the sent %v", rc.Status.LastTrustBundle, []string{other}, sent)
			}
			// The next call reports the bundle it received.
			req = goodRequest(t, cluster)
			req.TrustBundle = sent
			if _, err := ic.Sign(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			if err := e.mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: cluster}, &rc); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rc.Status.LastTrustBundle, sent) {
				t.Fatalf("lastTrustBundle = %v; want the reported %v", rc.Status.LastTrustBundle, sent)
			}
		})

		sign := func(t *testing.T, req *issuancev1.SignRequest, wantReason string) {
			t.Helper()
			before := countRequests(t, e.mgmt)
			_, err := ic.Sign(t.Context(), req)
			if status.Code(err) != codes.PermissionDenied || issuance.ReasonOf(err) != wantReason {
				t.Fatalf("got %v (reason %q); want PermissionDenied %s", err, issuance.ReasonOf(err), wantReason)
			}
			if after := countRequests(t, e.mgmt); after > before {
				t.Fatalf("a refused call created a CertificateRequest (%d -> %d)", before, after)
			}
		}
		t.Run("the root token itself (shared scope) is refused by a per-cluster issuer", func(t *testing.T) {
			req := goodRequest(t, cluster)
			csr, err := pki.DecodeX509CertificateRequestBytes(req.Csr)
			if err != nil {
				t.Fatal(err)
			}
			req.Proof = proof.Identity(proof.Token(token), cluster, csr.Raw)
			sign(t, req, policy.ReasonTokenScopeMismatch)
		})
		t.Run("a revoked cluster is refused", func(t *testing.T) {
			patchRelayCluster(t, e.mgmt, cluster, func(rc *relayv1.RelayCluster) { rc.Spec.Revoked = true })
			eventually(t, 10*time.Second, "the endpoint refuses the revoked cluster", func(ctx context.Context) (bool, string, error) {
				_, err := ic.Sign(ctx, goodRequest(t, cluster))
				return issuance.ReasonOf(err) == policy.ReasonClusterRevoked, fmt.Sprintf("got %v", err), nil
			})
			waitRelayCluster(t, e.mgmt, cluster, func(rc *relayv1.RelayCluster) bool {
				c := meta.FindStatusCondition(rc.Status.Conditions, relayv1.ClusterConditionRegistered)
				return c != nil && c.Status == metav1.ConditionFalse && c.Reason == relayv1.ReasonClusterRevoked
			})
			eventually(t, 10*time.Second, "relay-cluster-list names the cluster as revoked", func(ctx context.Context) (bool, string, error) {
				var sec corev1.Secret
				if err := e.mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: relayv1.DefaultClusterListName}, &sec); err != nil {
					return false, "", client.IgnoreNotFound(err)
				}
				m, err := clusterlist.Parse(sec.Data[relayv1.ClusterListKey])
				if err != nil {
					return false, "", err
				}
				return m[cluster].Revoked, string(sec.Data[relayv1.ClusterListKey]), nil
			})
		})
		t.Run("after a generation bump the old token is stale and the new one works", func(t *testing.T) {
			patchRelayCluster(t, e.mgmt, cluster, func(rc *relayv1.RelayCluster) { rc.Spec.Revoked = false; rc.Spec.TokenGeneration = 2 })
			eventually(t, 10*time.Second, "the endpoint refuses the old generation", func(ctx context.Context) (bool, string, error) {
				_, err := ic.Sign(ctx, goodRequest(t, cluster))
				return issuance.ReasonOf(err) == policy.ReasonStaleTokenGeneration, fmt.Sprintf("got %v", err), nil
			})
			req := goodRequest(t, cluster)
			csr, err := pki.DecodeX509CertificateRequestBytes(req.Csr)
			if err != nil {
				t.Fatal(err)
			}
			req.Proof = proof.Identity(proof.Token(clusterToken(t, []byte(token), cluster, 2)), cluster, csr.Raw)
			if _, err := ic.Sign(t.Context(), req); err != nil {
				t.Fatalf("the generation-2 token: %v", err)
			}
		})
	})
}

func patchRelayCluster(t *testing.T, c *localcluster.Cluster, name string, mutate func(*relayv1.RelayCluster)) {
	t.Helper()
	var rc relayv1.RelayCluster
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &rc); err != nil {
		t.Fatal(err)
	}
	base := rc.DeepCopy()
	mutate(&rc)
	if err := c.Client.Patch(t.Context(), &rc, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

func waitRelayCluster(t *testing.T, c *localcluster.Cluster, name string, ok func(*relayv1.RelayCluster) bool) {
	t.Helper()
	eventually(t, 15*time.Second, "RelayCluster "+name+" status", func(ctx context.Context) (bool, string, error) {
		var rc relayv1.RelayCluster
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &rc); err != nil {
			return false, "", err
		}
		return ok(&rc), fmt.Sprintf("status %+v", rc.Status), nil
	})
}

func countRequests(t *testing.T, c *localcluster.Cluster) int {
	t.Helper()
	var l cmapi.CertificateRequestList
	if err := c.Client.List(t.Context(), &l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// requestsFor lists the CertificateRequests cert-manager made for a Certificate.
func requestsFor(ctx context.Context, c *localcluster.Cluster, certificate string) ([]cmapi.CertificateRequest, error) {
	var l cmapi.CertificateRequestList
	if err := c.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var out []cmapi.CertificateRequest
	for _, cr := range l.Items {
		for _, o := range cr.OwnerReferences {
			if o.Kind == "Certificate" && o.Name == certificate {
				out = append(out, cr)
			}
		}
	}
	return out, nil
}

// waitCertificateRequestFor waits for a failed request of a Certificate.
func waitCertificateRequestFor(t *testing.T, c *localcluster.Cluster, certificate string) *cmapi.CertificateRequest {
	t.Helper()
	var found *cmapi.CertificateRequest
	eventually(t, 60*time.Second, "a failed CertificateRequest for "+certificate, func(ctx context.Context) (bool, string, error) {
		crs, err := requestsFor(ctx, c, certificate)
		if err != nil {
			return false, err.Error(), nil
		}
		for i := range crs {
			if r := apiutil.GetCertificateRequestCondition(&crs[i], cmapi.CertificateRequestConditionReady); r != nil && r.Reason == cmapi.CertificateRequestReasonFailed {
				found = &crs[i]
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d requests, none failed", len(crs)), nil
	})
	return found
}

// waitPendingRequestFor waits for a request of a Certificate that is pending
// on a retry.
func waitPendingRequestFor(t *testing.T, c *localcluster.Cluster, certificate string) *cmapi.CertificateRequest {
	t.Helper()
	var found *cmapi.CertificateRequest
	eventually(t, 60*time.Second, "a pending CertificateRequest for "+certificate, func(ctx context.Context) (bool, string, error) {
		crs, err := requestsFor(ctx, c, certificate)
		if err != nil {
			return false, err.Error(), nil
		}
		for i := range crs {
			r := apiutil.GetCertificateRequestCondition(&crs[i], cmapi.CertificateRequestConditionReady)
			if r != nil && r.Reason == cmapi.CertificateRequestReasonPending && strings.Contains(r.Message, "will retry") {
				found = &crs[i]
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d requests, none pending on a retry", len(crs)), nil
	})
	return found
}
