// Package localcluster starts a real, local Kubernetes control plane with a
// real cert-manager for relaytls's integration and end-to-end tests.
//
// A [Cluster] is a kube-apiserver and etcd started by controller-runtime's
// envtest from locally built binaries (see [Options.BinaryDir]; `make
// kube-binaries` builds them), with cert-manager's CRDs and any extra CRD
// directories installed, cert-manager's own controllers (certificates,
// certificaterequests approver/CA/SelfSigned, issuers, clusterissuers) running
// in-process with cert-manager's production defaults, and cert-manager's own
// admission webhook serving in-process and registered with the API server, so
// CertificateRequest specs are immutable, spec.username is set by the API
// server's view of the caller, and approvals are checked by
// SubjectAccessReview, as in a real cluster.
//
// Nothing but the test itself runs as cluster-admin: cert-manager's controller
// runs as system:serviceaccount:cert-manager:cert-manager and its webhook as
// system:serviceaccount:cert-manager:cert-manager-webhook, bound to a
// stand-in for the RBAC of cert-manager's Helm chart (rbac/cert-manager.yaml).
// That RBAC lets the approver approve cert-manager's own signers only, so an
// external issuer's approval ClusterRole (which relaytls ships in deploy/) is
// really exercised. Components under test get their own identities from
// [Cluster.AddUser] and [Cluster.AddServiceAccount] and run with the RBAC that
// the test applies with [Cluster.Apply] or [Cluster.ApplyFiles].
//
// Several clusters can run in one test process (relaytls's cross-cluster tests
// use a management and a workload cluster); each has its own API server,
// controllers, webhook and temporary directory.
//
// A test that runs a component under its shipped RBAC:
//
//	func TestIssuer(t *testing.T) {
//		c := localcluster.Start(t, localcluster.Options{CRDDirs: []string{"../../deploy/crds"}})
//		ctx := t.Context()
//		if err := c.ApplyFiles(ctx, "../../deploy/rbac"); err != nil {
//			t.Fatal(err)
//		}
//		cfg, _, err := c.AddServiceAccount("relaytls-system", "relay-issuer")
//		if err != nil {
//			t.Fatal(err)
//		}
//		go runIssuer(ctx, cfg) // the component, as its ServiceAccount
//		ns, _ := c.NewNamespace(ctx, "test-")
//		_ = c.Apply(ctx, []byte(certificateYAML(ns)))
//		if _, err := c.WaitForCertificateReady(ctx, ns, "relay-client", 30*time.Second); err != nil {
//			t.Fatal(err)
//		}
//	}
//
// [StartAll] starts several clusters at once (for example a management and a
// workload cluster).
//
// There is no kubelet: nothing runs in pods. Components run as goroutines or
// processes with the kubeconfig of their identity.
//
// Limits that come from cert-manager's public API:
//
//   - The only public way to run cert-manager's real webhook is
//     github.com/cert-manager/cert-manager/test/webhook.StartWebhookServer,
//     which needs a *testing.T (its admission plugins are internal packages).
//     So a cluster lives inside one test: it cannot be shared from TestMain,
//     a benchmark measures with testing.Benchmark inside a Test, and a demo
//     that keeps clusters running is a test run with `go test -run ...
//     -timeout 0`.
//   - StartWebhookServer sets controller-runtime's global logger to klog.
//     Components that want their own logs pass a logger explicitly.
//   - controller-runtime refuses two controllers with the same name in one
//     process: a component started once per cluster, or once per test, needs
//     its manager's Controller.SkipNameValidation set.
package localcluster
