package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/rotate"
)

func newRotateRootCmd(g *globals) *cobra.Command {
	var mgmt *side
	o := rotate.Options{}
	cmd := &cobra.Command{
		Use:   "rotate-root --phase prepare|activate|retire --mgmt-context A [--name N]",
		Short: "Rotate the root CA: prepare, activate, retire (README \"Rotating the root\")",
		Long: "Sets spec.ca.rootRotation on the management RelayIssuer and prints relay-issuer's answer.\n" +
			"prepare: the new root joins every trust bundle (made by cert-manager in the self-signed modes,\n" +
			"placed by you in Secret relay-root-tls-secret-next otherwise); activate: once every registered\n" +
			"cluster was given it, the intermediate and the server certificate are issued under it; retire:\n" +
			"once no live leaf chains to the old root, it leaves the bundles. A refused phase exits 1 and\n" +
			"names what holds it back. GitOps: set the chart value relayIssuer.rootRotation instead.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveSides(cmd, g, mgmt); err != nil {
				return err
			}
			if _, err := rotate.ParsePhase(o.Phase); err != nil {
				return usage(cmd, err)
			}
			c, err := mgmt.Connect()
			if err != nil {
				return err
			}
			o.Now = time.Now()
			return rotate.Run(cmd.Context(), c, o, g.stdout)
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	f := cmd.Flags()
	f.StringVar(&o.Phase, "phase", "", "prepare, activate or retire")
	f.StringVar(&o.Name, "name", "", "the rotation's name (default: the running rotation, or root-<date> for a new one)")
	f.StringVar(&o.Issuer, "issuer", "relay", "the management RelayIssuer")
	f.StringVar(&o.NewRootSecret, "new-root-secret", "", "the Secret holding the new root (default relay-root-tls-secret-next)")
	f.DurationVar(&o.Wait, "wait", 30*time.Second, "how long to wait for relay-issuer's answer (0: do not wait)")
	return cmd
}
