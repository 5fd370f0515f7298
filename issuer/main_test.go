package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/internal/command"
)

// TestRunCommandLine runs the command's parsing paths, none of which reach a
// cluster: what each prints where, and the error main turns into an exit.
func TestRunCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		err        error  // errors.Is target; nil: any error containing msg
		msg        string // in the error, or "" for success
		stdout     string
		stderrHave string
	}{
		{name: "version to stdout", args: []string{"--version"}, stdout: "relay-issuer"},
		{name: "help is ErrHelp with the usage on stderr", args: []string{"-h"}, err: flag.ErrHelp, stderrHave: "-issuance-listen-address"},
		{name: "an unknown flag is a usage error", args: []string{"--no-such-flag"}, err: command.ErrUsage, stderrHave: "no-such-flag"},
		{name: "a positional argument", args: []string{"extra"}, msg: "unexpected arguments: extra"},
		{name: "a negative bound", args: []string{"--issuance-listen-address=:0", "--issuance-burst=-1"}, msg: "--issuance-burst must not be negative"},
		{name: "endpoint flags without the endpoint", args: []string{"--issuance-timeout=5s"}, msg: "--issuance-timeout only work with --issuance-listen-address"},
		{name: "a bad log level", args: []string{"--log-level=loud"}, msg: "--log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tc.args, &stdout, &stderr)
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("run(%q) = %v; want %v", tc.args, err, tc.err)
				}
			case tc.msg != "":
				if err == nil || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("run(%q) = %v; want an error saying %q", tc.args, err, tc.msg)
				}
			case err != nil:
				t.Fatalf("run(%q) = %v", tc.args, err)
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderrHave) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderrHave)
			}
		})
	}
}
