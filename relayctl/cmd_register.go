package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/internal/register"
)

// registerCmd is register's flags.
type registerCmd struct {
	o                   register.Options
	dryRun, secretsOnly bool
	mgmt, remote        *side
	out                 *output
}

func newRegisterCmd(g *globals) *cobra.Command {
	r := &registerCmd{}
	cmd := &cobra.Command{
		Use:   "register --cluster NAME --mgmt-context A --remote-context B",
		Short: "Connect a workload cluster to the management cluster",
		Long: `register copies ca.crt of the management root and the relay identity token to
the workload cluster (nothing else of the root, and the token is never shown),
installs the workload side of the mode and waits until the relay client
certificate is Ready, explaining a failure from the conditions it saw.

--single-use-token makes the cluster's token good for one enrollment: register
creates the RelayCluster with spec.singleUseToken: true (or sets it on an
existing one; it never clears it). After the first certificate issued on that
token, relay-issuer advances the cluster's tokenGeneration, so the token the
cluster holds, and any copy that leaks later, is worthless; its renewals go by
proof of possession of its current client certificate. A cluster whose
certificate lapsed re-enrols with a fresh token: relayctl token --cluster NAME
(or register again) gives the new generation's. It is for the modes with
automatic client certificates (mtls-self-signed, mtls-byo-ca) with tokenScope
PerCluster: in the tls modes the token is also the tunnel credential.`,
		Example: `  relayctl register --cluster east --mgmt-context mgmt --remote-context east
  relayctl register --cluster east --mgmt-context mgmt --dry-run -o yaml
  relayctl register --cluster east --mgmt-context mgmt --remote-context east --secrets-only
  relayctl register --cluster east --mgmt-context mgmt --remote-context east --single-use-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return r.run(cmd, g) },
	}
	f := cmd.Flags()
	f.StringVar(&r.o.Cluster, "cluster", "", "workload cluster name, a DNS-1123 label (required)")
	r.mgmt = addSide(cmd, "mgmt", "management")
	r.remote = addSide(cmd, "remote", "workload")
	f.StringVar(&r.o.Endpoint, "endpoint", "", "issuance endpoint host:port as the workload cluster reaches it (default: the management Service's load balancer address; not needed with --secrets-only)")
	f.StringVar(&r.o.ServerName, "server-name", "", "name the endpoint's certificate must carry (default: host of --endpoint)")
	f.DurationVar(&r.o.Duration, "duration", 0, "lifetime of the relay client certificate (default: the profile's 720h)")
	f.DurationVar(&r.o.RenewBefore, "renew-before", 0, "renew the client certificate this long before it expires (default: the profile's 240h)")
	f.DurationVar(&r.o.Timeout, "timeout", 2*time.Minute, "how long to wait for the client certificate")
	f.BoolVar(&r.dryRun, "dry-run", false, "print the workload objects instead of writing them; the token Secret is never printed")
	f.BoolVar(&r.secretsOnly, "secrets-only", false, "only copy ca.crt of the root (during a root rotation: its trust bundle, and the client certificate is asked to renew now) and the token to the workload cluster (for GitOps installs of the rest, and to bring a cluster that was offline back into a root rotation)")
	f.BoolVar(&r.o.SingleUseToken, "single-use-token", false, "the token enrolls once; renewals go by possession of the current client certificate (sets RelayCluster spec.singleUseToken; see above)")
	r.out = addOutput(cmd, "with --dry-run: the format of the printed objects", "yaml", "json", "jsonpath")
	return cmd
}

// validate checks the flags, before any cluster is read.
func (r *registerCmd) validate(cmd *cobra.Command, g *globals) error {
	r.o.SecretsOnly = r.secretsOnly
	if err := r.o.Validate(); err != nil {
		return usage(cmd, err)
	}
	if r.out.given() && !r.dryRun {
		return usagef(cmd, "-o goes with --dry-run")
	}
	if err := r.out.validate(cmd); err != nil {
		return err
	}
	if r.dryRun && r.o.SingleUseToken {
		return usagef(cmd, "--dry-run and --single-use-token conflict: --single-use-token sets spec.singleUseToken on the RelayCluster in the management cluster, which --dry-run does not write; commit the RelayCluster with that field instead")
	}
	if r.dryRun && r.secretsOnly {
		return usagef(cmd, "--dry-run and --secrets-only conflict: --secrets-only writes only Secrets, which --dry-run never prints")
	}
	if err := resolveSides(cmd, g, r.mgmt, r.remote); err != nil {
		return err
	}
	if !r.mgmt.Given() {
		return usagef(cmd, "--mgmt-context or --mgmt-kubeconfig is required: the management cluster to copy the root and token from")
	}
	if !r.dryRun && !r.remote.Given() {
		return usagef(cmd, "--remote-context or --remote-kubeconfig is required: the workload cluster to register")
	}
	return nil
}

func (r *registerCmd) run(cmd *cobra.Command, g *globals) error {
	if err := r.validate(cmd, g); err != nil {
		return err
	}
	ctx := cmd.Context()
	mc, err := r.mgmt.Connect()
	if err != nil {
		return err
	}
	plan, err := register.Prepare(ctx, mc, r.o)
	if err != nil {
		return err
	}
	if r.dryRun {
		return r.printDryRun(cmd, g, plan)
	}
	rc, err := r.remote.Connect()
	if err != nil {
		return err
	}
	if r.secretsOnly {
		return plan.CopySecrets(ctx, rc, g.stdout)
	}
	if rc.Namespace != kube.DefaultNamespace {
		return errors.New(notDefaultNamespace("register", rc) + "; or use --secrets-only")
	}
	return plan.Apply(ctx, rc, r.o, g.stdout)
}

// printDryRun prints the plan's workload objects in the format -o asked for.
func (r *registerCmd) printDryRun(cmd *cobra.Command, g *globals, plan *register.Plan) error {
	if ns := *r.remote.Flags.Namespace; ns != "" && ns != kube.DefaultNamespace {
		return usagef(cmd, "--dry-run prints the built-in workload profile, which lives in namespace %s; the namespace %s needs the Helm chart", kube.DefaultNamespace, ns)
	}
	if r.out.format == "" || r.out.format == "yaml" {
		return plan.DryRun(g.stdout)
	}
	objs, err := plan.DryRunObjects()
	if err != nil {
		return err
	}
	plan.DryRunNote(g.stderr)
	return r.out.printObjects(g.stdout, objs)
}
