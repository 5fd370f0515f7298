// Package command holds what the mains of relay-issuer and relay-sidecar
// share: each parses its flags in run(ctx, args, stdout, stderr) and main
// turns run's error into the process's exit.
package command

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// ErrUsage marks a command line the flag package could not parse (it has
// printed the error and the usage).
var ErrUsage = errors.New("bad command line")

// ParseFlags parses args into fs, with the usage and parse errors on
// stderr: flag.ErrHelp for -h, an ErrUsage for anything it refuses.
func ParseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return nil
}

// ExitCode is the exit of run's error: 0 for none and for -h, 2 for a bad
// command line, 1 for anything else, which it prints to stderr after name.
func ExitCode(name string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}

// Exit ends the process with ExitCode.
func Exit(name string, err error) {
	os.Exit(ExitCode(name, err, os.Stderr))
}
