package suite

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/e2e/harness"
	"github.com/relaytls/relaytls/internal/proof"
)

// scopeMigration takes a running install back to the seed's shared token
// (the management issuer at tokenScope Shared, the workload cluster holding
// the root token), shows that a renewal still works there, then runs
// relayctl migrate-scope and shows that the next renewal is made with the
// cluster's own token, with the relay stream running throughout (TestModes
// checks it is unbroken at the end).
func (e *env) scopeMigration(t *testing.T) {
	ctx := t.Context()
	mgmt, wl := e.in.Mgmt, e.in.Workload
	var clientCrt harness.Renewed
	for _, r := range e.in.Renewed {
		if r.Secret == relayv1.ClientSecretName {
			clientCrt = r
		}
	}
	if clientCrt.Secret == "" {
		t.Fatalf("mode %s renews no %s", e.mode, relayv1.ClientSecretName)
	}
	setScope := func(scope relayv1.TokenScope) {
		t.Helper()
		var iss relayv1.RelayIssuer
		if err := mgmt.Client().Get(ctx, client.ObjectKey{Namespace: harness.Namespace, Name: "relay"}, &iss); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(iss.DeepCopy())
		iss.Spec.CA.TokenScope = scope
		if err := mgmt.Client().Patch(ctx, &iss, patch); err != nil {
			t.Fatal(err)
		}
	}
	sharedCondition := func(ctx context.Context) (bool, error) {
		var iss relayv1.RelayIssuer
		if err := mgmt.Client().Get(ctx, client.ObjectKey{Namespace: harness.Namespace, Name: "relay"}, &iss); err != nil {
			return false, err
		}
		for _, c := range iss.Status.Conditions {
			if string(c.Type) == relayv1.IssuerConditionTokenScopeShared {
				return string(c.Status) == "True", nil
			}
		}
		return false, nil
	}
	renewedAfter := func(what string) {
		t.Helper()
		n := e.watch.Renewals(clientCrt)
		eventually(t, 2*time.Minute, "a client renewal "+what, func(context.Context) (bool, string) {
			got := e.watch.Renewals(clientCrt)
			return got > n, fmt.Sprintf("%d renewals (was %d)", got, n)
		})
	}

	// The old install: shared scope, the root token in the workload cluster.
	rootSecret, err := harness.GetSecret(ctx, mgmt, relayv1.DefaultTokenSecretName)
	if err != nil {
		t.Fatal(err)
	}
	root := rootSecret.Data["token"]
	setScope(relayv1.TokenScopeShared)
	eventually(t, time.Minute, "the TokenScopeShared warning condition on the management issuer", func(ctx context.Context) (bool, string) {
		ok, err := sharedCondition(ctx)
		return ok, fmt.Sprint(err)
	})
	if err := harness.PutSecret(ctx, wl, relayv1.DefaultTokenSecretName, map[string][]byte{"token": root}); err != nil {
		t.Fatal(err)
	}
	renewedAfter("with the shared root token")

	p, err := harness.StartProc("relayctl-migrate-scope", e.in.LogDir, bins.Relayctl, []string{"migrate-scope",
		"--mgmt-kubeconfig=" + mgmt.AdminKubeconfig(), "--remote-kubeconfig=" + wl.AdminKubeconfig()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	out := string(readFile(t, p.LogPath))
	if _, err := p.Exited(); err != nil {
		t.Fatalf("relayctl migrate-scope: %v\n%s", err, out)
	}
	if !strings.Contains(out, "tokenScope Shared -> PerCluster") || !strings.Contains(out, "1 workload cluster(s) now hold their own token") {
		t.Fatalf("relayctl migrate-scope did not report the switch and the token write:\n%s", out)
	}
	t.Logf("relayctl migrate-scope:\n%s", strings.TrimSpace(out))

	// The issuer is per cluster, the warning is gone, and the workload
	// cluster holds its own derived token, not the root token.
	var iss relayv1.RelayIssuer
	if err := mgmt.Client().Get(ctx, client.ObjectKey{Namespace: harness.Namespace, Name: "relay"}, &iss); err != nil {
		t.Fatal(err)
	}
	if iss.Spec.CA.TokenScope != relayv1.TokenScopePerCluster {
		t.Fatalf("the issuer's tokenScope is %q after the migration", iss.Spec.CA.TokenScope)
	}
	eventually(t, time.Minute, "the TokenScopeShared condition to clear", func(ctx context.Context) (bool, string) {
		ok, err := sharedCondition(ctx)
		return err == nil && !ok, fmt.Sprint(err)
	})
	held, err := harness.GetSecret(ctx, wl, relayv1.DefaultTokenSecretName)
	if err != nil {
		t.Fatal(err)
	}
	rootTok, err := proof.ParseToken(root)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proof.ClusterToken(rootTok, harness.ClusterName, proof.DefaultGeneration)
	if err != nil {
		t.Fatal(err)
	}
	got := bytes.TrimSpace(held.Data["token"])
	if bytes.Equal(got, bytes.TrimSpace(root)) {
		t.Fatal("the workload cluster still holds the root token after the migration")
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatal("the workload cluster's token is not its derived cluster token")
	}
	renewedAfter("with the cluster's own token, after the migration")
	e.heartbeatsAdvance(20, "after the migration")
}
