package main

import (
	"errors"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/status"
)

// statusOutput is status as -o prints it: one report a cluster given,
// under the role its flags named it by.
type statusOutput struct {
	Management any `json:"management,omitempty"`
	Workload   any `json:"workload,omitempty"`
}

// statusError stands for a cluster status could not read.
type statusError struct {
	Target    string `json:"target"`
	Namespace string `json:"namespace"`
	Error     string `json:"error"`
}

func newStatusCmd(g *globals) *cobra.Command {
	var (
		mgmt, remote *side
		out          *output
	)
	cmd := &cobra.Command{
		Use:   "status [--mgmt-context A] [--remote-context B] [-o text|json|yaml]",
		Short: "Show the issuers, certificates and registered clusters of both clusters",
		Long: `status shows, for each cluster given, the install's role and mode, its
RelayIssuers with their readiness and root rotation, its Certificates with
serial, expiry and renewal, on the management cluster the registered
workload clusters with their token generation, enrollment and the roots
they were given, and warnings about what needs a look.

-o json (or yaml, or jsonpath) prints the same as data: an object with
"management" and/or "workload", each with target, namespace, role, mode,
cluster, issuers, certificates, clusters (null on a workload cluster) and
warnings (empty when all is well). A cluster that cannot be read has only
target, namespace and error, and the command exits 1.`,
		Example: `  relayctl status --mgmt-context mgmt --remote-context east
  relayctl status --mgmt-context mgmt -o json | jq '.management.clusters[] | {name, enrolled}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveEitherSide(cmd, g, out, mgmt, remote); err != nil {
				return err
			}
			var (
				errs []error
				data statusOutput
				now  = time.Now()
			)
			for _, s := range []*side{mgmt, remote} {
				if !s.Given() {
					continue
				}
				r, err := gatherStatus(cmd, s, now)
				if err == nil && !out.data() {
					err = r.Print(g.stdout)
				}
				errs = append(errs, err)
				if s == mgmt {
					data.Management = r
				} else {
					data.Workload = r
				}
			}
			if out.data() {
				errs = append(errs, out.print(g.stdout, data))
			}
			return errors.Join(errs...)
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	remote = addSide(cmd, "remote", "workload")
	out = addTextOutput(cmd, "output format", "json", "yaml", "jsonpath")
	return cmd
}

// gatherStatus reads one side's status: a *status.Report, or when it
// cannot, a statusError, so that -o json still says which cluster failed
// and why.
func gatherStatus(cmd *cobra.Command, s *side, now time.Time) (report, error) {
	c, err := s.Connect()
	if err != nil {
		return &statusError{Target: s.Role + " cluster", Namespace: *s.Flags.Namespace, Error: err.Error()}, err
	}
	r, err := status.Gather(cmd.Context(), c, now)
	if err != nil {
		return &statusError{Target: c.Name, Namespace: c.Namespace, Error: err.Error()}, err
	}
	return r, nil
}

// report is what status prints of one cluster.
type report interface{ Print(w io.Writer) error }

func (e *statusError) Print(io.Writer) error { return errors.New(e.Error) }
