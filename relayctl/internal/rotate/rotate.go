// Package rotate is `relayctl rotate-root`: it sets spec.ca.rootRotation on
// the management RelayIssuer (the field a GitOps repository sets through the
// chart value relayIssuer.rootRotation) and reports what relay-issuer made
// of it. relay-issuer decides every phase; relayctl only refuses what is
// plainly wrong before it writes anything.
package rotate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// Options of one rotate-root call.
type Options struct {
	Issuer string
	// Phase is prepare, activate or retire (any case).
	Phase string
	// Name of the rotation; defaults to the running one, or root-<date> for
	// a new one.
	Name          string
	NewRootSecret string
	// Wait is how long to wait for relay-issuer's answer (0: do not wait).
	Wait time.Duration
	Now  time.Time
}

// Refusals relay-issuer gives; the command exits non-zero on them.
var refusals = []string{"RotationInProgress", "NewRootInvalid", "ActivateBlocked", "RetireBlocked", "PhaseNotReversible"}

// ParsePhase turns prepare|activate|retire into a phase.
func ParsePhase(s string) (relayv1.RootRotationPhase, error) {
	for _, p := range []relayv1.RootRotationPhase{relayv1.RootRotationPrepare, relayv1.RootRotationActivate, relayv1.RootRotationRetire} {
		if strings.EqualFold(s, string(p)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("--phase must be prepare, activate or retire, not %q", s)
}

// Run sets the rotation and reports relay-issuer's answer.
func Run(ctx context.Context, c *kube.Conn, o Options, w io.Writer) error {
	phase, err := ParsePhase(o.Phase)
	if err != nil {
		return err
	}
	var iss relayv1.RelayIssuer
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: o.Issuer}, &iss); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: RelayIssuer %s/%s does not exist (is this the management cluster? --issuer names another)", c.Name, c.Namespace, o.Issuer)
		}
		return fmt.Errorf("%s: reading RelayIssuer %s/%s: %w", c.Name, c.Namespace, o.Issuer, err)
	}
	if iss.Spec.CA == nil {
		return fmt.Errorf("%s: RelayIssuer %s/%s is a remote issuer; the root is rotated on the management cluster's CA-mode issuer", c.Name, c.Namespace, o.Issuer)
	}
	st := iss.Status.RootRotation
	running := st != nil && st.Phase != relayv1.RootRotationRetire
	name := o.Name
	if name == "" {
		switch {
		case iss.Spec.CA.RootRotation != nil && (running || phase != relayv1.RootRotationPrepare):
			name = iss.Spec.CA.RootRotation.Name
		case running:
			name = st.Name
		case phase == relayv1.RootRotationPrepare:
			name = "root-" + o.Now.UTC().Format("2006-01-02")
		default:
			return fmt.Errorf("no root rotation is running on RelayIssuer %s/%s: start one with --phase prepare", c.Namespace, o.Issuer)
		}
	}
	if running && st.Name != name {
		return fmt.Errorf("refused: root rotation %q is running on RelayIssuer %s/%s (phase reached: %s); a second rotation %q cannot start until it reaches retire",
			st.Name, c.Namespace, o.Issuer, orNone(st.Phase), name)
	}
	if st != nil && st.Name == name && relayv1.PhaseIndex(phase) < relayv1.PhaseIndex(st.Phase) {
		return fmt.Errorf("refused: root rotation %q already reached %s; phases do not go back", name, st.Phase)
	}
	if phase == relayv1.RootRotationRetire && st != nil && st.Name == name && st.Phase == relayv1.RootRotationActivate && len(st.WaitingFor) > 0 {
		return fmt.Errorf("refused: retire would cut off cluster(s) %s, whose live certificates still chain to the old root only; they move at their next renewal (relayctl register --cluster NAME --secrets-only renews one now), or revoke a cluster that is gone",
			strings.Join(st.WaitingFor, ", "))
	}
	rot := &relayv1.RootRotation{Name: name, Phase: phase, NewRootSecretName: o.NewRootSecret}
	if rot.NewRootSecretName == "" && iss.Spec.CA.RootRotation != nil && iss.Spec.CA.RootRotation.Name == name {
		rot.NewRootSecretName = iss.Spec.CA.RootRotation.NewRootSecretName
	}
	base := iss.DeepCopy()
	iss.Spec.CA.RootRotation = rot
	if err := c.Client.Patch(ctx, &iss, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("%s: setting spec.ca.rootRotation on RelayIssuer %s/%s: %w", c.Name, c.Namespace, o.Issuer, err)
	}
	fmt.Fprintf(w, "RelayIssuer %s/%s: spec.ca.rootRotation = {name: %s, phase: %s}\n", c.Namespace, o.Issuer, name, phase)
	if _, gitops := iss.Annotations["argocd.argoproj.io/tracking-id"]; gitops {
		fmt.Fprintln(w, "note: this RelayIssuer is synced from Git; set the chart value relayIssuer.rootRotation there too, or the sync will undo this")
	}
	if o.Wait <= 0 {
		return nil
	}
	gen := iss.Generation
	var cond *metav1.Condition
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, o.Wait, true, func(ctx context.Context) (bool, error) {
		var cur relayv1.RelayIssuer
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(&iss), &cur); err != nil {
			return false, nil
		}
		cond = meta.FindStatusCondition(cur.Status.Conditions, relayv1.IssuerConditionRootRotation)
		return cond != nil && cond.ObservedGeneration >= gen && cur.Generation == gen, nil
	})
	if cond == nil || err != nil {
		fmt.Fprintf(w, "relay-issuer has not answered within %s; follow it with relayctl status\n", o.Wait)
		return nil
	}
	fmt.Fprintf(w, "%s: %s\n", cond.Reason, cond.Message)
	if slices.Contains(refusals, cond.Reason) {
		return errors.New("relay-issuer refused the phase: " + cond.Message)
	}
	return nil
}

func orNone(p relayv1.RootRotationPhase) string {
	if p == "" {
		return "none yet"
	}
	return string(p)
}
