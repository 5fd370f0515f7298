package main

import (
	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// side is one cluster of a two-cluster command: --<name>-kubeconfig,
// --<name>-context and --<name>-namespace. The global --kubeconfig and -n
// are their defaults; the global --context is refused there, since it
// cannot say which of the two clusters it means.
type side struct {
	*kube.Target
	name string
}

func addSide(cmd *cobra.Command, name, role string) *side {
	s := &side{Target: kube.NewTarget(role), name: name}
	f := cmd.Flags()
	f.StringVar(s.Flags.Context, name+"-context", "", "kubeconfig context of the "+role+" cluster")
	f.StringVar(s.Flags.KubeConfig, name+"-kubeconfig", "", "kubeconfig file of the "+role+" cluster (default --kubeconfig, $KUBECONFIG or ~/.kube/config)")
	f.StringVar(s.Flags.Namespace, name+"-namespace", "", "namespace relaytls runs in on the "+role+" cluster (default -n, else the context's namespace, else "+kube.DefaultNamespace+")")
	_ = cmd.RegisterFlagCompletionFunc(name+"-context", completeContexts(s.Flags.KubeConfig))
	return s
}

// resolveSides applies the global defaults to the sides, after refusing
// the global --context.
func resolveSides(cmd *cobra.Command, g *globals, sides ...*side) error {
	if *g.target.Flags.Context != "" {
		return usagef(cmd, "--context names one cluster, and %s talks to two: use --mgmt-context and --remote-context", cmd.Name())
	}
	for _, s := range sides {
		if *s.Flags.KubeConfig == "" && *s.Flags.Context != "" {
			*s.Flags.KubeConfig = *g.target.Flags.KubeConfig
		}
		if *s.Flags.Namespace == "" {
			*s.Flags.Namespace = *g.target.Flags.Namespace
		}
	}
	return nil
}

// resolveEitherSide is the start of a command that reads one or both
// clusters: -o checked, the sides resolved, and at least one given.
func resolveEitherSide(cmd *cobra.Command, g *globals, out *output, mgmt, remote *side) error {
	if err := out.validate(cmd); err != nil {
		return err
	}
	if err := resolveSides(cmd, g, mgmt, remote); err != nil {
		return err
	}
	if !mgmt.Given() && !remote.Given() {
		return usagef(cmd, "give --mgmt-context and/or --remote-context (or their --*-kubeconfig twins)")
	}
	return nil
}
