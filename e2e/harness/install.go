package harness

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
	"github.com/relaytls/relaytls/e2e/provider"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/testpki"
)

// Names an installation uses: the profiles' namespace and server name, and
// the workload cluster's name.
const (
	Namespace   = profiles.Namespace
	ServerName  = "relay.relaytls-system.svc"
	ClusterName = "workload-1"
)

// Secret names the harness reads or writes besides relaytls's own (those
// are in api/v1alpha1).
const (
	TelemetrySecret = "gloo-telemetry-gateway-tls-secret"
	TelemetryRoot   = "telemetry-root-secret"
)

// Options configure Install.
type Options struct {
	// T owns everything started; it is stopped when T ends.
	T    *testing.T
	Mode Mode
	// Mgmt and Workload are the two clusters.
	Mgmt, Workload provider.Cluster
	Bins           Binaries
	// Dir holds the projected mounts; LogDir the processes' logs (default
	// Dir/logs).
	Dir, LogDir string
	// RenewEvery, when set, makes cert-manager renew every certificate it
	// renews in the mode about this often (duration 1h, renewBefore 1h minus
	// RenewEvery: cert-manager refuses durations under 1h, not renewBefore
	// close to the duration). Zero keeps the profiles' production lifetimes.
	RenewEvery time.Duration
	// Progress receives one line per step; nil for none.
	Progress func(string)
}

// Renewed is a certificate that cert-manager renews in a mode.
type Renewed struct {
	Cluster     provider.Cluster
	Certificate string
	Secret      string
}

// Installation is a mode installed on both clusters, with the sidecars'
// Secret mounts projected.
type Installation struct {
	Options
	// Server and Agent are the sidecars' mounts: cert directory, trust
	// bundle file and token file ("" when the mode does not use one).
	Server, Agent Mounts
	// Renewed lists what cert-manager renews in this mode.
	Renewed []Renewed
	// IssuanceAddr is the issuance endpoint's address (modes 4 and 5).
	IssuanceAddr string
	// UserRoot is the user's root CA in the bring-your-own modes (3, 5, 6).
	UserRoot *testpki.Cert
	// Procs are the issuer processes.
	Procs []*Proc
}

// Mounts are the files a sidecar reads.
type Mounts struct {
	CertDir, Bundle, Token string
	Projectors             []*Projector
}

func (in *Installation) progress(format string, args ...any) {
	if in.Progress != nil {
		in.Progress(fmt.Sprintf(format, args...))
	}
}

// Install installs o.Mode on both clusters from the rendered deploy/
// profiles (the objects a GitOps repository would sync, without the
// Deployments: relay-issuer runs as a process under the profile's RBAC), adds
// what a user supplies in the bring-your-own modes, registers the workload
// cluster with the relayctl binary (only the root's ca.crt and the token
// cross over), waits until every Certificate is Ready, and projects the
// sidecars' Secrets.
func Install(ctx context.Context, o Options) (*Installation, error) {
	in := &Installation{Options: o}
	if in.LogDir == "" {
		in.LogDir = filepath.Join(o.Dir, "logs")
	}
	if err := os.MkdirAll(in.LogDir, 0o700); err != nil {
		return nil, err
	}
	// The projections and watches end before the clusters stop (cleanups
	// run last-registered first), so no watch holds an API server open.
	ctx, cancel := context.WithCancel(ctx)
	o.T.Cleanup(cancel)
	for _, c := range []provider.Cluster{o.Mgmt, o.Workload} {
		if err := createNamespace(ctx, c); err != nil {
			return nil, err
		}
	}
	if err := in.userSecrets(ctx); err != nil {
		return nil, err
	}
	if err := in.installManagement(ctx); err != nil {
		return nil, err
	}
	if err := in.installWorkload(ctx); err != nil {
		return nil, err
	}
	if err := in.project(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

// installManagement applies the management profile and the user's
// Certificates, waits for them, and starts relay-issuer when the profile has
// a RelayIssuer, until it is Ready.
func (in *Installation) installManagement(ctx context.Context) error {
	mgmtObjs, err := in.profileObjects("management")
	if err != nil {
		return err
	}
	in.progress("management: applying profile %s (%d objects)", in.Mode.Profile, len(mgmtObjs))
	if err := apply(ctx, in.Mgmt, mgmtObjs); err != nil {
		return err
	}
	if err := in.userCertificates(ctx, in.Mgmt, "management"); err != nil {
		return err
	}
	if err := waitCertificates(ctx, in.Mgmt, in.progress); err != nil {
		return err
	}
	if hasKind(mgmtObjs, "RelayIssuer") {
		if err := in.startIssuer(ctx, in.Mgmt, in.Mode.Enrolls()); err != nil {
			return err
		}
		if err := WaitIssuerReady(ctx, in.Mgmt, "relay", time.Minute); err != nil {
			return err
		}
		in.progress("management: RelayIssuer relay is Ready")
	}
	return nil
}

// installWorkload applies the workload profile: everything but the issuer
// and its Certificate first, then the registration, then those (as
// `relayctl register` writes them when the mode enrolls), and waits for the
// Certificates.
func (in *Installation) installWorkload(ctx context.Context) error {
	wlObjs, err := in.profileObjects("workload")
	if err != nil {
		return err
	}
	var issuers, certs []*unstructured.Unstructured
	wlObjs = slices.DeleteFunc(wlObjs, func(u *unstructured.Unstructured) bool {
		switch u.GetKind() {
		case "RelayIssuer":
			issuers = append(issuers, u)
		case "Certificate":
			certs = append(certs, u)
		default:
			return false
		}
		return true
	})
	in.progress("workload: applying profile %s (%d objects)", in.Mode.Profile, len(wlObjs)+len(issuers)+len(certs))
	if err := apply(ctx, in.Workload, wlObjs); err != nil {
		return err
	}
	if err := in.register(ctx); err != nil {
		return err
	}
	if len(issuers) > 0 {
		// The remote issuer and the relay-client Certificate are what
		// `relayctl register` writes; the profile's copies (with a
		// placeholder endpoint) are left out.
		if err := in.startIssuer(ctx, in.Workload, false); err != nil {
			return err
		}
		if err := in.relayctlRegister(ctx, false); err != nil {
			return err
		}
		if in.RenewEvery > 0 {
			in.Renewed = slices.DeleteFunc(in.Renewed, func(r Renewed) bool { return r.Cluster == in.Workload })
			in.Renewed = append(in.Renewed, Renewed{Cluster: in.Workload, Certificate: relayv1.ClientCertificateName, Secret: relayv1.ClientSecretName})
		}
	} else if err := apply(ctx, in.Workload, certs); err != nil {
		return err
	}
	if err := in.userCertificates(ctx, in.Workload, "workload"); err != nil {
		return err
	}
	return waitCertificates(ctx, in.Workload, in.progress)
}

func createNamespace(ctx context.Context, c provider.Cluster) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := c.Client().Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: creating namespace %s: %w", c.Name(), Namespace, err)
	}
	return nil
}

// profileObjects returns the profile's objects for role, without what the
// clusters already have (CRDs) and what needs a kubelet (Deployments,
// Services), with lifetimes shortened and the workload issuer pointed at the
// local issuance endpoint.
func (in *Installation) profileObjects(role string) ([]*unstructured.Unstructured, error) {
	objs, err := profiles.Objects(in.Mode.Profile, role)
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, u := range objs {
		switch u.GetKind() {
		case "CustomResourceDefinition", "Deployment", "Service":
			continue
		case "Certificate":
			if in.RenewEvery > 0 {
				life := time.Hour
				if isCA, _, _ := unstructured.NestedBool(u.Object, "spec", "isCA"); isCA {
					if u.GetName() == "relaytls-root" {
						out = append(out, u) // the root is not renewed (SPEC: a CA rollover is a user process)
						continue
					}
					life = 2 * time.Hour // outlives the leaves it signs, so they get their full hour
				}
				_ = unstructured.SetNestedField(u.Object, life.String(), "spec", "duration")
				_ = unstructured.SetNestedField(u.Object, (life - in.RenewEvery).String(), "spec", "renewBefore")
				in.Renewed = append(in.Renewed, Renewed{Cluster: in.cluster(role), Certificate: u.GetName(), Secret: nestedString(u, "spec", "secretName")})
			}
		case "RelayIssuer":
			if role == "workload" {
				_ = unstructured.SetNestedField(u.Object, in.IssuanceAddr, "spec", "remote", "endpoint")
				_ = unstructured.SetNestedField(u.Object, ServerName, "spec", "remote", "serverName")
			}
		}
		out = append(out, u)
	}
	return out, nil
}

func (in *Installation) cluster(role string) provider.Cluster {
	if role == "management" {
		return in.Mgmt
	}
	return in.Workload
}

func nestedString(u *unstructured.Unstructured, path ...string) string {
	s, _, _ := unstructured.NestedString(u.Object, path...)
	return s
}

func hasKind(objs []*unstructured.Unstructured, kind string) bool {
	return slices.ContainsFunc(objs, func(u *unstructured.Unstructured) bool { return u.GetKind() == kind })
}

func apply(ctx context.Context, c provider.Cluster, objs []*unstructured.Unstructured) error {
	for _, u := range objs {
		b, err := json.Marshal(u.Object)
		if err != nil {
			return err
		}
		if err := c.Apply(ctx, b); err != nil {
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
	}
	return nil
}

// clusterToken is the cluster token (generation 1) of cluster under root.
func clusterToken(t testing.TB, root []byte, cluster string) []byte {
	t.Helper()
	ct, err := proof.ClusterToken(proof.Token(root), cluster, proof.DefaultGeneration)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// NewToken returns a random relay identity token, as a user would make one
// (32 bytes of entropy).
func NewToken() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(base64.RawURLEncoding.EncodeToString(b))
}

type secretPut struct {
	c    provider.Cluster
	name string
	data map[string][]byte
}

// userSecrets creates what the user supplies in the bring-your-own modes.
func (in *Installation) userSecrets(ctx context.Context) error {
	t := in.T
	m := in.Mode.Number
	if m != 3 && m != 5 && m != 6 {
		return nil
	}
	root := testpki.Root(t, "user root CA")
	in.UserRoot = root
	rootOnly := map[string][]byte{"ca.crt": root.CertPEM()}
	puts := []secretPut{
		{in.Mgmt, relayv1.DefaultRootSecretName, rootOnly},
		{in.Workload, relayv1.DefaultRootSecretName, rootOnly},
		{in.Mgmt, TelemetryRoot, rootOnly},
		{in.Workload, TelemetryRoot, rootOnly},
	}
	caSecret := func(name string) map[string][]byte {
		inter := testpki.Intermediate(t, root, name)
		return map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()}
	}
	switch m {
	case 3:
		tok := NewToken()
		puts = append(puts,
			secretPut{in.Mgmt, "user-server-ca", caSecret("user server CA")},
			secretPut{in.Mgmt, relayv1.DefaultTokenSecretName, map[string][]byte{"token": tok}},
			// The workload cluster holds its own cluster token, never the root (SPEC §4).
			secretPut{in.Workload, relayv1.DefaultTokenSecretName, map[string][]byte{"token": clusterToken(t, tok, ClusterName)}})
	case 5:
		inter := testpki.Intermediate(t, root, "user intermediate CA")
		server := testpki.Issue(t, root, testpki.Options{CommonName: ServerName, DNSNames: []string{ServerName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		serverData := map[string][]byte{"tls.crt": server.CertPEM(), "tls.key": server.KeyPEM(t), "ca.crt": root.CertPEM()}
		puts = append(puts,
			secretPut{in.Mgmt, relayv1.DefaultSigningSecretName, map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": inter.KeyPEM(t), "ca.crt": root.CertPEM()}},
			secretPut{in.Mgmt, relayv1.CustomServerSecretName, serverData},
			secretPut{in.Mgmt, TelemetrySecret, serverData},
			secretPut{in.Mgmt, relayv1.DefaultTokenSecretName, map[string][]byte{"token": NewToken()}})
	case 6:
		puts = append(puts,
			secretPut{in.Mgmt, "user-server-ca", caSecret("user server CA")},
			secretPut{in.Workload, "user-client-ca", caSecret("user client CA")})
	}
	for _, p := range puts {
		if err := PutSecret(ctx, p.c, p.name, p.data); err != nil {
			return err
		}
	}
	return nil
}

// PutSecret creates or replaces the data of an Opaque Secret in Namespace.
func PutSecret(ctx context.Context, c provider.Cluster, name string, data map[string][]byte) error {
	var s corev1.Secret
	err := c.Client().Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}, Data: data}
		err = c.Client().Create(ctx, &s)
	} else if err == nil {
		s.Data = data
		err = c.Client().Update(ctx, &s)
	}
	if err != nil {
		return fmt.Errorf("%s: writing Secret %s: %w", c.Name(), name, err)
	}
	return nil
}

// GetSecret reads a Secret of Namespace.
func GetSecret(ctx context.Context, c provider.Cluster, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	if err := c.Client().Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, &s); err != nil {
		return nil, fmt.Errorf("%s: Secret %s: %w", c.Name(), name, err)
	}
	return &s, nil
}

// userCertificates creates the cert-manager objects a user makes with their
// own issuer in modes 3 and 6: a CA Issuer on the user's CA Secret, and the
// server (management) or client (workload) Certificate.
func (in *Installation) userCertificates(ctx context.Context, c provider.Cluster, role string) error {
	m := in.Mode.Number
	var issuer, caSecret, name, secret string
	var spec cmapi.CertificateSpec
	switch {
	case (m == 3 || m == 6) && role == "management":
		issuer, caSecret, name, secret = "user-server-ca", "user-server-ca", "relay-server", relayv1.CustomServerSecretName
		spec = cmapi.CertificateSpec{CommonName: ServerName, DNSNames: []string{ServerName}, Usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageServerAuth}}
	case m == 6 && role == "workload":
		issuer, caSecret, name, secret = "user-client-ca", "user-client-ca", "relay-client", relayv1.BYOClientSecretName
		spec = cmapi.CertificateSpec{CommonName: ClusterName, DNSNames: []string{ClusterName}, Usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth}}
	default:
		return nil
	}
	life := 30 * 24 * time.Hour
	renewBefore := 10 * 24 * time.Hour
	if in.RenewEvery > 0 {
		life, renewBefore = time.Hour, time.Hour-in.RenewEvery
		in.Renewed = append(in.Renewed, Renewed{Cluster: c, Certificate: name, Secret: secret})
	}
	spec.SecretName = secret
	spec.Duration = &metav1.Duration{Duration: life}
	spec.RenewBefore = &metav1.Duration{Duration: renewBefore}
	spec.PrivateKey = &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways}
	spec.IssuerRef = cmmeta.IssuerReference{Kind: "Issuer", Name: issuer}
	for _, obj := range []client.Object{
		&cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: issuer}, Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: caSecret}}}},
		&cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}, Spec: spec},
	} {
		if err := c.Client().Create(ctx, obj); err != nil {
			return fmt.Errorf("%s: creating %T %s: %w", c.Name(), obj, obj.GetName(), err)
		}
	}
	return nil
}

// register registers the workload cluster. In modes 2, 4 and 5 it is
// `relayctl register`, which copies only the root's ca.crt and the token
// from the management cluster (mode 2: --secrets-only; modes 4 and 5 then
// also write the remote issuer and the relay-client Certificate, once the
// workload issuer runs). In modes 3 and 6 the user put the root in both
// clusters. The collectors' telemetry-root-secret is copied here for the
// self-signed modes.
func (in *Installation) register(ctx context.Context) error {
	m := in.Mode.Number
	if m == 2 {
		if err := in.relayctlRegister(ctx, true); err != nil {
			return err
		}
	}
	if m == 2 || m == 4 {
		root, err := GetSecret(ctx, in.Mgmt, relayv1.DefaultRootSecretName)
		if err != nil {
			return err
		}
		for _, c := range []provider.Cluster{in.Mgmt, in.Workload} {
			if err := PutSecret(ctx, c, TelemetryRoot, map[string][]byte{"ca.crt": root.Data["ca.crt"]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// relayctlRegister runs `relayctl register` for ClusterName.
func (in *Installation) relayctlRegister(ctx context.Context, secretsOnly bool) error {
	args := []string{"register", "--cluster=" + ClusterName,
		"--mgmt-kubeconfig=" + in.Mgmt.AdminKubeconfig(), "--remote-kubeconfig=" + in.Workload.AdminKubeconfig()}
	if secretsOnly {
		args = append(args, "--secrets-only")
	} else {
		args = append(args, "--endpoint="+in.IssuanceAddr, "--server-name="+ServerName, "--timeout=2m")
		if in.RenewEvery > 0 {
			args = append(args, "--duration=1h", "--renew-before="+(time.Hour-in.RenewEvery).String())
		}
	}
	p, err := StartProc("relayctl-register", in.LogDir, in.Bins.Relayctl, args, nil)
	if err != nil {
		return err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.Stop(5 * time.Second)
		return ctx.Err()
	}
	if _, err := p.Exited(); err != nil {
		return fmt.Errorf("relayctl register failed (%v); its output is in %s", err, p.LogPath)
	}
	what := "copied the root's ca.crt and wrote this cluster's own cluster token (derived from the root token; never shown)"
	if !secretsOnly {
		what += ", wrote the remote RelayIssuer and the relay-client Certificate, which is Ready"
	}
	in.progress("relayctl register --cluster %s: %s", ClusterName, what)
	return nil
}

// startIssuer runs relay-issuer for c as its ServiceAccount; in the
// management cluster of modes 4 and 5 with the issuance endpoint.
func (in *Installation) startIssuer(ctx context.Context, c provider.Cluster, issuance bool) error {
	_, kubeconfig, err := c.ServiceAccount(ctx, Namespace, "relay-issuer")
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig, "--namespace=" + Namespace, "--cluster-resource-namespace=" + Namespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--leader-elect=true", "--max-retry-duration=1m",
	}
	name := "relay-issuer-" + c.Name()
	if issuance {
		dir, err := in.Mount(ctx, c, in.ServerSecretName(), "issuer-serving", "tls.crt", "tls.key")
		if err != nil {
			return err
		}
		addr, err := FreeAddr()
		if err != nil {
			return err
		}
		in.IssuanceAddr = addr
		args = append(args, "--issuance-listen-address="+addr, "--issuance-cert-dir="+dir.CertDir, "--issuance-issuer-name=relay")
	}
	p, err := StartProc(name, in.LogDir, in.Bins.Issuer, args, nil)
	if err != nil {
		return err
	}
	in.Procs = append(in.Procs, p)
	in.T.Cleanup(func() { _ = p.Stop(10 * time.Second) })
	in.progress("%s: relay-issuer started (pid %d, as ServiceAccount %s/relay-issuer)", c.Name(), p.cmd.Process.Pid, Namespace)
	return nil
}

// FreeAddr returns a free 127.0.0.1 port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Mount projects keys of a Secret of c into Dir/mounts/<name>, as a pod's
// Secret volume, and waits for the first generation. Its CertDir is the
// directory.
func (in *Installation) Mount(ctx context.Context, c provider.Cluster, secret, name string, keys ...string) (Mounts, error) {
	d, err := kubeletdir.New(filepath.Join(in.Dir, "mounts", name))
	if err != nil {
		return Mounts{}, err
	}
	p, err := Project(ctx, c.AdminConfig(), Namespace, secret, d, keys...)
	if err != nil {
		return Mounts{}, err
	}
	if err := p.Wait(ctx, 1, time.Minute); err != nil {
		return Mounts{}, fmt.Errorf("%s: %w", c.Name(), err)
	}
	return Mounts{CertDir: d.Path(), Projectors: []*Projector{p}}, nil
}

// project mounts the sidecars' Secrets as their pods would.
func (in *Installation) project(ctx context.Context) error {
	m := in.Mode.Number
	if m == 1 {
		return nil
	}
	serverSecret := in.ServerSecretName()
	var errs []error
	add := func(dst *Mounts, c provider.Cluster, secret, name, key string, set func(*Mounts, string)) {
		keys := []string{key}
		if key == "" {
			keys = []string{"tls.crt", "tls.key"}
		}
		mt, err := in.Mount(ctx, c, secret, name, keys...)
		if err != nil {
			errs = append(errs, err)
			return
		}
		dst.Projectors = append(dst.Projectors, mt.Projectors...)
		set(dst, mt.CertDir)
	}
	certDir := func(m *Mounts, dir string) { m.CertDir = dir }
	bundle := func(m *Mounts, dir string) { m.Bundle = filepath.Join(dir, "ca.crt") }
	token := func(m *Mounts, dir string) { m.Token = filepath.Join(dir, "token") }

	add(&in.Server, in.Mgmt, serverSecret, "server-tls", "", certDir)
	add(&in.Agent, in.Workload, relayv1.DefaultRootSecretName, "agent-root", "ca.crt", bundle)
	switch in.Mode.Sidecar {
	case "tls":
		add(&in.Server, in.Mgmt, relayv1.DefaultTokenSecretName, "server-token", "token", token)
		add(&in.Agent, in.Workload, relayv1.DefaultTokenSecretName, "agent-token", "token", token)
	case "mtls":
		// As the chart mounts it: where relay-issuer runs (modes 4 and 5)
		// the server trusts its trust bundle, which holds the old and the
		// new root during a root rotation.
		serverBundle := relayv1.DefaultRootSecretName
		if in.Mode.Enrolls() {
			serverBundle = relayv1.DefaultTrustBundleSecretName
		}
		add(&in.Server, in.Mgmt, serverBundle, "server-root", "ca.crt", bundle)
		client := relayv1.ClientSecretName
		if m == 6 {
			client = relayv1.BYOClientSecretName
		}
		add(&in.Agent, in.Workload, client, "agent-tls", "", certDir)
	}
	return errors.Join(errs...)
}

// WaitIssuerReady waits for the RelayIssuer's Ready=True at its generation.
func WaitIssuerReady(ctx context.Context, c provider.Cluster, name string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var iss relayv1.RelayIssuer
		if err := c.Client().Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, &iss); err != nil {
			last = err.Error()
			return false, nil
		}
		cond := meta.FindStatusCondition(iss.Status.Conditions, string(cmapi.IssuerConditionReady))
		if cond == nil {
			last = "no Ready condition"
			return false, nil
		}
		last = fmt.Sprintf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
		return cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == iss.Generation, nil
	})
	if err != nil {
		return fmt.Errorf("%s: RelayIssuer %s not Ready (%s): %w", c.Name(), name, last, err)
	}
	return nil
}

// waitCertificates waits until every Certificate in Namespace is Ready.
func waitCertificates(ctx context.Context, c provider.Cluster, progress func(string, ...any)) error {
	var l cmapi.CertificateList
	if err := c.Client().List(ctx, &l, client.InNamespace(Namespace)); err != nil {
		return err
	}
	for _, crt := range l.Items {
		if err := WaitCertificateReady(ctx, c, crt.Name, 2*time.Minute); err != nil {
			return err
		}
		progress("%s: Certificate %s is Ready (Secret %s)", c.Name(), crt.Name, crt.Spec.SecretName)
	}
	return nil
}

// WaitCertificateReady waits for a Certificate's Ready=True.
func WaitCertificateReady(ctx context.Context, c provider.Cluster, name string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var crt cmapi.Certificate
		if err := c.Client().Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, &crt); err != nil {
			last = err.Error()
			return false, nil
		}
		cond := apiutil.GetCertificateCondition(&crt, cmapi.CertificateConditionReady)
		if cond == nil {
			last = "no Ready condition"
			return false, nil
		}
		last = fmt.Sprintf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
		return cond.Status == cmmeta.ConditionTrue, nil
	})
	if err != nil {
		return fmt.Errorf("%s: Certificate %s not Ready (%s): %w", c.Name(), name, last, err)
	}
	return nil
}

// StopIssuer stops relay-issuer of c: the cluster's certificates are no
// longer signed (a workload cluster that is offline for issuance).
func (in *Installation) StopIssuer(c provider.Cluster) error {
	name := "relay-issuer-" + c.Name()
	for i, p := range in.Procs {
		if p.Name == name {
			in.Procs = slices.Delete(in.Procs, i, i+1)
			return p.Stop(10 * time.Second)
		}
	}
	return fmt.Errorf("%s: relay-issuer is not running", c.Name())
}

// StartWorkloadIssuer starts relay-issuer of the workload cluster again.
func (in *Installation) StartWorkloadIssuer(ctx context.Context) error {
	return in.startIssuer(ctx, in.Workload, false)
}

// ServerSecretName is the Secret the relay server certificate is in: the
// user's relay-server-tls-secret-custom in the bring-your-own modes (3, 5,
// 6, as their profiles' relaytls-config says), relay-server-tls-secret
// (cert-manager's) otherwise.
func (in *Installation) ServerSecretName() string {
	switch in.Mode.Number {
	case 3, 5, 6:
		return relayv1.CustomServerSecretName
	}
	return relayv1.ServerSecretName
}
