package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/relaytls/relaytls/internal/version"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// globals are the flags every command has: the one cluster that
// single-cluster commands talk to, and the defaults of the two-cluster
// commands' --mgmt-* and --remote-* flags.
type globals struct {
	target         *kube.Target
	stdout, stderr io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{target: kube.NewTarget("management"), stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "relayctl",
		Short: "relayctl manages relaytls installations",
		Long: `relayctl manages relaytls installations: it installs the management side of a
relay security mode, registers workload clusters, shows their certificates and
checks a setup end to end.

Clusters are named as kubectl names them. The namespace is -n, else the
kubeconfig context's namespace, else ` + kube.DefaultNamespace + ` (the chart's default).

Exit codes: 0 ok, 1 the command failed or found errors, 2 a usage error.`,
		Version:       version.Get().String(),
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetVersionTemplate("relayctl {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(flagError)
	pf := root.PersistentFlags()
	pf.StringVar(g.target.Flags.KubeConfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(g.target.Flags.Context, "context", "", "kubeconfig context of the cluster (default: the current context)")
	pf.StringVarP(g.target.Flags.Namespace, "namespace", "n", "", "namespace relaytls runs in (default: the context's namespace, else "+kube.DefaultNamespace+")")
	_ = root.RegisterFlagCompletionFunc("context", completeContexts(g.target.Flags.KubeConfig))
	root.AddCommand(newInitCmd(g), newRegisterCmd(g), newTokenCmd(g), newRevokeCmd(g), newMigrateScopeCmd(g), newRotateRootCmd(g), newStatusCmd(g), newCheckCmd(g), newVersionCmd(g))
	return root
}

// usageError is a mistake on the command line: exit code 2 and a hint.
type usageError struct {
	command string
	err     error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usage(cmd *cobra.Command, err error) error {
	return &usageError{command: cmd.CommandPath(), err: err}
}

func usagef(cmd *cobra.Command, format string, a ...any) error {
	return usage(cmd, fmt.Errorf(format, a...))
}

// isCobraUsage recognises the errors cobra makes itself before a command
// runs: an unknown command (with its "Did you mean" suggestions) or
// arguments a command does not take.
func isCobraUsage(err error) bool {
	var ue *usageError
	if errors.As(err, &ue) {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "accepts ") ||
		strings.HasPrefix(msg, "invalid argument") || strings.HasPrefix(msg, "required flag")
}

// flagError turns a flag parsing error into a usage error, with the
// nearest flag name when the flag is unknown.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		if s := closestFlag(cmd, name); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", s)
		}
	}
	return usage(cmd, errors.New(msg))
}

// closestFlag is the flag of cmd nearest to name, within two edits.
func closestFlag(cmd *cobra.Command, name string) string {
	best, bestD := "", 3
	visit := func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < bestD || (d == bestD && f.Name < best) {
			best, bestD = f.Name, d
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// completeContexts completes a context flag from the kubeconfig that
// *kubeconfig names (empty: the default files).
func completeContexts(kubeconfig *string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if kubeconfig != nil && *kubeconfig != "" {
			rules.ExplicitPath = *kubeconfig
		}
		cfg, err := rules.Load()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for n := range cfg.Contexts {
			names = append(names, n)
		}
		sort.Strings(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// fixedCompletion completes a flag from a fixed list.
func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}
