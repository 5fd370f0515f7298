package command

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParseFlagsAndExitCode(t *testing.T) {
	parse := func(args ...string) (string, error) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.Bool("on", false, "a flag")
		var stderr bytes.Buffer
		err := ParseFlags(fs, args, &stderr)
		return stderr.String(), err
	}
	if _, err := parse("--on"); err != nil || ExitCode("x", err, &bytes.Buffer{}) != 0 {
		t.Fatalf("a good command line: %v", err)
	}
	if usage, err := parse("-h"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage, "-on") || ExitCode("x", err, &bytes.Buffer{}) != 0 {
		t.Fatalf("-h: %v, usage %q", err, usage)
	}
	if out, err := parse("--off"); !errors.Is(err, ErrUsage) || !strings.Contains(out, "off") || ExitCode("x", err, &bytes.Buffer{}) != 2 {
		t.Fatalf("an unknown flag: %v, stderr %q", err, out)
	}
	var stderr bytes.Buffer
	if code := ExitCode("relay-x", errors.New("it broke"), &stderr); code != 1 || stderr.String() != "relay-x: it broke\n" {
		t.Fatalf("a failure: exit %d, stderr %q", code, stderr.String())
	}
}
