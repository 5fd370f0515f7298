// Package status is `relayctl status`: for each cluster given, the
// install's role and mode, the readiness of its RelayIssuers, and every
// certificate in the relaytls namespace with its serial, expiry, next
// renewal and last renewal.
package status

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// Print writes the status of one cluster.
func Print(ctx context.Context, c *kube.Conn, w io.Writer, now time.Time) error {
	cfg, err := check.Config(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: role %s, mode %s", c.Name, cfg["role"], cfg["mode"])
	if cfg["cluster"] != "" {
		fmt.Fprintf(w, ", cluster %s", cfg["cluster"])
	}
	fmt.Fprintln(w)

	var issuers relayv1.RelayIssuerList
	if err := c.Client.List(ctx, &issuers, client.InNamespace(c.Namespace)); err != nil {
		return fmt.Errorf("%s: listing RelayIssuers: %w", c.Name, err)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ISSUER\tKIND\tREADY\tMESSAGE")
	for _, iss := range issuers.Items {
		kind := "ca"
		if iss.Spec.Remote != nil {
			kind = "remote → " + iss.Spec.Remote.Endpoint
		}
		ready, msg := "Unknown", "no Ready condition yet"
		if cond := meta.FindStatusCondition(iss.Status.Conditions, string(cmapi.IssuerConditionReady)); cond != nil {
			ready, msg = string(cond.Status), cond.Message
			if cond.ObservedGeneration < iss.Generation {
				ready = "Stale"
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", iss.Name, kind, ready, msg)
	}
	if len(issuers.Items) == 0 {
		fmt.Fprintln(tw, "  (none)\t\t\t")
	}
	tw.Flush()
	for _, iss := range issuers.Items {
		printRotation(w, &iss)
	}

	var certs cmapi.CertificateList
	if err := c.Client.List(ctx, &certs, client.InNamespace(c.Namespace)); err != nil {
		return fmt.Errorf("%s: listing Certificates: %w", c.Name, err)
	}
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CERTIFICATE\tSECRET\tREADY\tSERIAL\tEXPIRES\tRENEWS\tLAST RENEWAL")
	for _, crt := range certs.Items {
		ready := "Unknown"
		if cond := apiutil.GetCertificateCondition(&crt, cmapi.CertificateConditionReady); cond != nil {
			ready = string(cond.Status)
		}
		serial := "-"
		var sec corev1.Secret
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: crt.Spec.SecretName}, &sec); err == nil {
			if chain, err := check.Roots(sec.Data["tls.crt"]); err == nil && len(chain) > 0 {
				serial = fmt.Sprintf("%x", chain[0].SerialNumber)
			}
		}
		exp, renew, last := "-", "-", "-"
		if t := crt.Status.NotAfter; t != nil {
			exp = fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Minute))
		}
		if t := crt.Status.RenewalTime; t != nil {
			renew = t.UTC().Format(time.RFC3339)
		}
		if t := crt.Status.NotBefore; t != nil {
			last = t.UTC().Format(time.RFC3339)
			if crt.Status.Revision != nil {
				last += fmt.Sprintf(" (revision %d)", *crt.Status.Revision)
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", crt.Name, crt.Spec.SecretName, ready, serial, exp, renew, last)
	}
	if len(certs.Items) == 0 {
		fmt.Fprintln(tw, "  (none)\t\t\t\t\t\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if cfg["role"] != "management" {
		return nil
	}
	return printClusters(ctx, c, w, now)
}

// printRotation shows a CA-mode issuer's root rotation: the phase asked
// for, the phase reached, and relay-issuer's word on the next step.
func printRotation(w io.Writer, iss *relayv1.RelayIssuer) {
	if iss.Spec.CA == nil || (iss.Spec.CA.RootRotation == nil && iss.Status.RootRotation == nil) {
		return
	}
	asked, reached := "-", "none yet"
	name := ""
	if r := iss.Spec.CA.RootRotation; r != nil {
		asked, name = string(r.Phase), r.Name
	}
	if st := iss.Status.RootRotation; st != nil {
		if st.Phase != "" {
			reached = string(st.Phase)
		}
		if name == "" {
			name = st.Name
		}
	}
	fmt.Fprintf(w, "  root rotation %q on %s: phase asked %s, reached %s", name, iss.Name, asked, reached)
	if c := meta.FindStatusCondition(iss.Status.Conditions, relayv1.IssuerConditionRootRotation); c != nil {
		fmt.Fprintf(w, " — %s: %s", c.Reason, c.Message)
	}
	fmt.Fprintln(w)
}

// printClusters lists the registered workload clusters (RelayClusters).
func printClusters(ctx context.Context, c *kube.Conn, w io.Writer, now time.Time) error {
	var l relayv1.RelayClusterList
	if err := c.Client.List(ctx, &l, client.InNamespace(c.Namespace)); err != nil {
		if meta.IsNoMatchError(err) {
			return nil // an install without the inventory CRD
		}
		return fmt.Errorf("%s: listing RelayClusters: %w", c.Name, err)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLUSTER\tGENERATION\tREVOKED\tREGISTERED\tLAST SERIAL\tEXPIRES\tROOTS GIVEN")
	for _, rc := range l.Items {
		reg := "Unknown"
		if cond := meta.FindStatusCondition(rc.Status.Conditions, relayv1.ClusterConditionRegistered); cond != nil {
			reg = string(cond.Status)
		}
		serial, exp := "-", "-"
		if rc.Status.LastCertificateSerial != "" {
			serial = rc.Status.LastCertificateSerial
		}
		if t := rc.Status.LastCertificateNotAfter; t != nil {
			exp = fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Minute))
		}
		given := "-"
		if b := rc.Status.LastTrustBundle; len(b) > 0 {
			short := make([]string, len(b))
			for i, fp := range b {
				short[i] = fp[:min(len(fp), 12)]
			}
			given = strings.Join(short, ",")
		}
		fmt.Fprintf(tw, "  %s\t%d\t%t\t%s\t%s\t%s\t%s\n", rc.Name, rc.TokenGeneration(), rc.Spec.Revoked, reg, serial, exp, given)
	}
	if len(l.Items) == 0 {
		fmt.Fprintln(tw, "  (no registered clusters)\t\t\t\t\t\t")
	}
	return tw.Flush()
}
