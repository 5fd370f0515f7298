package check

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// Config reads relaytls-config, the ConfigMap every install carries.
func Config(ctx context.Context, c *kube.Conn) (map[string]string, error) {
	var cm corev1.ConfigMap
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: modes.ConfigMapName}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s: relaytls is not installed (no ConfigMap %s/%s); run relayctl init or install the chart, or pass -n with the namespace relaytls runs in", c.Name, c.Namespace, modes.ConfigMapName)
		}
		return nil, fmt.Errorf("%s: reading ConfigMap %s/%s: %w", c.Name, c.Namespace, modes.ConfigMapName, err)
	}
	return cm.Data, nil
}

// secret returns the Secret or nil when it does not exist.
func secret(ctx context.Context, c *kube.Conn, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reading Secret %s/%s: %w", c.Name, c.Namespace, name, err)
	}
	return &s, nil
}

// certificatesBySecret maps Secret names to the Certificates writing them.
func certificatesBySecret(ctx context.Context, c *kube.Conn) map[string]cmapi.Certificate {
	var list cmapi.CertificateList
	out := map[string]cmapi.Certificate{}
	if err := c.Client.List(ctx, &list, client.InNamespace(c.Namespace)); err != nil {
		return out // cert-manager may be absent in the BYO modes; the check goes on without
	}
	for _, crt := range list.Items {
		out[crt.Spec.SecretName] = crt
	}
	return out
}

// GatherSide reads one cluster's material. role is management or workload;
// problems reading a Secret become findings of the returned report.
func GatherSide(ctx context.Context, c *kube.Conn, role string, cfg map[string]string, problems *[]Finding) (*Side, error) {
	side := &Side{RootSecret: ns(c.Namespace, cfg["rootSecret"], modes.RootSecret), TokenSecret: ns(c.Namespace, cfg["tokenSecret"], modes.TokenSecret)}
	certs := certificatesBySecret(ctx, c)
	bad := func(name, format string, args ...any) {
		*problems = append(*problems, Finding{Severity: Error, Check: "secret",
			Problem: fmt.Sprintf("%s: Secret %s/%s %s", c.Name, c.Namespace, name, fmt.Sprintf(format, args...)),
			Fix:     "create or repair it (see the list of Secrets per mode in `helm install` NOTES or `relayctl init`)"})
	}
	root, err := secret(ctx, c, strings.TrimPrefix(side.RootSecret, c.Namespace+"/"))
	if err != nil {
		return nil, err
	}
	if root != nil {
		if b := root.Data["ca.crt"]; len(b) > 0 {
			side.Root, err = pki.DecodeX509CertificateSetBytes(b)
			if err != nil {
				bad(root.Name, "ca.crt is not PEM certificates: %v", err)
			}
		} else {
			bad(root.Name, "has no ca.crt")
		}
	}
	readCert := func(name string) *Cert {
		s, err := secret(ctx, c, name)
		if err != nil || s == nil {
			return nil
		}
		chain, err := pki.DecodeX509CertificateChainBytes(s.Data["tls.crt"])
		if err != nil || len(chain) == 0 {
			bad(name, "has no usable tls.crt: %v", err)
			return nil
		}
		out := &Cert{Secret: c.Namespace + "/" + name, Chain: chain}
		if crt, ok := certs[name]; ok {
			out.Certificate = crt.Name
			if crt.Spec.RenewBefore != nil {
				out.RenewBefore = crt.Spec.RenewBefore.Duration
			}
		}
		return out
	}
	if role == "management" {
		*problems = append(*problems, rotationFindings(ctx, c, cfg)...)
		side.Rotation = gatherRotation(ctx, c, bad)
		if cfg["serverSecret"] != "" {
			side.Server = readCert(cfg["serverSecret"])
		}
		if cfg["signingSecret"] != "" {
			side.Signing = readCert(cfg["signingSecret"])
		}
	} else if cfg["clientSecret"] != "" {
		side.Client = readCert(cfg["clientSecret"])
	}
	tok, err := secret(ctx, c, strings.TrimPrefix(side.TokenSecret, c.Namespace+"/"))
	if err != nil {
		return nil, err
	}
	if tok != nil {
		if t := bytes.TrimSpace(tok.Data["token"]); len(t) > 0 {
			side.Token = t
		}
	}
	return side, nil
}

func ns(namespace, name, def string) string {
	if name == "" {
		name = def
	}
	return namespace + "/" + name
}

// Roots parses PEM certificates (for tests and callers holding PEM).
func Roots(pemBytes []byte) ([]*x509.Certificate, error) {
	return pki.DecodeX509CertificateSetBytes(pemBytes)
}

// rotationFindings reports a root rotation that is under way on a CA-mode
// RelayIssuer, with what relay-issuer waits for and, in the bring-your-own
// modes, what the user must still place and where.
func rotationFindings(ctx context.Context, c *kube.Conn, cfg map[string]string) []Finding {
	var l relayv1.RelayIssuerList
	if err := c.Client.List(ctx, &l, client.InNamespace(c.Namespace)); err != nil {
		return nil
	}
	var out []Finding
	for _, iss := range l.Items {
		st, spec := iss.Status.RootRotation, iss.Spec.CA
		if spec == nil || spec.RootRotation == nil || (st != nil && st.Phase == relayv1.RootRotationRetire && st.Name == spec.RootRotation.Name) {
			continue
		}
		rot := spec.RootRotation
		newRoot := rot.NewRootSecretName
		if newRoot == "" {
			newRoot = relayv1.DefaultNewRootSecretName
		}
		reached, msg := "none yet", "relay-issuer has not looked at it yet"
		if st != nil && st.Name == rot.Name {
			if st.Phase != "" {
				reached = string(st.Phase)
			}
			msg = st.Message
		}
		f := Finding{Severity: Warning, Check: "root-rotation",
			Problem: fmt.Sprintf("%s: root rotation %q on RelayIssuer %s is under way (asked %s, reached %s): %s", c.Name, rot.Name, iss.Name, rot.Phase, reached, msg)}
		user := st == nil || st.Source != "CertManager"
		switch {
		case !user:
			f.Fix = "nothing to place: relay-issuer and cert-manager make and move the new root; advance the phase with relayctl rotate-root (or relayIssuer.rootRotation in Git) once status allows"
		case reached == "none yet":
			f.Fix = fmt.Sprintf("place the new root CA certificate (PEM, the root alone) as ca.crt in Secret %s/%s; then add it to ca.crt of telemetry-root-secret in both clusters (your Secret in this mode)", c.Namespace, newRoot)
		case reached == string(relayv1.RootRotationPrepare):
			f.Fix = fmt.Sprintf("before activate: place an intermediate CA signed by the new root in Secret %s/%s (tls.crt, tls.key) and a server certificate signed by the new root in Secret %s/%s; workload clusters get the new root with their renewals",
				c.Namespace, orDefault(spec.SigningSecretName, relayv1.DefaultSigningSecretName), c.Namespace, orDefault(cfg["serverSecret"], "relay-server-tls-secret"))
		default:
			f.Fix = fmt.Sprintf("before retire completes: replace ca.crt of Secret %s/%s with the new root (from %s), and remove the old root from telemetry-root-secret in both clusters",
				c.Namespace, orDefault(spec.RootSecretName, relayv1.DefaultRootSecretName), newRoot)
		}
		out = append(out, f)
	}
	return out
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// gatherRotation reads, while a root rotation is declared or on record on a
// CA-mode RelayIssuer of the namespace, the trust bundle relay-issuer
// publishes and the rotation's roots. It is nil otherwise.
func gatherRotation(ctx context.Context, c *kube.Conn, bad func(name, format string, args ...any)) *Rotation {
	var l relayv1.RelayIssuerList
	if err := c.Client.List(ctx, &l, client.InNamespace(c.Namespace)); err != nil {
		return nil
	}
	for _, iss := range l.Items {
		spec, st := iss.Spec.CA, iss.Status.RootRotation
		if spec == nil || (spec.RootRotation == nil && st == nil) {
			continue
		}
		name := orDefault(spec.TrustBundleSecretName, relayv1.DefaultTrustBundleSecretName)
		rot := &Rotation{BundleSecret: c.Namespace + "/" + name}
		if st != nil {
			rot.Roots = append(append(rot.Roots, st.OldRoots...), st.NewRoot)
		}
		s, err := secret(ctx, c, name)
		if err == nil && s != nil {
			if rot.Bundle, err = pki.DecodeX509CertificateSetBytes(s.Data["ca.crt"]); err != nil {
				bad(name, "ca.crt is not PEM certificates: %v", err)
			}
		}
		return rot
	}
	return nil
}
