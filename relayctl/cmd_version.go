package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/internal/version"
)

func newVersionCmd(g *globals) *cobra.Command {
	var out *output
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print relayctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.validate(cmd); err != nil {
				return err
			}
			v := version.Get()
			if out.given() {
				return out.print(g.stdout, v)
			}
			_, err := fmt.Fprintf(g.stdout, "relayctl %s\n", v)
			return err
		},
	}
	out = addOutput(cmd, "print the version as data", "json", "yaml")
	return cmd
}
