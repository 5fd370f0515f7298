package command

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParseFlagsAndExitCode(t *testing.T) {
	parse := func(args ...string) (error, string) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.Bool("on", false, "a flag")
		var stderr bytes.Buffer
		return ParseFlags(fs, args, &stderr), stderr.String()
	}
	if err, _ := parse("--on"); err != nil || ExitCode("x", err, &bytes.Buffer{}) != 0 {
		t.Fatalf("a good command line: %v", err)
	}
	if err, usage := parse("-h"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage, "-on") || ExitCode("x", err, &bytes.Buffer{}) != 0 {
		t.Fatalf("-h: %v, usage %q", err, usage)
	}
	if err, out := parse("--off"); !errors.Is(err, ErrUsage) || !strings.Contains(out, "off") || ExitCode("x", err, &bytes.Buffer{}) != 2 {
		t.Fatalf("an unknown flag: %v, stderr %q", err, out)
	}
	var stderr bytes.Buffer
	if code := ExitCode("relay-x", errors.New("it broke"), &stderr); code != 1 || stderr.String() != "relay-x: it broke\n" {
		t.Fatalf("a failure: exit %d, stderr %q", code, stderr.String())
	}
}
