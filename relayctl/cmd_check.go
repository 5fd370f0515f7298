package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// errFindings is check's error when a finding is an error (exit code 1).
var errFindings = errors.New("the setup has errors (see the findings above)")

func newCheckCmd(g *globals) *cobra.Command {
	var (
		mgmt, remote *side
		in           check.Input
		out          *output
	)
	cmd := &cobra.Command{
		Use:   "check [--mgmt-context A] [--remote-context B] [--server-addr host:port]",
		Short: "Validate a setup; every finding comes with a fix",
		Long: `check reads both clusters and validates the server certificate's names against
the address agents dial, the client certificate's identity, the chains, the
trust bundles, the tokens and the certificate lifetimes. It exits 1 when a
finding is an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveEitherSide(cmd, g, out, mgmt, remote); err != nil {
				return err
			}
			problems, err := readCheckInput(cmd.Context(), &in, mgmt, remote)
			if err != nil {
				return err
			}
			in.Now = time.Now()
			r := check.Evaluate(in)
			r.Findings = append(problems, r.Findings...)
			skipped := in.DialAddress == "" && in.Management != nil && in.Management.Server != nil
			if err := printCheck(g.stdout, out, r, skipped); err != nil {
				return err
			}
			if !r.OK() {
				return errFindings
			}
			return nil
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	remote = addSide(cmd, "remote", "workload")
	f := cmd.Flags()
	f.StringVar(&in.DialAddress, "server-addr", "", "host:port agents dial to reach the relay server (checked against the server certificate's names)")
	f.StringVar(&in.Cluster, "cluster", "", "workload cluster name (default: from the workload install)")
	f.DurationVar(&in.MinLifetime, "min-lifetime", 24*time.Hour, "shortest acceptable certificate lifetime: shorter ones leave too little room to retry a failed renewal")
	out = addOutput(cmd, "print the report as data", "json", "yaml", "jsonpath")
	return cmd
}

// readCheckInput reads the clusters given into in, and returns the
// problems found on the way: the two clusters' modes differ, a reserved
// Secret name, a Secret that cannot be read.
func readCheckInput(ctx context.Context, in *check.Input, sides ...*side) ([]check.Finding, error) {
	var problems []check.Finding
	modeName := ""
	for _, s := range sides {
		if !s.Given() {
			continue
		}
		if err := readCheckSide(ctx, s, in, &modeName, &problems); err != nil {
			return nil, err
		}
	}
	m, err := modes.Parse(modeName)
	if err != nil {
		return nil, err
	}
	in.Mode = m
	return problems, nil
}

// readCheckSide reads one cluster into in: its mode (a finding when it is
// not the mode of the cluster read before), its server Secret name and its
// material.
func readCheckSide(ctx context.Context, s *side, in *check.Input, modeName *string, problems *[]check.Finding) error {
	c, err := s.Connect()
	if err != nil {
		return err
	}
	cfg, err := check.Config(ctx, c)
	if err != nil {
		return err
	}
	if *modeName != "" && cfg["mode"] != *modeName {
		*problems = append(*problems, check.Finding{Severity: check.Error, Check: "mode",
			Problem: fmt.Sprintf("the management cluster runs mode %s, the workload cluster mode %s", *modeName, cfg["mode"]),
			Fix:     "install both clusters with the same mode"})
	}
	*modeName = cfg["mode"]
	if f := reservedServerName(c, s.Role, cfg); f != nil {
		*problems = append(*problems, *f)
	}
	sd, err := check.GatherSide(ctx, c, s.Role, cfg, problems)
	if err != nil {
		return err
	}
	if s.Role == "management" {
		in.Management = sd
	} else {
		in.Workload = sd
		if in.Cluster == "" {
			in.Cluster = cfg["cluster"]
		}
	}
	return nil
}

// reservedServerName is the finding for a management install of a
// bring-your-own server mode whose server Secret has a name reserved for
// the self-signed modes; nil when there is none.
func reservedServerName(c *kube.Conn, role string, cfg map[string]string) *check.Finding {
	m, err := modes.Parse(cfg["mode"])
	if err != nil || !m.BYOServer || role != "management" {
		return nil
	}
	if _, err := m.ServerSecretName(cfg["serverSecret"]); err != nil {
		return &check.Finding{Severity: check.Error, Check: "reserved-name",
			Problem: fmt.Sprintf("%s: ConfigMap %s/%s names server Secret %s: %v", c.Name, c.Namespace, modes.ConfigMapName, cfg["serverSecret"], err),
			Fix:     "store your server certificate in " + modes.CustomServerSecret + " (or another name) and set it in the install (chart value secrets.server)"}
	}
	return nil
}

// printCheck prints the report: as data with -o, else as text, after the
// note that the server SAN check was skipped when it was.
func printCheck(w io.Writer, out *output, r *check.Report, skipped bool) error {
	if out.given() {
		return out.print(w, checkOutput{OK: r.OK(), Report: r, Skipped: skippedChecks(skipped)})
	}
	if skipped {
		fmt.Fprintln(w, "skipped  server-san: pass --server-addr, the address agents dial")
	}
	r.Print(w)
	return nil
}

// checkOutput is check's report as -o prints it.
type checkOutput struct {
	OK bool `json:"ok"`
	*check.Report
	Skipped []string `json:"skipped,omitempty"`
}

func skippedChecks(serverSAN bool) []string {
	if serverSAN {
		return []string{"server-san"}
	}
	return nil
}
