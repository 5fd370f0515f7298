// Package status is `relayctl status`: for each cluster given, the
// install's role and mode, the readiness of its RelayIssuers and their root
// rotation, every certificate in the relaytls namespace with its serial,
// expiry, next renewal and last renewal, the registered workload clusters
// (on the management side) with their enrollment and trust state, and the
// warnings drawn from all of that. Gather reads it into a Report, which
// prints as text or marshals as the stable data of -o json.
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// Report is the status of one cluster. Its JSON form is what
// `relayctl status -o json` prints for that cluster; fields are only ever
// added to it.
type Report struct {
	// Target names the cluster as the command line gave it.
	Target    string `json:"target"`
	Namespace string `json:"namespace"`
	// Role, Mode and Cluster are the install's relaytls-config.
	Role    string `json:"role,omitempty"`
	Mode    string `json:"mode,omitempty"`
	Cluster string `json:"cluster,omitempty"`

	Issuers      []Issuer      `json:"issuers"`
	Certificates []Certificate `json:"certificates"`
	// Clusters are the registered workload clusters (RelayClusters): on
	// the management side a list, possibly empty; null on a workload side
	// and on an install without the RelayCluster CRD.
	Clusters []Cluster `json:"clusters"`
	// Warnings are what needs a look: never null, empty when all is well.
	Warnings []Warning `json:"warnings"`

	now time.Time
}

// Issuer is one RelayIssuer.
type Issuer struct {
	Name string `json:"name"`
	// Kind is "ca" (signs in this cluster) or "remote" (relays to Endpoint).
	Kind     string `json:"kind"`
	Endpoint string `json:"endpoint,omitempty"`
	// Ready is the Ready condition's status: True, False or Unknown (also
	// when there is no condition yet).
	Ready   string `json:"ready"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
	// Stale: the spec changed since relay-issuer last checked the issuer,
	// so Ready speaks of an older spec.
	Stale        bool      `json:"stale"`
	RootRotation *Rotation `json:"rootRotation,omitempty"`
}

// Rotation is a CA-mode issuer's root rotation.
type Rotation struct {
	Name string `json:"name"`
	// PhaseAsked is spec.ca.rootRotation.phase (empty once the spec no
	// longer declares it); PhaseReached the last phase relay-issuer completed.
	PhaseAsked   string   `json:"phaseAsked,omitempty"`
	PhaseReached string   `json:"phaseReached,omitempty"`
	NewRoot      string   `json:"newRoot,omitempty"`
	OldRoots     []string `json:"oldRoots,omitempty"`
	WaitingFor   []string `json:"waitingFor,omitempty"`
	// Reason and Message are the RootRotation condition's.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Certificate is one cert-manager Certificate of the relaytls namespace.
type Certificate struct {
	Name       string `json:"name"`
	SecretName string `json:"secretName"`
	Ready      string `json:"ready"`
	// Serial (hex) of the leaf in the Secret, empty when it has none.
	Serial      string       `json:"serial,omitempty"`
	NotBefore   *metav1.Time `json:"notBefore,omitempty"`
	NotAfter    *metav1.Time `json:"notAfter,omitempty"`
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`
	Revision    *int         `json:"revision,omitempty"`
}

// Cluster is one registered workload cluster.
type Cluster struct {
	Name            string `json:"name"`
	TokenGeneration int64  `json:"tokenGeneration"`
	SingleUseToken  bool   `json:"singleUseToken"`
	Revoked         bool   `json:"revoked"`
	// Registered and Enrolled are the conditions' status (True, False,
	// Unknown).
	Registered              string       `json:"registered"`
	Enrolled                string       `json:"enrolled"`
	LastCertificateSerial   string       `json:"lastCertificateSerial,omitempty"`
	LastCertificateNotAfter *metav1.Time `json:"lastCertificateNotAfter,omitempty"`
	LastEnrollmentTime      *metav1.Time `json:"lastEnrollmentTime,omitempty"`
	// LastTrustBundle are the SHA-256 fingerprints of the roots the cluster
	// was last given; LastCertificateRoots those its certificate chains to.
	LastTrustBundle      []string `json:"lastTrustBundle,omitempty"`
	LastCertificateRoots []string `json:"lastCertificateRoots,omitempty"`
	// PreviousCertificateRoots are those of the certificate before the last
	// one, which the cluster may still hold (retire waits for both).
	PreviousCertificateRoots []string `json:"previousCertificateRoots,omitempty"`
}

// Warning is one thing that needs a look, on the object it concerns
// ("Kind/name").
type Warning struct {
	Object  string `json:"object"`
	Message string `json:"message"`
}

// Gather reads the status of one cluster.
func Gather(ctx context.Context, c *kube.Conn, now time.Time) (*Report, error) {
	cfg, err := check.Config(ctx, c)
	if err != nil {
		return nil, err
	}
	r := &Report{Target: c.Name, Namespace: c.Namespace, Role: cfg["role"], Mode: cfg["mode"], Cluster: cfg["cluster"],
		Issuers: []Issuer{}, Certificates: []Certificate{}, Warnings: []Warning{}, now: now}
	if err := r.gatherIssuers(ctx, c); err != nil {
		return nil, err
	}
	if err := r.gatherCertificates(ctx, c); err != nil {
		return nil, err
	}
	if r.Role == "management" {
		if err := r.gatherClusters(ctx, c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Print writes the status of one cluster as text.
func Print(ctx context.Context, c *kube.Conn, w io.Writer, now time.Time) error {
	r, err := Gather(ctx, c, now)
	if err != nil {
		return err
	}
	return r.Print(w)
}

func (r *Report) warn(object, format string, a ...any) {
	r.Warnings = append(r.Warnings, Warning{Object: object, Message: fmt.Sprintf(format, a...)})
}

func (r *Report) gatherIssuers(ctx context.Context, c *kube.Conn) error {
	var issuers relayv1.RelayIssuerList
	if err := c.Client.List(ctx, &issuers, client.InNamespace(c.Namespace)); err != nil {
		return fmt.Errorf("%s: listing RelayIssuers: %w", c.Name, err)
	}
	for i := range issuers.Items {
		iss := &issuers.Items[i]
		out := Issuer{Name: iss.Name, Kind: "ca", Ready: "Unknown", Message: "no Ready condition yet", RootRotation: rotation(iss)}
		if iss.Spec.Remote != nil {
			out.Kind, out.Endpoint = "remote", iss.Spec.Remote.Endpoint
		}
		if cond := meta.FindStatusCondition(iss.Status.Conditions, string(cmapi.IssuerConditionReady)); cond != nil {
			out.Ready, out.Reason, out.Message = string(cond.Status), cond.Reason, cond.Message
			out.Stale = cond.ObservedGeneration < iss.Generation
		}
		obj := "RelayIssuer/" + iss.Name
		switch {
		case out.Stale:
			r.warn(obj, "changed (generation %d) and not yet checked again by relay-issuer", iss.Generation)
		case out.Ready != string(metav1.ConditionTrue):
			r.warn(obj, "not Ready (%s): %s", out.Ready, out.Message)
		}
		if rot := out.RootRotation; rot != nil && len(rot.WaitingFor) > 0 {
			r.warn(obj, "root rotation %q waits for %s", rot.Name, strings.Join(rot.WaitingFor, ", "))
		}
		r.Issuers = append(r.Issuers, out)
	}
	return nil
}

// rotation is a CA-mode issuer's root rotation: the phase asked for, the
// phase reached, and relay-issuer's word on the next step; nil when none is
// declared or on record.
func rotation(iss *relayv1.RelayIssuer) *Rotation {
	if iss.Spec.CA == nil || (iss.Spec.CA.RootRotation == nil && iss.Status.RootRotation == nil) {
		return nil
	}
	out := &Rotation{}
	if rr := iss.Spec.CA.RootRotation; rr != nil {
		out.PhaseAsked, out.Name = string(rr.Phase), rr.Name
	}
	if st := iss.Status.RootRotation; st != nil {
		out.PhaseReached, out.NewRoot, out.OldRoots, out.WaitingFor = string(st.Phase), st.NewRoot, st.OldRoots, st.WaitingFor
		if out.Name == "" {
			out.Name = st.Name
		}
	}
	if cond := meta.FindStatusCondition(iss.Status.Conditions, relayv1.IssuerConditionRootRotation); cond != nil {
		out.Reason, out.Message = cond.Reason, cond.Message
	}
	return out
}

func (r *Report) gatherCertificates(ctx context.Context, c *kube.Conn) error {
	var certs cmapi.CertificateList
	if err := c.Client.List(ctx, &certs, client.InNamespace(c.Namespace)); err != nil {
		return fmt.Errorf("%s: listing Certificates: %w", c.Name, err)
	}
	for i := range certs.Items {
		crt := &certs.Items[i]
		out := Certificate{Name: crt.Name, SecretName: crt.Spec.SecretName, Ready: "Unknown",
			NotBefore: crt.Status.NotBefore, NotAfter: crt.Status.NotAfter, RenewalTime: crt.Status.RenewalTime, Revision: crt.Status.Revision}
		if cond := apiutil.GetCertificateCondition(crt, cmapi.CertificateConditionReady); cond != nil {
			out.Ready = string(cond.Status)
		}
		var sec corev1.Secret
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: crt.Spec.SecretName}, &sec); err == nil {
			if chain, err := check.Roots(sec.Data["tls.crt"]); err == nil && len(chain) > 0 {
				out.Serial = fmt.Sprintf("%x", chain[0].SerialNumber)
			}
		}
		obj := "Certificate/" + crt.Name
		switch {
		case out.NotAfter != nil && !out.NotAfter.After(r.now):
			r.warn(obj, "expired at %s", out.NotAfter.UTC().Format(time.RFC3339))
		case out.Ready != string(metav1.ConditionTrue):
			r.warn(obj, "not Ready (%s)", out.Ready)
		}
		r.Certificates = append(r.Certificates, out)
	}
	return nil
}

// gatherClusters reads the registered workload clusters (RelayClusters).
func (r *Report) gatherClusters(ctx context.Context, c *kube.Conn) error {
	var l relayv1.RelayClusterList
	if err := c.Client.List(ctx, &l, client.InNamespace(c.Namespace)); err != nil {
		if meta.IsNoMatchError(err) {
			return nil // an install without the inventory CRD
		}
		return fmt.Errorf("%s: listing RelayClusters: %w", c.Name, err)
	}
	r.Clusters = []Cluster{}
	for i := range l.Items {
		rc := &l.Items[i]
		out := Cluster{Name: rc.Name, TokenGeneration: rc.TokenGeneration(), SingleUseToken: rc.Spec.SingleUseToken, Revoked: rc.Spec.Revoked,
			Registered: "Unknown", Enrolled: "Unknown",
			LastCertificateSerial: rc.Status.LastCertificateSerial, LastCertificateNotAfter: rc.Status.LastCertificateNotAfter,
			LastEnrollmentTime: rc.Status.LastEnrollmentTime, LastTrustBundle: rc.Status.LastTrustBundle, LastCertificateRoots: rc.Status.LastCertificateRoots,
			PreviousCertificateRoots: rc.Status.PreviousCertificateRoots}
		obj := "RelayCluster/" + rc.Name
		if cond := meta.FindStatusCondition(rc.Status.Conditions, relayv1.ClusterConditionRegistered); cond != nil {
			out.Registered = string(cond.Status)
			if cond.Status == metav1.ConditionFalse && !rc.Spec.Revoked {
				r.warn(obj, "not registered (%s): %s", cond.Reason, cond.Message)
			}
		}
		if cond := meta.FindStatusCondition(rc.Status.Conditions, relayv1.ClusterConditionEnrolled); cond != nil {
			out.Enrolled = string(cond.Status)
		}
		if t := out.LastCertificateNotAfter; t != nil && !t.After(r.now) && !rc.Spec.Revoked {
			r.warn(obj, "its last certificate expired at %s, so it cannot renew by possession; it re-enrols with its current token (relayctl token --cluster %s)", t.UTC().Format(time.RFC3339), rc.Name)
		}
		r.Clusters = append(r.Clusters, out)
	}
	return nil
}

// Print writes the report as text.
func (r *Report) Print(w io.Writer) error {
	fmt.Fprintf(w, "%s: role %s, mode %s", r.Target, r.Role, r.Mode)
	if r.Cluster != "" {
		fmt.Fprintf(w, ", cluster %s", r.Cluster)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ISSUER\tKIND\tREADY\tMESSAGE")
	for _, iss := range r.Issuers {
		kind, ready := iss.Kind, iss.Ready
		if iss.Kind == "remote" {
			kind = "remote → " + iss.Endpoint
		}
		if iss.Stale {
			ready = "Stale"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", iss.Name, kind, ready, iss.Message)
	}
	if len(r.Issuers) == 0 {
		fmt.Fprintln(tw, "  (none)\t\t\t")
	}
	tw.Flush()
	for _, iss := range r.Issuers {
		printRotation(w, iss)
	}

	if err := r.printCertificates(w); err != nil {
		return err
	}
	if r.Clusters != nil {
		if err := r.printClusters(w); err != nil {
			return err
		}
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s: %s\n", wn.Object, wn.Message)
	}
	return nil
}

// printCertificates lists the Certificates.
func (r *Report) printCertificates(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CERTIFICATE\tSECRET\tREADY\tSERIAL\tEXPIRES\tRENEWS\tLAST RENEWAL")
	for _, crt := range r.Certificates {
		serial, exp, renew, last := "-", "-", "-", "-"
		if crt.Serial != "" {
			serial = crt.Serial
		}
		if t := crt.NotAfter; t != nil {
			exp = r.expires(t)
		}
		if t := crt.RenewalTime; t != nil {
			renew = t.UTC().Format(time.RFC3339)
		}
		if t := crt.NotBefore; t != nil {
			last = t.UTC().Format(time.RFC3339)
			if crt.Revision != nil {
				last += fmt.Sprintf(" (revision %d)", *crt.Revision)
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", crt.Name, crt.SecretName, crt.Ready, serial, exp, renew, last)
	}
	if len(r.Certificates) == 0 {
		fmt.Fprintln(tw, "  (none)\t\t\t\t\t\t")
	}
	return tw.Flush()
}

func (r *Report) expires(t *metav1.Time) string {
	return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), t.Sub(r.now).Round(time.Minute))
}

// printRotation shows a CA-mode issuer's root rotation.
func printRotation(w io.Writer, iss Issuer) {
	rot := iss.RootRotation
	if rot == nil {
		return
	}
	asked, reached := "-", "none yet"
	if rot.PhaseAsked != "" {
		asked = rot.PhaseAsked
	}
	if rot.PhaseReached != "" {
		reached = rot.PhaseReached
	}
	fmt.Fprintf(w, "  root rotation %q on %s: phase asked %s, reached %s", rot.Name, iss.Name, asked, reached)
	if rot.Reason != "" || rot.Message != "" {
		fmt.Fprintf(w, " — %s: %s", rot.Reason, rot.Message)
	}
	fmt.Fprintln(w)
}

// printClusters lists the registered workload clusters.
func (r *Report) printClusters(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLUSTER\tGENERATION\tREVOKED\tREGISTERED\tENROLLED\tLAST SERIAL\tEXPIRES\tROOTS GIVEN")
	for _, rc := range r.Clusters {
		serial, exp := "-", "-"
		if rc.LastCertificateSerial != "" {
			serial = rc.LastCertificateSerial
		}
		if t := rc.LastCertificateNotAfter; t != nil {
			exp = r.expires(t)
		}
		given := "-"
		if b := rc.LastTrustBundle; len(b) > 0 {
			short := make([]string, len(b))
			for i, fp := range b {
				short[i] = fp[:min(len(fp), 12)]
			}
			given = strings.Join(short, ",")
		}
		gen := fmt.Sprint(rc.TokenGeneration)
		if rc.SingleUseToken {
			gen += "/single-use"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\n", rc.Name, gen, rc.Revoked, rc.Registered, rc.Enrolled, serial, exp, given)
	}
	if len(r.Clusters) == 0 {
		fmt.Fprintln(tw, "  (no registered clusters)\t\t\t\t\t\t\t")
	}
	return tw.Flush()
}
