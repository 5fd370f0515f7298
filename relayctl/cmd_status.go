package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaytls/relaytls/relayctl/internal/status"
)

func newStatusCmd(g *globals) *cobra.Command {
	var mgmt, remote *side
	cmd := &cobra.Command{
		Use:   "status [--mgmt-context A] [--remote-context B]",
		Short: "Show the issuers and certificates of both clusters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveSides(cmd, g, mgmt, remote); err != nil {
				return err
			}
			if !mgmt.Given() && !remote.Given() {
				return usagef(cmd, "give --mgmt-context and/or --remote-context (or their --*-kubeconfig twins)")
			}
			var errs []error
			for _, s := range []*side{mgmt, remote} {
				if !s.Given() {
					continue
				}
				c, err := s.Connect()
				if err == nil {
					err = status.Print(cmd.Context(), c, g.stdout, time.Now())
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
	}
	mgmt = addSide(cmd, "mgmt", "management")
	remote = addSide(cmd, "remote", "workload")
	return cmd
}
