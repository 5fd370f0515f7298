package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/status"
	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/testpki"
)

const (
	ns         = "relaytls-system"
	serverName = "relay.mgmt.test"
)

// relayctl runs the CLI in-process and returns its output.
func relayctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

// startIssuer runs relay-issuer in c as its ServiceAccount, under the RBAC
// that the install applied, as its pod would.
func startIssuer(t *testing.T, c *localcluster.Cluster, o app.Options) {
	t.Helper()
	cfg, _, err := c.AddServiceAccount(ns, "relay-issuer")
	if err != nil {
		t.Fatal(err)
	}
	o.Namespace, o.MetricsAddr, o.HealthAddr = ns, "0", "0"
	o.LeaderElect, o.SeveralPerProcess, o.MaxRetryDuration = true, true, time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay-issuer in %s: %v", c.Name, err)
		}
	})
}

func getSecret(t *testing.T, c *localcluster.Cluster, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatalf("%s: Secret %s: %v", c.Name, name, err)
	}
	return &s
}

func mustFail(t *testing.T, out string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want a failure mentioning %q, got success:\n%s", want, out)
	}
	for _, w := range want {
		if !strings.Contains(out+err.Error(), w) {
			t.Errorf("output/error does not mention %q:\n%s\nerror: %v", w, out, err)
		}
	}
}

// TestInitRegisterStatusCheck installs mode 4 with relayctl init on a real
// management control plane, registers a workload control plane with relayctl
// register until its client certificate is Ready (both relay-issuers running
// under the RBAC the install applied, enrolling through the issuance
// endpoint), and runs status and check, including deliberate mistakes.
func TestInitRegisterStatusCheck(t *testing.T) {
	cs := localcluster.StartAll(t, localcluster.Options{Name: "management"}, localcluster.Options{Name: "workload"})
	mgmt, wl := cs[0], cs[1]
	for _, c := range cs {
		if err := relayv1.AddToScheme(c.Scheme); err != nil {
			t.Fatal(err)
		}
	}
	mk, wk := "--mgmt-kubeconfig="+mgmt.KubeconfigPath, "--remote-kubeconfig="+wl.KubeconfigPath

	// Refusals before anything is installed.
	out, err := relayctl(t, "init", "--mode", "mtls-byo-ca", "--server-secret", "relay-server-tls-secret", "--kubeconfig", mgmt.KubeconfigPath)
	mustFail(t, out, err, "reserved for the self-signed modes")
	out, err = relayctl(t, "init", "--mode", "mtls-byo-ca", "--kubeconfig", mgmt.KubeconfigPath)
	mustFail(t, out, err, ns+"/relay-root-tls-secret does not exist", ns+"/relay-tls-signing-secret does not exist",
		ns+"/relay-server-tls-secret-custom does not exist", ns+"/relay-identity-token-secret does not exist")
	out, err = relayctl(t, "register", "--cluster", "east", mk, wk, "--endpoint", "127.0.0.1:1")
	mustFail(t, out, err, "relaytls is not installed")

	// Management: mode 4 from the rendered profile.
	out, err = relayctl(t, "init", "--mode", "mtls-self-signed", "--server-dns-names", serverName, "--kubeconfig", mgmt.KubeconfigPath)
	if err != nil {
		t.Fatalf("relayctl init: %v\n%s", err, out)
	}
	for _, w := range []string{"applied CustomResourceDefinition relayissuers.relaytls.io", "applied RelayIssuer relaytls-system/relay", "Certificate relaytls-intermediate: Ready", "Done."} {
		if !strings.Contains(out, w) {
			t.Errorf("relayctl init output lacks %q:\n%s", w, out)
		}
	}
	for _, n := range []string{"relaytls-root", "relaytls-intermediate", "relaytls-server"} {
		if _, err := mgmt.WaitForCertificateReady(t.Context(), ns, n, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	server := getSecret(t, mgmt, "relay-server-tls-secret")
	pair, err := tls.X509KeyPair(server.Data["tls.crt"], server.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startIssuer(t, mgmt, app.Options{Issuance: &app.Issuance{
		Config:   endpoint.Config{IssuerName: "relay", Timeout: time.Minute, RatePerCluster: 10, Burst: 10},
		Listener: lis,
		TLS:      &tls.Config{Certificates: []tls.Certificate{pair}},
	}})
	// The workload relay-issuer's pod would start once register installed
	// its RBAC; here it starts with that RBAC already applied.
	identity, err := profiles.IssuerIdentity("mtls-self-signed", "workload")
	if err != nil {
		t.Fatal(err)
	}
	var idYAML bytes.Buffer
	for _, o := range identity {
		b, _ := o.MarshalJSON()
		idYAML.Write(b)
		idYAML.WriteString("\n")
	}
	if err := wl.Apply(t.Context(), idYAML.Bytes()); err != nil {
		t.Fatal(err)
	}
	startIssuer(t, wl, app.Options{})
	// relay-issuer generates the token when it first checks RelayIssuer relay.
	var token []byte
	err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var s corev1.Secret
		if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "relay-identity-token-secret"}, &s); err != nil {
			return false, nil
		}
		token = s.Data["token"]
		return len(token) > 0, nil
	})
	if err != nil {
		t.Fatalf("relay-issuer generated no token: %v", err)
	}
	endpointAddr := lis.Addr().String()
	reg := []string{"register", "--cluster", "east", mk, wk, "--endpoint", endpointAddr, "--server-name", serverName, "--timeout", "90s"}

	t.Run("dry-run prints no token", func(t *testing.T) {
		out, err := relayctl(t, append(reg, "--dry-run", "-o", "yaml")...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if bytes.Contains([]byte(out), bytes.TrimSpace(token)) {
			t.Fatal("--dry-run output contains the token")
		}
		for _, w := range []string{"kind: RelayIssuer", "cluster: east", "endpoint: " + endpointAddr, "kind: Certificate", "- east", "ca.crt:", "is NOT printed"} {
			if !strings.Contains(out, w) {
				t.Errorf("--dry-run output lacks %q:\n%s", w, out)
			}
		}
		var s corev1.Secret
		if err := wl.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "relay-identity-token-secret"}, &s); err == nil {
			t.Error("--dry-run wrote the token Secret")
		}
	})

	t.Run("register reaches a Ready client certificate", func(t *testing.T) {
		out, err := relayctl(t, reg...)
		if err != nil {
			t.Fatalf("relayctl register: %v\n%s", err, out)
		}
		t.Logf("relayctl register:\n%s", out)
		for _, w := range []string{"copied ca.crt of the management root", "copied the relay identity token", "RelayIssuer relay: Ready=True", "Certificate relay-client is Ready"} {
			if !strings.Contains(out, w) {
				t.Errorf("register output lacks %q:\n%s", w, out)
			}
		}
		if strings.Contains(out, string(bytes.TrimSpace(token))) {
			t.Fatal("register printed the token")
		}
		root := getSecret(t, wl, "relay-root-tls-secret")
		if len(root.Data) != 1 || !bytes.Equal(root.Data["ca.crt"], getSecret(t, mgmt, "relay-root-tls-secret").Data["ca.crt"]) {
			t.Errorf("the workload root Secret holds keys %v; want only the management root's ca.crt", keys(root.Data))
		}
		client := getSecret(t, wl, "relay-tls-client-secret")
		chain, err := check.Roots(client.Data["tls.crt"])
		if err != nil || len(chain) == 0 {
			t.Fatalf("client Secret tls.crt: %v", err)
		}
		if got := chain[0].DNSNames; len(got) != 1 || got[0] != "east" {
			t.Errorf("client certificate DNS names %v, want [east]", got)
		}
	})

	t.Run("register --secrets-only needs no endpoint", func(t *testing.T) {
		// The management cluster has no LoadBalancer Service to derive an
		// endpoint from, and --secrets-only does not need one.
		out, err := relayctl(t, "register", "--cluster", "east", mk, wk, "--secrets-only")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "copied the relay identity token to Secret "+ns+"/relay-identity-token-secret") {
			t.Errorf("register --secrets-only output:\n%s", out)
		}
	})

	t.Run("namespace flags", func(t *testing.T) {
		out, err := relayctl(t, "status", mk, "-n", "elsewhere")
		mustFail(t, out, err, "no ConfigMap elsewhere/relaytls-config", "pass -n")
		out, err = relayctl(t, "status", mk, "-n", "elsewhere", "--mgmt-namespace", ns)
		if err != nil || !strings.Contains(out, "role management") {
			t.Errorf("--mgmt-namespace over -n: %v\n%s", err, out)
		}
	})

	t.Run("status shows both sides", func(t *testing.T) {
		out, err := relayctl(t, "status", mk, wk)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		listed := false
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 4 && f[0] == "east" && f[1] == "1" && f[2] == "false" {
				listed = true
			}
		}
		if !strings.Contains(out, "GENERATION") || !listed {
			t.Errorf("status does not list the registered cluster east (generation 1, not revoked):\n%s", out)
		}
		for _, w := range []string{"role management, mode mtls-self-signed", "role workload, mode mtls-self-signed, cluster east", "relay-client", "relay-tls-client-secret", "relaytls-intermediate", "remote → " + endpointAddr} {
			if !strings.Contains(out, w) {
				t.Errorf("status lacks %q:\n%s", w, out)
			}
		}
	})

	t.Run("status -o json", func(t *testing.T) {
		code, stdout, stderr := cli(t, "status", mk, wk, "-o", "json")
		if code != exitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		t.Logf("relayctl status -o json:\n%s", stdout)
		st := decodeStatus(t, stdout)
		m, w := st.Management, st.Workload
		if m == nil || w == nil {
			t.Fatalf("want both sides, got:\n%s", stdout)
		}
		if m.Role != "management" || m.Mode != "mtls-self-signed" || m.Namespace != ns || w.Role != "workload" || w.Cluster != "east" {
			t.Errorf("sides: management %s/%s in %s, workload %s cluster %q", m.Role, m.Mode, m.Namespace, w.Role, w.Cluster)
		}
		if iss := findIssuer(m.Issuers, "relay"); iss == nil || iss.Kind != "ca" || iss.Ready != "True" || iss.Stale {
			t.Errorf("management issuer relay: %+v", iss)
		}
		if iss := findIssuer(w.Issuers, "relay"); iss == nil || iss.Kind != "remote" || iss.Endpoint != endpointAddr || iss.Ready != "True" {
			t.Errorf("workload issuer relay: %+v", iss)
		}
		leaf := clientLeaf(t, wl)
		var crt *status.Certificate
		for i := range w.Certificates {
			if w.Certificates[i].Name == "relay-client" {
				crt = &w.Certificates[i]
			}
		}
		if crt == nil || crt.SecretName != "relay-tls-client-secret" || crt.Ready != "True" || crt.Serial != fmt.Sprintf("%x", leaf.SerialNumber) ||
			crt.NotAfter == nil || !crt.NotAfter.Time.Equal(leaf.NotAfter) {
			t.Errorf("workload certificate relay-client: %+v; the Secret's leaf has serial %x, NotAfter %s", crt, leaf.SerialNumber, leaf.NotAfter)
		}
		if w.Clusters != nil {
			t.Errorf("a workload side lists clusters: %+v", w.Clusters)
		}
		if len(m.Clusters) != 1 {
			t.Fatalf("management clusters: %+v, want east alone", m.Clusters)
		}
		east := m.Clusters[0]
		mroot, err := check.Roots(getSecret(t, mgmt, "relay-root-tls-secret").Data["ca.crt"])
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(mroot[0].Raw)
		if east.Name != "east" || east.TokenGeneration != 1 || east.Revoked || east.SingleUseToken || east.Registered != "True" || east.Enrolled != "True" ||
			east.LastCertificateSerial != fmt.Sprintf("%x", leaf.SerialNumber) || !slices.Contains(east.LastTrustBundle, hex.EncodeToString(sum[:])) {
			t.Errorf("RelayCluster east: %+v; want generation 1, registered, enrolled, serial %x, given root %x", east, leaf.SerialNumber, sum)
		}
		if len(m.Warnings) != 0 || len(w.Warnings) != 0 {
			t.Errorf("a healthy setup has warnings: %+v %+v", m.Warnings, w.Warnings)
		}
		// Text stays the default and lists the same cluster.
		code, stdout, _ = cli(t, "status", mk, "-o", "text")
		if code != exitOK || !strings.Contains(stdout, "role management") || strings.HasPrefix(stdout, "{") {
			t.Errorf("-o text: exit %d\n%s", code, stdout)
		}
	})

	t.Run("register --single-use-token sets the field", func(t *testing.T) {
		// The Secrets go to a scratch namespace of the workload cluster, so
		// that east's stay as they are.
		scratch := "--remote-namespace=scratch"
		singleUse := func(name string) bool {
			t.Helper()
			var rc relayv1.RelayCluster
			if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &rc); err != nil {
				t.Fatalf("RelayCluster %s: %v", name, err)
			}
			return rc.Spec.SingleUseToken
		}
		out, err := relayctl(t, "register", "--cluster", "north", mk, wk, scratch, "--secrets-only", "--single-use-token")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !singleUse("north") || !strings.Contains(out, `registered cluster "north"`) || !strings.Contains(out, "single-use token: it enrolls once") {
			t.Errorf("a new RelayCluster north without spec.singleUseToken, or no word of it; register said:\n%s", out)
		}
		// An existing RelayCluster gets the field set; without the flag it is left alone.
		out, err = relayctl(t, "register", "--cluster", "south", mk, wk, scratch, "--secrets-only")
		if err != nil || singleUse("south") {
			t.Fatalf("register without --single-use-token made south single-use, or failed: %v\n%s", err, out)
		}
		out, err = relayctl(t, "register", "--cluster", "south", mk, wk, scratch, "--secrets-only", "--single-use-token")
		if err != nil || !singleUse("south") || !strings.Contains(out, "set spec.singleUseToken on RelayCluster "+ns+"/south") {
			t.Errorf("the existing RelayCluster south did not get spec.singleUseToken: %v\n%s", err, out)
		}
		if out, err = relayctl(t, "register", "--cluster", "south", mk, wk, scratch, "--secrets-only"); err != nil || !singleUse("south") {
			t.Errorf("register without the flag cleared south's spec.singleUseToken: %v\n%s", err, out)
		}
		// status shows it, as data and as text.
		code, stdout, stderr := cli(t, "status", mk, "-o", "json")
		if code != exitOK {
			t.Fatalf("status -o json: exit %d\n%s", code, stderr)
		}
		got := map[string]bool{}
		for _, c := range decodeStatus(t, stdout).Management.Clusters {
			got[c.Name] = c.SingleUseToken
		}
		if want := map[string]bool{"east": false, "north": true, "south": true}; !maps.Equal(got, want) {
			t.Errorf("status -o json clusters' singleUseToken %v, want %v", got, want)
		}
		if out, err := relayctl(t, "status", mk); err != nil || !strings.Contains(out, "1/single-use") {
			t.Errorf("status text does not mark the single-use clusters: %v\n%s", err, out)
		}
	})

	t.Run("token and revoke", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "north.token")
		out, err := relayctl(t, "token", "--cluster", "north", mk, "--output-file", f)
		if err != nil || !strings.Contains(out, `wrote the cluster token of "north" to `+f) {
			t.Fatalf("relayctl token: %v\n%s", err, out)
		}
		root, err := proof.ParseToken(token)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proof.ClusterToken(root, "north", 1)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(f); err != nil || string(b) != string(want)+"\n" || strings.Contains(out, string(want)) {
			t.Errorf("the token file does not hold north's generation-1 token, or the output shows it: %v", err)
		}
		generation := func() (int64, bool) {
			var rc relayv1.RelayCluster
			if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "north"}, &rc); err != nil {
				t.Fatal(err)
			}
			return rc.TokenGeneration(), rc.Spec.Revoked
		}
		out, err = relayctl(t, "revoke", "--cluster", "north", mk)
		if gen, revoked := generation(); err != nil || !revoked || gen != 1 || !strings.Contains(out, `cluster "north" revoked`) {
			t.Errorf("revoke: generation %d, revoked %t, %v\n%s", gen, revoked, err, out)
		}
		out, err = relayctl(t, "revoke", "--cluster", "north", mk, "--undo")
		if gen, revoked := generation(); err != nil || revoked || gen != 2 || !strings.Contains(out, `cluster "north" re-admitted with token generation 2`) {
			t.Errorf("revoke --undo: generation %d, revoked %t, %v\n%s", gen, revoked, err, out)
		}
	})

	t.Run("token reads the root token from the Secret relaytls-config names", func(t *testing.T) {
		custom := []byte(strings.Repeat("c", 64))
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "custom-root-token"}, Data: map[string][]byte{"token": custom}}
		if err := mgmt.Client.Create(t.Context(), sec); err != nil {
			t.Fatal(err)
		}
		setTokenSecret := func(name string) {
			t.Helper()
			var cm corev1.ConfigMap
			if err := mgmt.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "relaytls-config"}, &cm); err != nil {
				t.Fatal(err)
			}
			if name == "" {
				delete(cm.Data, "tokenSecret")
			} else {
				cm.Data["tokenSecret"] = name
			}
			if err := mgmt.Client.Update(context.Background(), &cm); err != nil {
				t.Fatal(err)
			}
		}
		var cm corev1.ConfigMap
		if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "relaytls-config"}, &cm); err != nil {
			t.Fatal(err)
		}
		orig := cm.Data["tokenSecret"]
		setTokenSecret("custom-root-token")
		t.Cleanup(func() { setTokenSecret(orig) })
		f := filepath.Join(t.TempDir(), "west.token")
		if out, err := relayctl(t, "token", "--cluster", "west", mk, "--output-file", f); err != nil {
			t.Fatalf("relayctl token: %v\n%s", err, out)
		}
		want, err := proof.ClusterToken(proof.Token(custom), "west", 1)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(f); err != nil || string(b) != string(want)+"\n" {
			t.Errorf("relayctl token did not derive west's token from the Secret relaytls-config names (custom-root-token): %v", err)
		}
	})

	dial := "--server-addr=" + serverName + ":9000"
	t.Run("check passes the correct setup", func(t *testing.T) {
		out, err := relayctl(t, "check", mk, wk, dial)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, w := range []string{"ok       server-san", "ok       client-san", "ok       bundle", "ok       token", "ok       chain", "ok       lifetime"} {
			if !strings.Contains(out, w) {
				t.Errorf("check output lacks %q:\n%s", w, out)
			}
		}
	})

	t.Run("check flags a wrong server SAN", func(t *testing.T) {
		out, err := relayctl(t, "check", mk, wk, "--server-addr=relay.elsewhere.test:9000")
		mustFail(t, out, err, "ERROR    server-san", `not "relay.elsewhere.test"`, "fix:")
	})

	t.Run("check flags a bundle mismatch", func(t *testing.T) {
		root := getSecret(t, wl, "relay-root-tls-secret")
		good := root.Data["ca.crt"]
		other := testpki.Root(t, "someone else's root")
		root.Data["ca.crt"] = other.CertPEM()
		if err := wl.Client.Update(t.Context(), root); err != nil {
			t.Fatal(err)
		}
		out, err := relayctl(t, "check", mk, wk, dial)
		mustFail(t, out, err, "ERROR    bundle", "differs from the management root", "relayctl register")
		root.Data["ca.crt"] = good
		if err := wl.Client.Update(t.Context(), root); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("check flags a too-short lifetime", func(t *testing.T) {
		out, err := relayctl(t, append(reg, "--duration", "2h", "--renew-before", "40m")...)
		if err != nil {
			t.Fatalf("re-register with a short duration: %v\n%s", err, out)
		}
		err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			chain, err := check.Roots(getSecret(t, wl, "relay-tls-client-secret").Data["tls.crt"])
			return err == nil && chain[0].NotAfter.Sub(chain[0].NotBefore) <= 2*time.Hour, nil
		})
		if err != nil {
			t.Fatalf("cert-manager did not reissue relay-client with a 2h lifetime: %v", err)
		}
		out, err = relayctl(t, "check", mk, wk, dial)
		mustFail(t, out, err, "ERROR    lifetime", "relay-tls-client-secret lives only 2h0m0s", "spec.duration of Certificate relay-client")
	})
	// Last: it leaves the workload unable to renew.
	t.Run("register explains a failure", func(t *testing.T) {
		out, err := relayctl(t, "register", "--cluster", "west", mk, wk, "--endpoint", endpointAddr, "--server-name", "relay.wrong.test", "--timeout", "30s")
		t.Logf("relayctl register (wrong server name):\n%s\n%v", out, err)
		mustFail(t, out, err, "not Ready after 30s", "Last seen:", "RelayIssuer relay: Ready=False", "relay.wrong.test", "Cause: the endpoint's certificate", "--server-name")
		if strings.Contains(out+err.Error(), string(bytes.TrimSpace(token))) {
			t.Fatal("the failure output contains the token")
		}
	})

	t.Run("status -o json warns of the failing issuer", func(t *testing.T) {
		code, stdout, stderr := cli(t, "status", wk, "-o", "json")
		if code != exitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		w := decodeStatus(t, stdout).Workload
		if w == nil || len(w.Warnings) == 0 {
			t.Fatalf("want a warning for RelayIssuer relay (wrong server name), got:\n%s", stdout)
		}
		found := false
		for _, wn := range w.Warnings {
			found = found || wn.Object == "RelayIssuer/relay" && strings.Contains(wn.Message, "relay.wrong.test")
		}
		if !found {
			t.Errorf("no warning on RelayIssuer/relay naming relay.wrong.test: %+v", w.Warnings)
		}
		if iss := findIssuer(w.Issuers, "relay"); iss == nil || iss.Ready != "False" {
			t.Errorf("workload issuer relay: %+v, want Ready False", iss)
		}
		// An unreadable cluster is named in the data, and the exit is 1.
		code, stdout, _ = cli(t, "status", wk, "--remote-namespace", "elsewhere", "-o", "json")
		if r := decodeStatus(t, stdout).Workload; code != exitFailed || r == nil || !strings.Contains(r.Error, "no ConfigMap elsewhere/relaytls-config") || r.Namespace != "elsewhere" {
			t.Errorf("unreadable cluster: exit %d, output:\n%s", code, stdout)
		}
	})

	t.Run("check flags a reserved server Secret name", func(t *testing.T) {
		var cm corev1.ConfigMap
		if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "relaytls-config"}, &cm); err != nil {
			t.Fatal(err)
		}
		// As a GitOps overlay that switched to mode 3 but kept the
		// self-signed modes' Secret name would leave it.
		cm.Data["mode"], cm.Data["serverSecret"] = "tls-byo-server", "relay-server-tls-secret"
		if err := mgmt.Client.Update(t.Context(), &cm); err != nil {
			t.Fatal(err)
		}
		out, err := relayctl(t, "check", mk, dial)
		mustFail(t, out, err, "ERROR    reserved-name", "reserved for the self-signed modes", "relay-server-tls-secret-custom")
	})
}

// statusData is status -o json as a user's program reads it.
type statusData struct {
	Management, Workload *struct {
		status.Report
		Error string `json:"error"`
	}
}

func decodeStatus(t *testing.T, out string) statusData {
	t.Helper()
	var st statusData
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("status -o json does not decode: %v\n%s", err, out)
	}
	return st
}

func findIssuer(l []status.Issuer, name string) *status.Issuer {
	for i := range l {
		if l[i].Name == name {
			return &l[i]
		}
	}
	return nil
}

// clientLeaf is the leaf of the workload cluster's relay client Secret.
func clientLeaf(t *testing.T, wl *localcluster.Cluster) *x509.Certificate {
	t.Helper()
	chain, err := check.Roots(getSecret(t, wl, "relay-tls-client-secret").Data["tls.crt"])
	if err != nil || len(chain) == 0 {
		t.Fatalf("client Secret tls.crt: %v", err)
	}
	return chain[0]
}

func keys(m map[string][]byte) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return k
}
