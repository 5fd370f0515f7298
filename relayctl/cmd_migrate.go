package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/internal/register"
)

func newMigrateScopeCmd(g *globals) *cobra.Command {
	var (
		mgmt                  *side
		contexts, kubeconfigs []string
		remoteNamespace       string
	)
	cmd := &cobra.Command{
		Use:   "migrate-scope --mgmt-context A --remote-context B [--remote-context C ...]",
		Short: "Move an install from the shared root token to per-cluster tokens",
		Long: `migrate-scope moves an install made with tokenScope: Shared (every workload
cluster holds the management root token, the seed's flow) to per-cluster tokens
(SPEC §4). It first checks every cluster given, then records each workload
cluster (RelayCluster) when it has none, switches the management RelayIssuer
to tokenScope: PerCluster, and writes each workload cluster's own token over
the root token it held. No certificate or connection is touched: the relay
stream goes on. Run it again to finish a run that was cut short.

Give every workload cluster that enrols with this management cluster: one left
out keeps the root token and its renewals are refused until it is migrated
(relayctl register --secrets-only, or this command again).

Afterwards every workload cluster has held the root token: rotate it (write a
new token into the management Secret relay-identity-token-secret, keeping the
old one as token.previous) and run relayctl register --secrets-only for each
cluster, so a copy kept anywhere stops proving anything. In mode tls, restart
the server relay-sidecar with --token-scope=per-cluster.`,
		Example: `  relayctl migrate-scope --mgmt-context mgmt --remote-context east --remote-context west`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveSides(cmd, g, mgmt); err != nil {
				return err
			}
			if !mgmt.Given() {
				return usagef(cmd, "--mgmt-context or --mgmt-kubeconfig is required: the management cluster whose RelayIssuer is switched")
			}
			if len(contexts)+len(kubeconfigs) == 0 {
				return usagef(cmd, "give every workload cluster with --remote-context (or --remote-kubeconfig), repeated")
			}
			mc, err := mgmt.Connect()
			if err != nil {
				return err
			}
			ns := remoteNamespace
			if ns == "" {
				ns = *g.target.Flags.Namespace
			}
			var remotes []*kube.Conn
			connect := func(kubeconfig, kubeContext string) error {
				t := kube.NewTarget("workload")
				*t.Flags.KubeConfig, *t.Flags.Context, *t.Flags.Namespace = kubeconfig, kubeContext, ns
				c, err := t.Connect()
				if err != nil {
					return err
				}
				remotes = append(remotes, c)
				return nil
			}
			for _, c := range contexts {
				if err := connect(*g.target.Flags.KubeConfig, c); err != nil {
					return err
				}
			}
			for _, k := range kubeconfigs {
				if err := connect(k, ""); err != nil {
					return err
				}
			}
			res, err := register.MigrateScope(cmd.Context(), mc, remotes, g.stdout)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d workload cluster(s) now hold their own token: %v\n", len(res.Clusters), res.Clusters)
			if res.Flipped {
				fmt.Fprintln(g.stdout, "next: every workload cluster held the root token until now; rotate it (see relayctl migrate-scope --help)")
			}
			return nil
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	f := cmd.Flags()
	f.StringArrayVar(&contexts, "remote-context", nil, "kubeconfig context of a workload cluster (repeat for each; contexts of --kubeconfig)")
	f.StringArrayVar(&kubeconfigs, "remote-kubeconfig", nil, "kubeconfig file of a workload cluster, its current context (repeat for each)")
	f.StringVar(&remoteNamespace, "remote-namespace", "", "namespace relaytls runs in on the workload clusters (default -n, else each context's namespace, else "+kube.DefaultNamespace+")")
	_ = cmd.RegisterFlagCompletionFunc("remote-context", completeContexts(g.target.Flags.KubeConfig))
	return cmd
}
