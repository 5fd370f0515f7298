package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/internal/register"
)

// namedCluster is what token and revoke share: one workload cluster
// (--cluster) whose record is kept in the management cluster (--mgmt-*).
type namedCluster struct {
	mgmt *side
	name string
}

func addNamedCluster(cmd *cobra.Command) *namedCluster {
	n := &namedCluster{mgmt: addSide(cmd, "mgmt", "management")}
	cmd.Flags().StringVar(&n.name, "cluster", "", "the workload cluster's name")
	return n
}

// connect checks the flags (more, when given, after --cluster) and
// connects to the management cluster.
func (n *namedCluster) connect(cmd *cobra.Command, g *globals, more func() error) (*kube.Conn, error) {
	if err := resolveSides(cmd, g, n.mgmt); err != nil {
		return nil, err
	}
	if n.name == "" {
		return nil, usagef(cmd, "--cluster is required")
	}
	if more != nil {
		if err := more(); err != nil {
			return nil, err
		}
	}
	return n.mgmt.Connect()
}

func newTokenCmd(g *globals) *cobra.Command {
	var cluster *namedCluster
	var outFile string
	var toStdout bool
	cmd := &cobra.Command{
		Use:   "token --cluster NAME --mgmt-context A (--output-file F | --stdout)",
		Short: "Give a workload cluster's own token (for GitOps); printed only with --stdout",
		Long: "Derives the cluster token of one workload cluster from the management cluster's root token and the\n" +
			"cluster's tokenGeneration (SPEC §4). It proves that cluster and no other. It is written to --output-file\n" +
			"(mode 0600) or, only when asked with --stdout, printed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cluster.connect(cmd, g, func() error {
				if (outFile == "") == !toStdout {
					return usagef(cmd, "give exactly one of --output-file and --stdout: the token is never printed unless asked")
				}
				return nil
			})
			if err != nil {
				return err
			}
			tok, err := register.ClusterToken(cmd.Context(), c, cluster.name)
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
			fmt.Fprintf(g.stderr, "wrote the cluster token of %q to %s (value not shown)\n", cluster.name, outFile)
			return nil
		},
	}
	cluster = addNamedCluster(cmd)
	cmd.Flags().StringVar(&outFile, "output-file", "", "write the token to this file (mode 0600)")
	cmd.Flags().BoolVar(&toStdout, "stdout", false, "print the token")
	return cmd
}

func newRevokeCmd(g *globals) *cobra.Command {
	var cluster *namedCluster
	var undo bool
	cmd := &cobra.Command{
		Use:   "revoke --cluster NAME --mgmt-context A [--undo]",
		Short: "Revoke a workload cluster (or re-admit it with a new token generation)",
		Long: "Sets spec.revoked on the cluster's RelayCluster: the issuer and the endpoint refuse its renewals\n" +
			"(ClusterRevoked) and the server sidecar cuts its connections within one reload interval. --undo\n" +
			"re-admits it and bumps tokenGeneration, so it needs its new token (relayctl token or register).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cluster.connect(cmd, g, nil)
			if err != nil {
				return err
			}
			gen, err := register.Revoke(cmd.Context(), c, cluster.name, undo)
			if err != nil {
				return err
			}
			if undo {
				fmt.Fprintf(g.stdout, "cluster %q re-admitted with token generation %d; give it its new token (relayctl register, or relayctl token --cluster %s)\n", cluster.name, gen, cluster.name)
			} else {
				fmt.Fprintf(g.stdout, "cluster %q revoked\n", cluster.name)
			}
			return nil
		},
	}
	cluster = addNamedCluster(cmd)
	cmd.Flags().BoolVar(&undo, "undo", false, "re-admit the cluster with a new token generation")
	return cmd
}
