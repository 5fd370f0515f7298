package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/register"
)

func newTokenCmd(g *globals) *cobra.Command {
	var mgmt *side
	var cluster, outFile string
	var toStdout bool
	cmd := &cobra.Command{
		Use:   "token --cluster NAME --mgmt-context A (--output-file F | --stdout)",
		Short: "Give a workload cluster's own token (for GitOps); printed only with --stdout",
		Long: "Derives the cluster token of one workload cluster from the management cluster's root token and the\n" +
			"cluster's tokenGeneration (SPEC §4). It proves that cluster and no other. It is written to --output-file\n" +
			"(mode 0600) or, only when asked with --stdout, printed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveSides(cmd, g, mgmt); err != nil {
				return err
			}
			if cluster == "" {
				return usagef(cmd, "--cluster is required")
			}
			if (outFile == "") == !toStdout {
				return usagef(cmd, "give exactly one of --output-file and --stdout: the token is never printed unless asked")
			}
			c, err := mgmt.Connect()
			if err != nil {
				return err
			}
			tok, err := register.ClusterToken(cmd.Context(), c, cluster)
			if err != nil {
				return err
			}
			if toStdout {
				_, err = fmt.Fprintln(g.stdout, string(tok))
				return err
			}
			if err := os.WriteFile(outFile, append(tok, '\n'), 0o600); err != nil {
				return fmt.Errorf("writing the token: %w", err)
			}
			fmt.Fprintf(g.stderr, "wrote the cluster token of %q to %s (value not shown)\n", cluster, outFile)
			return nil
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	cmd.Flags().StringVar(&cluster, "cluster", "", "the workload cluster's name")
	cmd.Flags().StringVar(&outFile, "output-file", "", "write the token to this file (mode 0600)")
	cmd.Flags().BoolVar(&toStdout, "stdout", false, "print the token")
	return cmd
}

func newRevokeCmd(g *globals) *cobra.Command {
	var mgmt *side
	var cluster string
	var undo bool
	cmd := &cobra.Command{
		Use:   "revoke --cluster NAME --mgmt-context A [--undo]",
		Short: "Revoke a workload cluster (or re-admit it with a new token generation)",
		Long: "Sets spec.revoked on the cluster's RelayCluster: the issuer and the endpoint refuse its renewals\n" +
			"(ClusterRevoked) and the server sidecar cuts its connections within one reload interval. --undo\n" +
			"re-admits it and bumps tokenGeneration, so it needs its new token (relayctl token or register).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveSides(cmd, g, mgmt); err != nil {
				return err
			}
			if cluster == "" {
				return usagef(cmd, "--cluster is required")
			}
			c, err := mgmt.Connect()
			if err != nil {
				return err
			}
			gen, err := register.Revoke(cmd.Context(), c, cluster, undo)
			if err != nil {
				return err
			}
			if undo {
				fmt.Fprintf(g.stdout, "cluster %q re-admitted with token generation %d; give it its new token (relayctl register, or relayctl token --cluster %s)\n", cluster, gen, cluster)
			} else {
				fmt.Fprintf(g.stdout, "cluster %q revoked\n", cluster)
			}
			return nil
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	cmd.Flags().StringVar(&cluster, "cluster", "", "the workload cluster's name")
	cmd.Flags().BoolVar(&undo, "undo", false, "re-admit the cluster with a new token generation")
	return cmd
}
