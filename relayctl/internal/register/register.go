// Package register is `relayctl register`: it connects a workload cluster to
// the management cluster. It copies only ca.crt of the management root and
// the relay identity token, installs the workload side of the mode (the
// remote RelayIssuer and the relay-client Certificate in modes 4 and 5),
// waits with visible progress until the client certificate is Ready, and
// explains a failure from the issuer's, Certificate's and request's
// conditions.
package register

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
	"github.com/relaytls/relaytls/internal/fingerprint"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/initcmd"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// Options of relayctl register.
type Options struct {
	// Cluster is the workload cluster's name (DNS-1123 label).
	Cluster string
	// Endpoint is the issuance endpoint host:port as the workload cluster
	// reaches it; empty derives it from the management Service when that is
	// a LoadBalancer.
	Endpoint string
	// ServerName the endpoint's certificate must carry (default: host of
	// Endpoint).
	ServerName string
	// Duration and RenewBefore of the relay-client Certificate; zero keeps
	// the profile's.
	Duration, RenewBefore time.Duration
	// Timeout bounds the wait for a Ready certificate.
	Timeout time.Duration
	// Poll is the progress interval (default 500ms).
	Poll time.Duration
	// SecretsOnly: only the two Secrets are copied, so no endpoint is
	// needed or derived.
	SecretsOnly bool
	// SingleUseToken sets spec.singleUseToken on the cluster's RelayCluster
	// (created with it, or set on an existing one): the token enrolls once,
	// relay-issuer advances the generation after the first certificate and
	// renewals go by possession of the current certificate.
	SingleUseToken bool
}

// Validate checks the options that need no cluster.
func (o *Options) Validate() error {
	if o.Cluster == "" {
		return errors.New("--cluster is required: the workload cluster's name, the DNS name of its relay client certificate")
	}
	if err := proof.ValidateCluster(o.Cluster); err != nil {
		return fmt.Errorf("--cluster: %w", err)
	}
	if o.Endpoint != "" {
		if _, port, err := net.SplitHostPort(o.Endpoint); err != nil || port == "" {
			return fmt.Errorf("--endpoint %q must be host:port of the issuance endpoint", o.Endpoint)
		}
	}
	if o.Duration < 0 || o.RenewBefore < 0 {
		return errors.New("--duration and --renew-before must not be negative")
	}
	if o.Duration > 0 && o.RenewBefore >= o.Duration {
		return fmt.Errorf("--renew-before %s must be shorter than --duration %s, or cert-manager renews continuously", o.RenewBefore, o.Duration)
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 500 * time.Millisecond
	}
	return nil
}

// Plan is what register writes to the workload cluster.
type Plan struct {
	Mode modes.Mode
	// Objects are the workload profile's objects, adjusted.
	Objects []*unstructured.Unstructured
	// RootCA is the management root's ca.crt (public).
	RootCA []byte
	// token is the workload cluster's own cluster token (SPEC §4), derived
	// from the management root token; never printed. Under tokenScope
	// Shared it is the root token itself.
	token []byte
	// mgmt, cluster and record: the management cluster gets a RelayCluster
	// for the workload cluster when it has none. singleUse: that
	// RelayCluster has (or, with setSingleUse, is given) spec.singleUseToken.
	mgmt                    *kube.Conn
	cluster                 string
	record                  bool
	singleUse, setSingleUse bool
	// Namespace of the workload side, for DryRun (empty: the default).
	Namespace string
	// Rotation names the root rotation under way on the management issuer
	// ("" for none); RootCA is then its trust bundle (old and new root), and
	// CopySecrets asks the cluster's client certificate to renew, so that it
	// records the bundle at once.
	Rotation string
}

func (p *Plan) namespace() string {
	if p.Namespace == "" {
		return modes.Namespace
	}
	return p.Namespace
}

// managementConfig reads the management cluster's relaytls-config and its
// mode, refusing a cluster installed in another role.
func managementConfig(ctx context.Context, mgmt *kube.Conn) (map[string]string, modes.Mode, error) {
	cfg, err := check.Config(ctx, mgmt)
	if err != nil {
		return nil, modes.Mode{}, err
	}
	if cfg["role"] != "management" {
		return nil, modes.Mode{}, fmt.Errorf("%s is installed as a %q cluster, not the management cluster; pass the management cluster's context to --mgmt-context", mgmt.Name, cfg["role"])
	}
	mode, err := modes.Parse(cfg["mode"])
	if err != nil {
		return nil, modes.Mode{}, fmt.Errorf("%s: relaytls-config: %w", mgmt.Name, err)
	}
	return cfg, mode, nil
}

// Prepare reads the management cluster and builds the plan.
func Prepare(ctx context.Context, mgmt *kube.Conn, o Options) (*Plan, error) {
	cfg, mode, err := managementConfig(ctx, mgmt)
	if err != nil {
		return nil, err
	}
	if err := registrable(mode, o.Cluster); err != nil {
		return nil, err
	}
	p := &Plan{Mode: mode, mgmt: mgmt, cluster: o.Cluster, singleUse: o.SingleUseToken}
	if err := p.readTrustBundle(ctx, cfg); err != nil {
		return nil, err
	}
	rootToken, err := managementToken(ctx, mgmt, cfg)
	if err != nil {
		return nil, err
	}
	shared := sharedScope(ctx, mgmt)
	if o.SingleUseToken {
		if err := singleUsable(mgmt, mode, shared); err != nil {
			return nil, err
		}
	}
	gen, err := p.readRecord(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.deriveToken(rootToken, shared, gen); err != nil {
		return nil, err
	}
	p.Objects, err = workloadObjects(ctx, mgmt, mode, o)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// registrable refuses the modes that have nothing to register.
func registrable(mode modes.Mode, cluster string) error {
	switch {
	case mode.Name == "insecure":
		return fmt.Errorf("mode insecure has nothing to register: start the agent's relay-sidecar with --mode=insecure --cluster=%s", cluster)
	case !mode.Token:
		return fmt.Errorf("mode %s uses no tokens and has nothing to copy: create Secrets %s and %s in the workload cluster from your PKI, then run relayctl check", mode.Name, modes.RootSecret, modes.BYOClientSecret)
	}
	return nil
}

// secretKey reads key of the management cluster's Secret name; what says
// what it holds, for the errors.
func secretKey(ctx context.Context, mgmt *kube.Conn, name, key, what string) ([]byte, error) {
	var s corev1.Secret
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s: Secret %s/%s (%s) does not exist yet; in the self-signed modes cert-manager and relay-issuer create it shortly after install (see relayctl status)", mgmt.Name, mgmt.Namespace, name, what)
		}
		return nil, fmt.Errorf("%s: reading Secret %s/%s: %w", mgmt.Name, mgmt.Namespace, name, err)
	}
	if len(s.Data[key]) == 0 {
		return nil, fmt.Errorf("%s: Secret %s/%s has no key %s (%s)", mgmt.Name, mgmt.Namespace, name, key, what)
	}
	return s.Data[key], nil
}

// configName is the Secret name relaytls-config gives under key, else def.
func configName(cfg map[string]string, key, def string) string {
	if cfg[key] == "" {
		return def
	}
	return cfg[key]
}

// readTrustBundle sets RootCA: the management root's ca.crt, or during a
// root rotation its trust bundle (and Rotation its name).
func (p *Plan) readTrustBundle(ctx context.Context, cfg map[string]string) error {
	mgmt := p.mgmt
	rootName := configName(cfg, "rootSecret", modes.RootSecret)
	root, err := secretKey(ctx, mgmt, rootName, "ca.crt", "the root CA certificate")
	if err != nil {
		return err
	}
	if _, err := check.Roots(root); err != nil {
		return fmt.Errorf("%s: Secret %s/%s ca.crt is not PEM certificates: %v", mgmt.Name, mgmt.Namespace, rootName, err)
	}
	rotation, bundle, err := rotationBundle(ctx, mgmt)
	if err != nil {
		return err
	}
	if bundle != nil {
		root = bundle
	}
	p.RootCA, p.Rotation = root, rotation
	return nil
}

// managementToken reads the management root token from the Secret
// relaytls-config names.
func managementToken(ctx context.Context, mgmt *kube.Conn, cfg map[string]string) (proof.Token, error) {
	tokenName := configName(cfg, "tokenSecret", modes.TokenSecret)
	rawToken, err := secretKey(ctx, mgmt, tokenName, "token", "the relay identity token")
	if err != nil {
		return nil, err
	}
	rootToken, err := proof.ParseToken(rawToken)
	if err != nil {
		return nil, fmt.Errorf("%s: Secret %s/%s token: %w", mgmt.Name, mgmt.Namespace, tokenName, err)
	}
	return rootToken, nil
}

// singleUsable refuses --single-use-token where a token must stay valid
// or is not the cluster's own.
func singleUsable(mgmt *kube.Conn, mode modes.Mode, shared bool) error {
	switch {
	case !mode.AutoClient:
		return fmt.Errorf("--single-use-token: mode %s uses the token as the tunnel credential, which must stay valid; single-use tokens are for the modes with automatic client certificates (mtls-self-signed, mtls-byo-ca)", mode.Name)
	case shared:
		return fmt.Errorf("--single-use-token: %s's issuer %s/%s has tokenScope Shared, where every cluster holds the root token; single-use tokens need PerCluster (relayctl migrate-scope)", mgmt.Name, mgmt.Namespace, modes.RelayIssuerName)
	}
	return nil
}

// readRecord reads the cluster's RelayCluster: it returns the token
// generation, refuses a revoked cluster, and notes whether the record is to
// be created, or its spec.singleUseToken set.
func (p *Plan) readRecord(ctx context.Context) (int64, error) {
	mgmt := p.mgmt
	var rc relayv1.RelayCluster
	switch err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: p.cluster}, &rc); {
	case err == nil:
		if rc.Spec.Revoked {
			return 0, fmt.Errorf("%s: cluster %q is revoked (RelayCluster %s/%s has spec.revoked: true); to re-admit it, set revoked: false and bump spec.tokenGeneration, then register again", mgmt.Name, p.cluster, mgmt.Namespace, p.cluster)
		}
		p.setSingleUse = p.singleUse && !rc.Spec.SingleUseToken
		return rc.TokenGeneration(), nil
	case apierrors.IsNotFound(err):
		p.record = true
	case meta.IsNoMatchError(err):
		// An older install without the RelayCluster CRD: nothing to record.
		if p.singleUse {
			return 0, fmt.Errorf("--single-use-token: %s has no RelayCluster CRD to record it on; upgrade the install", mgmt.Name)
		}
	default:
		return 0, fmt.Errorf("%s: reading RelayCluster %s/%s: %w", mgmt.Name, mgmt.Namespace, p.cluster, err)
	}
	return proof.DefaultGeneration, nil
}

// deriveToken sets the token the workload cluster gets: its own cluster
// token of generation gen, or under tokenScope Shared the root token.
func (p *Plan) deriveToken(rootToken proof.Token, shared bool, gen int64) error {
	if shared {
		p.token = []byte(rootToken)
		return nil
	}
	ct, err := proof.ClusterToken(rootToken, p.cluster, gen)
	if err != nil {
		return err
	}
	p.token = []byte(ct)
	return nil
}

// workloadObjects are the workload profile's objects of mode, with the
// cluster's name and the endpoint (derived from the management Service
// when not given and needed).
func workloadObjects(ctx context.Context, mgmt *kube.Conn, mode modes.Mode, o Options) ([]*unstructured.Unstructured, error) {
	endpoint := o.Endpoint
	if mode.AutoClient && endpoint == "" && !o.SecretsOnly {
		var err error
		endpoint, err = endpointFromService(ctx, mgmt)
		if err != nil {
			return nil, err
		}
	}
	objs, err := profiles.Objects(mode.Name, "workload")
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if err := adjust(obj, o, endpoint); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// adjust replaces the profile's example cluster name and endpoint.
func adjust(obj *unstructured.Unstructured, o Options, endpoint string) error {
	set := func(v any, path ...string) error { return unstructured.SetNestedField(obj.Object, v, path...) }
	var err error
	switch obj.GetKind() + "/" + obj.GetName() {
	case "ConfigMap/" + modes.ConfigMapName:
		err = set(o.Cluster, "data", "cluster")
		if _, ok, _ := unstructured.NestedString(obj.Object, "data", "endpoint"); ok { // only the modes with a remote issuer have one
			err = errors.Join(err, set(endpoint, "data", "endpoint"))
		}
	case "RelayIssuer/" + modes.RelayIssuerName:
		err = errors.Join(set(o.Cluster, "spec", "remote", "cluster"), set(endpoint, "spec", "remote", "endpoint"))
		if o.ServerName != "" {
			err = errors.Join(err, set(o.ServerName, "spec", "remote", "serverName"))
		}
	case "Certificate/" + modes.ClientCertificate:
		err = errors.Join(set(o.Cluster, "spec", "commonName"), unstructured.SetNestedStringSlice(obj.Object, []string{o.Cluster}, "spec", "dnsNames"))
		if o.Duration > 0 {
			err = errors.Join(err, set(o.Duration.String(), "spec", "duration"))
		}
		if o.RenewBefore > 0 {
			err = errors.Join(err, set(o.RenewBefore.String(), "spec", "renewBefore"))
		}
	}
	return err
}

func endpointFromService(ctx context.Context, mgmt *kube.Conn) (string, error) {
	var svc corev1.Service
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: "relay-issuer"}, &svc); err != nil {
		return "", fmt.Errorf("--endpoint is required: %s has no issuance Service %s/relay-issuer to derive it from (%v)", mgmt.Name, mgmt.Namespace, err)
	}
	port := modes.IssuanceDefaultPort
	if len(svc.Spec.Ports) > 0 {
		port = strconv.Itoa(int(svc.Spec.Ports[0].Port))
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		host := ing.Hostname
		if host == "" {
			host = ing.IP
		}
		if host != "" {
			return net.JoinHostPort(host, port), nil
		}
	}
	return "", fmt.Errorf("--endpoint is required: Service %s/relay-issuer in %s is %s without a load balancer address, so the address the workload cluster reaches it at is unknown", mgmt.Namespace, mgmt.Name, svc.Spec.Type)
}

// Secrets are the two Secrets copied to the workload cluster.
func (p *Plan) secrets(namespace, rootName, tokenName string) []*corev1.Secret {
	mk := func(name string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "relayctl"}},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}
	}
	return []*corev1.Secret{
		mk(rootName, map[string][]byte{"ca.crt": p.RootCA}),
		mk(tokenName, map[string][]byte{"token": p.token}),
	}
}

// DryRun prints what register would write as YAML, headed by DryRunNote.
// The root CA is public and is printed; the token Secret is not: a token
// must not land in Git.
func (p *Plan) DryRun(w io.Writer) error {
	objs, err := p.DryRunObjects()
	if err != nil {
		return err
	}
	p.DryRunNote(w)
	return initcmd.YAML(w, objs)
}

// DryRunNote says, as YAML comments, what DryRun leaves out and how to
// create it out of band.
func (p *Plan) DryRunNote(w io.Writer) {
	fmt.Fprintf(w, "# relayctl register --dry-run: the workload side of mode %s.\n", p.Mode.Name)
	fmt.Fprintf(w, "# Secret %s/%s (key token, the relay identity token) is NOT printed: a token\n", p.namespace(), modes.TokenSecret)
	fmt.Fprintf(w, "# must not be committed to Git. Create it in the workload cluster out of band,\n")
	fmt.Fprintf(w, "# e.g. with relayctl register --secrets-only, a sealed/external secret, or\n")
	fmt.Fprintf(w, "#   kubectl -n %s create secret generic %s --from-file=token=<file>\n", p.namespace(), modes.TokenSecret)
}

// DryRunObjects are the objects register would write, without the token
// Secret: the workload profile's and the root's ca.crt.
func (p *Plan) DryRunObjects() ([]*unstructured.Unstructured, error) {
	root := p.secrets(p.namespace(), modes.RootSecret, modes.TokenSecret)[0]
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(root)
	if err != nil {
		return nil, err
	}
	delete(u["metadata"].(map[string]any), "creationTimestamp")
	return append(slices.Clone(p.Objects), &unstructured.Unstructured{Object: u}), nil
}

// CopySecrets writes only the two Secrets to the workload cluster.
func (p *Plan) CopySecrets(ctx context.Context, remote *kube.Conn, progress io.Writer) error {
	if err := p.recordCluster(ctx, progress); err != nil {
		return err
	}
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(remote.Namespace)
	if err := remote.Apply(ctx, []*unstructured.Unstructured{ns}, nil); err != nil {
		return err
	}
	for i, s := range p.secrets(remote.Namespace, modes.RootSecret, modes.TokenSecret) {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
		if err != nil {
			return err
		}
		delete(u["metadata"].(map[string]any), "creationTimestamp")
		obj := &unstructured.Unstructured{Object: u}
		if err := remote.Apply(ctx, []*unstructured.Unstructured{obj}, nil); err != nil {
			// The error names the Secret; the apply error never holds its data.
			return err
		}
		switch {
		case i == 0 && p.Rotation != "":
			fmt.Fprintf(progress, "  copied the trust bundle of root rotation %q (ca.crt of %s: the roots being rotated) to Secret %s/%s\n", p.Rotation, relayv1.DefaultTrustBundleSecretName, remote.Namespace, s.Name)
		case i == 0:
			fmt.Fprintf(progress, "  copied ca.crt of the management root to Secret %s/%s (nothing else of the root)\n", remote.Namespace, s.Name)
		default:
			fmt.Fprintf(progress, "  copied the relay identity token to Secret %s/%s (this cluster's own token, never the root token; value not shown)\n", remote.Namespace, s.Name)
		}
	}
	if err := p.recordBundle(ctx, progress); err != nil {
		return err
	}
	return p.renewForRotation(ctx, remote, progress)
}

// recordBundle records on the cluster's RelayCluster (when it has one) the
// trust bundle just written to it: the cluster holds it now. In the tls
// modes no renewal reports it, so a root rotation counts the cluster
// through this record; in modes 4 and 5 its next renewal reports the same.
func (p *Plan) recordBundle(ctx context.Context, progress io.Writer) error {
	if p.mgmt == nil {
		return nil
	}
	fps := fingerprint.OfPEM(p.RootCA)
	if len(fps) == 0 {
		return nil
	}
	var rc relayv1.RelayCluster
	if err := p.mgmt.Client.Get(ctx, client.ObjectKey{Namespace: p.mgmt.Namespace, Name: p.cluster}, &rc); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil // not registered: nothing to record on
		}
		return fmt.Errorf("%s: reading RelayCluster %s/%s: %w", p.mgmt.Name, p.mgmt.Namespace, p.cluster, err)
	}
	if slices.Equal(rc.Status.LastTrustBundle, fps) {
		return nil
	}
	base := rc.DeepCopy()
	rc.Status.LastTrustBundle = fps
	if err := p.mgmt.Client.Status().Patch(ctx, &rc, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("%s: recording the trust bundle on RelayCluster %s/%s: %w", p.mgmt.Name, p.mgmt.Namespace, p.cluster, err)
	}
	fmt.Fprintf(progress, "  recorded on RelayCluster %s/%s that the cluster holds %d root(s) (status.lastTrustBundle)\n", p.mgmt.Namespace, p.cluster, len(fps))
	return nil
}

// rotationBundle returns, while a root rotation is declared or on record on
// the management RelayIssuer, its name and the trust bundle relay-issuer
// publishes (old and new root; after retire the new root): the bundle a
// cluster must hold to verify the endpoint and the server in every phase.
// Outside a rotation it returns nothing and the root's ca.crt is copied.
func rotationBundle(ctx context.Context, mgmt *kube.Conn) (string, []byte, error) {
	var iss relayv1.RelayIssuer
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: modes.RelayIssuerName}, &iss); err != nil {
		return "", nil, nil // no management issuer (BYO tls modes): the root Secret is the bundle
	}
	spec, st := iss.Spec.CA, iss.Status.RootRotation
	if spec == nil || (spec.RootRotation == nil && st == nil) {
		return "", nil, nil
	}
	name := ""
	switch {
	case spec.RootRotation != nil:
		name = spec.RootRotation.Name
	default:
		name = st.Name
	}
	bundleName := spec.TrustBundleSecretName
	if bundleName == "" {
		bundleName = relayv1.DefaultTrustBundleSecretName
	}
	var s corev1.Secret
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: bundleName}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil, nil // not published yet: the root Secret is the bundle
		}
		return "", nil, fmt.Errorf("%s: reading the trust bundle Secret %s/%s: %w", mgmt.Name, mgmt.Namespace, bundleName, err)
	}
	if _, err := check.Roots(s.Data["ca.crt"]); err != nil || len(s.Data["ca.crt"]) == 0 {
		return "", nil, fmt.Errorf("%s: Secret %s/%s ca.crt (root rotation %q's trust bundle) is not PEM certificates: %v; relay-issuer rewrites it, see relayctl status", mgmt.Name, mgmt.Namespace, bundleName, name, err)
	}
	return name, s.Data["ca.crt"], nil
}

// renewForRotation asks cert-manager to issue the workload cluster's client
// certificate again now, the way cmctl renew does, so that the cluster
// records the rotation's trust bundle without waiting for its renewal time.
// A missing Certificate (mode 2, or a GitOps install not synced yet) is
// skipped.
func (p *Plan) renewForRotation(ctx context.Context, remote *kube.Conn, progress io.Writer) error {
	if p.Rotation == "" || !p.Mode.AutoClient {
		return nil
	}
	var crt cmapi.Certificate
	if err := remote.Client.Get(ctx, client.ObjectKey{Namespace: remote.Namespace, Name: modes.ClientCertificate}, &crt); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil
		}
		return fmt.Errorf("%s: reading Certificate %s/%s: %w", remote.Name, remote.Namespace, modes.ClientCertificate, err)
	}
	if c := apiutil.GetCertificateCondition(&crt, cmapi.CertificateConditionIssuing); c != nil && c.Status == cmmeta.ConditionTrue {
		fmt.Fprintf(progress, "  Certificate %s/%s is already being issued\n", remote.Namespace, crt.Name)
		return nil
	}
	base := crt.DeepCopy()
	apiutil.SetCertificateCondition(&crt, crt.Generation, cmapi.CertificateConditionIssuing, cmmeta.ConditionTrue, "ManuallyTriggered",
		fmt.Sprintf("re-issued by relayctl register: root rotation %q", p.Rotation))
	if err := remote.Client.Status().Patch(ctx, &crt, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("%s: asking Certificate %s/%s to renew: %w", remote.Name, remote.Namespace, crt.Name, err)
	}
	fmt.Fprintf(progress, "  asked Certificate %s/%s to renew now: its renewal returns the rotation's trust bundle and records it on RelayCluster %s\n", remote.Namespace, crt.Name, p.cluster)
	return nil
}

// sharedScope reports whether the management issuer keeps the seed's shared
// token (tokenScope: Shared); then every cluster holds the root token.
func sharedScope(ctx context.Context, mgmt *kube.Conn) bool {
	var iss relayv1.RelayIssuer
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: modes.RelayIssuerName}, &iss); err == nil {
		return iss.Spec.CA != nil && iss.Spec.CA.TokenScope == relayv1.TokenScopeShared
	}
	return false
}

// recordCluster creates the workload cluster's RelayCluster in the
// management cluster when it has none. An existing one is changed only to
// set spec.singleUseToken when asked (never to clear it).
func (p *Plan) recordCluster(ctx context.Context, progress io.Writer) error {
	if p.mgmt == nil {
		return nil
	}
	if p.setSingleUse {
		return p.setSingleUseToken(ctx, progress)
	}
	if !p.record {
		return nil
	}
	rc := &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: p.mgmt.Namespace, Name: p.cluster,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "relayctl"}},
		Spec: relayv1.RelayClusterSpec{SingleUseToken: p.singleUse}}
	if err := p.mgmt.Client.Create(ctx, rc); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: creating RelayCluster %s/%s: %w", p.mgmt.Name, p.mgmt.Namespace, p.cluster, err)
	}
	fmt.Fprintf(progress, "  registered cluster %q: RelayCluster %s/%s in the management cluster%s\n", p.cluster, p.mgmt.Namespace, p.cluster, p.singleUseNote())
	return nil
}

// setSingleUseToken sets spec.singleUseToken on the existing RelayCluster.
func (p *Plan) setSingleUseToken(ctx context.Context, progress io.Writer) error {
	rc := &relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: p.mgmt.Namespace, Name: p.cluster}}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"singleUseToken":true}}`))
	if err := p.mgmt.Client.Patch(ctx, rc, patch); err != nil {
		return fmt.Errorf("%s: setting spec.singleUseToken on RelayCluster %s/%s: %w", p.mgmt.Name, p.mgmt.Namespace, p.cluster, err)
	}
	fmt.Fprintf(progress, "  cluster %q: set spec.singleUseToken on RelayCluster %s/%s%s\n", p.cluster, p.mgmt.Namespace, p.cluster, p.singleUseNote())
	return nil
}

func (p *Plan) singleUseNote() string {
	if !p.singleUse {
		return ""
	}
	return " (single-use token: it enrolls once, then renewals go by possession of the client certificate)"
}

// Apply installs the workload side, copies the Secrets and, in the modes
// with automatic client certificates, waits for relay-client to be Ready.
func (p *Plan) Apply(ctx context.Context, remote *kube.Conn, o Options, progress io.Writer) error {
	fmt.Fprintf(progress, "Registering workload cluster %q (%s), mode %s\n", o.Cluster, remote.Name, p.Mode.Name)
	// The issuer and the Certificate go last, after the Secrets they read,
	// so that the issuer's first check already finds them.
	var first, last []*unstructured.Unstructured
	for _, obj := range p.Objects {
		if obj.GetKind() == "RelayIssuer" || obj.GetKind() == "Certificate" {
			last = append(last, obj)
		} else {
			first = append(first, obj)
		}
	}
	if err := remote.Apply(ctx, first, progress); err != nil {
		return err
	}
	if err := p.CopySecrets(ctx, remote, progress); err != nil {
		return err
	}
	if err := remote.Apply(ctx, last, progress); err != nil {
		return err
	}
	if !p.Mode.AutoClient {
		fmt.Fprintf(progress, "Done: the agent's relay-sidecar uses %s (ca.crt) and %s (token) with --mode=tls --cluster=%s\n", modes.RootSecret, modes.TokenSecret, o.Cluster)
		return nil
	}
	return Wait(ctx, remote, o, progress)
}

// Wait waits for Certificate relay-client to be Ready, printing each change
// of the issuer's, the Certificate's and its latest request's state, and
// explains the failure at the deadline.
func Wait(ctx context.Context, remote *kube.Conn, o Options, progress io.Writer) error {
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	fmt.Fprintf(progress, "Waiting up to %s for Certificate %s/%s to be Ready\n", o.Timeout, remote.Namespace, modes.ClientCertificate)
	seen := map[string]bool{}
	var last state
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for {
		// Each look has its own short deadline, so that the last one, taken
		// when the wait ends, still sees the cluster.
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		last = observe(octx, remote)
		cancel()
		for _, line := range last.lines() {
			if !seen[line] {
				seen[line] = true
				fmt.Fprintf(progress, "  %s\n", line)
			}
		}
		if last.ready {
			fmt.Fprintf(progress, "Certificate %s is Ready: Secret %s/%s holds the client certificate for %q (serial %s, expires %s)\n",
				modes.ClientCertificate, remote.Namespace, modes.ClientSecret, o.Cluster, last.serial, last.notAfter)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for the relay client certificate: %w.\n%s", ctx.Err(), last.explain())
		case <-deadline.C:
			return fmt.Errorf("the relay client certificate is not Ready after %s.\n%s", o.Timeout, last.explain())
		case <-tick.C:
		}
	}
}

type state struct {
	issuer, cert, request string
	ready                 bool
	serial, notAfter      string
	issuerMsg, requestMsg string
}

func (s state) lines() []string {
	var out []string
	for _, l := range []string{s.issuer, s.cert, s.request} {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// explain turns the last observation into a diagnosis with a fix.
func (s state) explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Last seen:\n  %s\n", strings.Join(s.lines(), "\n  "))
	msg := strings.ToLower(s.issuerMsg + " " + s.requestMsg)
	switch {
	case strings.Contains(msg, "identity proof") || strings.Contains(msg, "invalididentityproof"):
		b.WriteString("Cause: the management cluster refused the identity proof: the workload cluster's token does not prove this cluster (another cluster's token, an older tokenGeneration, or the other token scope). Fix: run relayctl register again (it writes this cluster's current token), then relayctl check.")
	case strings.Contains(msg, "x509") || strings.Contains(msg, "tls:") || strings.Contains(msg, "certificate is valid for") || strings.Contains(msg, "authentication handshake"):
		b.WriteString("Cause: the endpoint's certificate does not verify against the copied root, or does not carry the expected server name. Fix: pass --server-name with a name in the management server certificate, and run relayctl check (server SAN and bundles).")
	case strings.Contains(msg, "unreachable") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "deadline") || strings.Contains(msg, "no such host"):
		b.WriteString("Cause: the workload issuer cannot reach the issuance endpoint. Fix: check --endpoint (the address the workload cluster reaches the management Service relay-issuer at) and that relay-issuer runs in the management cluster.")
	case s.issuer == "" || strings.Contains(s.issuer, "no Ready condition") || strings.Contains(s.issuer, "not yet checked again"):
		b.WriteString("Cause: relay-issuer has not (re)checked RelayIssuer relay: it does not run in the workload cluster, or its check is still retrying. Fix: check the relay-issuer Deployment in " + modes.Namespace + " (kubectl -n " + modes.Namespace + " get pods,events) and its log.")
	case s.request == "":
		b.WriteString("Cause: cert-manager has created no CertificateRequest yet. Fix: check that cert-manager runs in the workload cluster and see the Certificate's events.")
	default:
		b.WriteString("Fix: see the conditions above; relayctl status shows both sides and relayctl check validates the material.")
	}
	return b.String()
}

func observe(ctx context.Context, c *kube.Conn) state {
	var s state
	var iss relayv1.RelayIssuer
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: modes.RelayIssuerName}, &iss); err != nil {
		s.issuer = "RelayIssuer relay: " + err.Error()
	} else if r := meta.FindStatusCondition(iss.Status.Conditions, string(cmapi.IssuerConditionReady)); r == nil {
		s.issuer = "RelayIssuer relay: no Ready condition yet"
	} else if r.ObservedGeneration < iss.Generation {
		s.issuer = fmt.Sprintf("RelayIssuer relay: changed (generation %d), not yet checked again; last check: Ready=%s %s", iss.Generation, r.Status, r.Reason)
	} else {
		s.issuer = fmt.Sprintf("RelayIssuer relay: Ready=%s %s: %s", r.Status, r.Reason, r.Message)
		s.issuerMsg = r.Reason + " " + r.Message
	}
	var crt cmapi.Certificate
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: modes.ClientCertificate}, &crt); err != nil {
		s.cert = "Certificate relay-client: " + err.Error()
		return s
	}
	if cond := apiutil.GetCertificateCondition(&crt, cmapi.CertificateConditionReady); cond != nil {
		s.cert = fmt.Sprintf("Certificate relay-client: Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
		s.ready = cond.Status == cmmeta.ConditionTrue && cond.ObservedGeneration == crt.Generation
	}
	if crt.Status.NotAfter != nil {
		s.notAfter = crt.Status.NotAfter.UTC().Format(time.RFC3339)
	}
	var reqs cmapi.CertificateRequestList
	if err := c.Client.List(ctx, &reqs, client.InNamespace(c.Namespace)); err == nil {
		var latest *cmapi.CertificateRequest
		for i := range reqs.Items {
			r := &reqs.Items[i]
			if !ownedBy(r.OwnerReferences, crt.UID) {
				continue
			}
			if latest == nil || r.CreationTimestamp.After(latest.CreationTimestamp.Time) || r.Name > latest.Name && r.CreationTimestamp.Equal(&latest.CreationTimestamp) {
				latest = r
			}
		}
		if latest != nil {
			var parts []string
			for _, cond := range latest.Status.Conditions {
				parts = append(parts, fmt.Sprintf("%s=%s %s", cond.Type, cond.Status, cond.Message))
				if cond.Type == cmapi.CertificateRequestConditionReady && cond.Status == cmmeta.ConditionFalse {
					s.requestMsg += " " + cond.Reason + " " + cond.Message
				}
				if cond.Type == cmapi.CertificateRequestConditionInvalidRequest || cond.Type == cmapi.CertificateRequestConditionDenied {
					s.requestMsg += " " + cond.Reason + " " + cond.Message
				}
			}
			s.request = fmt.Sprintf("CertificateRequest %s: %s", latest.Name, strings.Join(parts, "; "))
		}
	}
	if s.ready {
		s.serial = serialOf(ctx, c)
	}
	return s
}

func serialOf(ctx context.Context, c *kube.Conn) string {
	var sec corev1.Secret
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: modes.ClientSecret}, &sec); err != nil {
		return "unknown"
	}
	chain, err := check.Roots(sec.Data["tls.crt"])
	if err != nil || len(chain) == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%x", chain[0].SerialNumber)
}

func ownedBy(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid {
			return true
		}
	}
	return false
}
