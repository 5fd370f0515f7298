package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/initcmd"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/modes"
)

func newInitCmd(g *globals) *cobra.Command {
	var (
		mode, serverSecret, dnsNames string
		timeout                      time.Duration
		out                          *output
	)
	cmd := &cobra.Command{
		Use:   "init --mode MODE [-o yaml|json]",
		Short: "Print (-o) or apply the management-side objects of a mode",
		Long: `init installs the management side of a relay security mode from the built-in
profile, after checking that the Secrets you bring in that mode exist, and waits
for cert-manager to issue the self-signed PKI. With -o it prints the objects
instead, for a GitOps repository.`,
		Example: `  relayctl init --mode mtls-self-signed --server-dns-names relay.example.com
  relayctl init --mode tls-byo-server -o yaml > relaytls.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mode == "" {
				return usagef(cmd, "--mode is required: one of %s", strings.Join(modes.Names(), ", "))
			}
			m, err := modes.Parse(mode)
			if err != nil {
				return usagef(cmd, "--mode: %w", err)
			}
			if err := out.validate(cmd); err != nil {
				return err
			}
			o := initcmd.Options{Mode: m, ServerSecret: serverSecret}
			for _, n := range strings.Split(dnsNames, ",") {
				if n = strings.TrimSpace(n); n != "" {
					o.ServerDNSNames = append(o.ServerDNSNames, n)
				}
			}
			objs, err := initcmd.Objects(o)
			if err != nil {
				return usage(cmd, err)
			}
			if out.given() {
				return out.printObjects(g.stdout, objs)
			}
			conn, err := g.target.Connect()
			if err != nil {
				return err
			}
			if conn.Namespace != kube.DefaultNamespace {
				return errors.New(notDefaultNamespace("init", conn))
			}
			serverName, _ := m.ServerSecretName(serverSecret)
			ctx := cmd.Context()
			if err := initcmd.Preflight(ctx, conn, m, "management", serverName); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Installing relaytls mode %s in %s\n", m.Name, conn.Name)
			if err := conn.Apply(ctx, objs, g.stdout); err != nil {
				return err
			}
			if err := initcmd.WaitPKI(ctx, conn, objs, timeout, g.stdout); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Done. Next: relayctl status, then relayctl register for each workload cluster.\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "", "relay security mode: "+strings.Join(modes.Names(), ", ")+" (required)")
	f.StringVar(&serverSecret, "server-secret", "", "bring-your-own modes: the Secret holding your server certificate (default relay-server-tls-secret-custom; relay-server-tls-secret is reserved)")
	f.StringVar(&dnsNames, "server-dns-names", "", "self-signed modes: comma-separated names for the relay server certificate (every name agents dial)")
	f.DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for cert-manager to issue the self-signed PKI")
	out = addOutput(cmd, "print the objects instead of applying them", "yaml", "json", "jsonpath")
	_ = cmd.RegisterFlagCompletionFunc("mode", fixedCompletion(modes.Names()...))
	return cmd
}

// notDefaultNamespace explains why an install from the built-in profiles
// cannot go to another namespace.
func notDefaultNamespace(command string, c *kube.Conn) string {
	return fmt.Sprintf("%s: relayctl %s installs the built-in profile, which lives in namespace %s, but the namespace is %s "+
		"(from -n or the kubeconfig context); pass -n %s, or install the Helm chart into %s (helm install -n %s)",
		c.Name, command, kube.DefaultNamespace, c.Namespace, kube.DefaultNamespace, c.Namespace, c.Namespace)
}
