package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/check"
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
			if err := out.validate(cmd); err != nil {
				return err
			}
			if err := resolveSides(cmd, g, mgmt, remote); err != nil {
				return err
			}
			if !mgmt.Given() && !remote.Given() {
				return usagef(cmd, "give --mgmt-context and/or --remote-context (or their --*-kubeconfig twins)")
			}
			ctx := cmd.Context()
			var problems []check.Finding
			modeName := ""
			for _, s := range []*side{mgmt, remote} {
				if !s.Given() {
					continue
				}
				c, err := s.Connect()
				if err != nil {
					return err
				}
				cfg, err := check.Config(ctx, c)
				if err != nil {
					return err
				}
				if modeName != "" && cfg["mode"] != modeName {
					problems = append(problems, check.Finding{Severity: check.Error, Check: "mode",
						Problem: fmt.Sprintf("the management cluster runs mode %s, the workload cluster mode %s", modeName, cfg["mode"]),
						Fix:     "install both clusters with the same mode"})
				}
				modeName = cfg["mode"]
				if m, err := modes.Parse(cfg["mode"]); err == nil && m.BYOServer && s.Role == "management" {
					if _, err := m.ServerSecretName(cfg["serverSecret"]); err != nil {
						problems = append(problems, check.Finding{Severity: check.Error, Check: "reserved-name",
							Problem: fmt.Sprintf("%s: ConfigMap %s/%s names server Secret %s: %v", c.Name, c.Namespace, modes.ConfigMapName, cfg["serverSecret"], err),
							Fix:     "store your server certificate in " + modes.CustomServerSecret + " (or another name) and set it in the install (chart value secrets.server)"})
					}
				}
				sd, err := check.GatherSide(ctx, c, s.Role, cfg, &problems)
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
			}
			m, err := modes.Parse(modeName)
			if err != nil {
				return err
			}
			in.Mode = m
			in.Now = time.Now()
			r := check.Evaluate(in)
			r.Findings = append(problems, r.Findings...)
			skipped := in.DialAddress == "" && in.Management != nil && in.Management.Server != nil
			if out.given() {
				if err := out.print(g.stdout, checkOutput{OK: r.OK(), Report: r, Skipped: skippedChecks(skipped)}); err != nil {
					return err
				}
			} else {
				if skipped {
					fmt.Fprintln(g.stdout, "skipped  server-san: pass --server-addr, the address agents dial")
				}
				r.Print(g.stdout)
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
