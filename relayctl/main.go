// Command relayctl is the relaytls operator CLI:
//
//	relayctl init --mode M [-o yaml|json]          management-side objects of mode M, printed or applied
//	relayctl register --cluster NAME --mgmt-context A --remote-context B [--dry-run -o yaml]
//	                                               connect a workload cluster and wait for its client certificate
//	relayctl status [--mgmt-context A] [--remote-context B] [-o json]
//	                                               issuers, certificates and registered clusters on both sides
//	relayctl check  [--mgmt-context A] [--remote-context B] [--server-addr host:port] [-o json]
//	                                               validate SANs, chains, bundles, tokens and lifetimes
//	relayctl version, relayctl completion SHELL
//
// Clusters are named the way kubectl names them (--kubeconfig, --context,
// -n); a command that talks to two clusters has --mgmt-* and --remote-*
// twins of each. Exit codes: 0 ok, 1 the command failed or found errors,
// 2 a usage error. No command ever prints a token or a private key.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs relayctl, prints its error once and returns the exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "relayctl: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.command)
		return exitUsage
	}
	return exitFailed
}

// run runs relayctl with args and returns its error unprinted.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && isCobraUsage(err) {
		return &usageError{command: cmd.CommandPath(), err: err}
	}
	return err
}
