// Command relayctl is the relaytls operator CLI:
//
//	relayctl init --mode M [-o yaml]              management-side objects of mode M, printed or applied
//	relayctl register --cluster NAME --mgmt-context A --remote-context B [--dry-run -o yaml]
//	                                              connect a workload cluster and wait for its client certificate
//	relayctl status [--mgmt-context A] [--remote-context B]
//	                                              issuers and certificates on both sides
//	relayctl check  [--mgmt-context A] [--remote-context B] [--server-addr host:port]
//	                                              validate SANs, chains, bundles, tokens and lifetimes
//
// Every cluster flag has a --*-kubeconfig twin; contexts are resolved the way
// kubectl does. No command ever prints a token or a private key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/initcmd"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/internal/register"
	"github.com/relaytls/relaytls/relayctl/internal/status"
	"github.com/relaytls/relaytls/relayctl/modes"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "relayctl: %v\n", err)
		}
		os.Exit(1)
	}
}

const usage = `relayctl manages relaytls installations.

Commands:
  init      print (-o yaml) or apply the management-side objects of a mode
  register  connect a workload cluster to the management cluster
  status    show issuers and certificates of both clusters
  check     validate a setup; every finding comes with a fix

Run relayctl <command> -h for its flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "init":
		return runInit(ctx, rest, stdout, stderr)
	case "register":
		return runRegister(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "check":
		return runCheck(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("relayctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}

// clusterFlags are --<side>-context and --<side>-kubeconfig.
type clusterFlags struct {
	side, role          string
	context, kubeconfig string
}

func addCluster(fs *flag.FlagSet, side, role string) *clusterFlags {
	c := &clusterFlags{side: side, role: role}
	fs.StringVar(&c.context, side+"-context", "", "kubeconfig context of the "+role+" cluster")
	fs.StringVar(&c.kubeconfig, side+"-kubeconfig", "", "kubeconfig file of the "+role+" cluster (default $KUBECONFIG or ~/.kube/config)")
	return c
}

func (c *clusterFlags) given() bool { return c.context != "" || c.kubeconfig != "" }

func (c *clusterFlags) connect() (*kube.Conn, error) {
	return kube.Connect(c.role, c.kubeconfig, c.context)
}

func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	mode := fs.String("mode", "", "relay security mode: "+strings.Join(modes.Names(), ", ")+" (required)")
	output := fs.String("o", "", `"yaml" prints the objects instead of applying them`)
	serverSecret := fs.String("server-secret", "", "bring-your-own modes: the Secret holding your server certificate (default relay-server-tls-secret-custom; relay-server-tls-secret is reserved)")
	dnsNames := fs.String("server-dns-names", "", "self-signed modes: comma-separated names for the relay server certificate (every name agents dial)")
	kctx := fs.String("context", "", "kubeconfig context of the management cluster")
	kcfg := fs.String("kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for cert-manager to issue the self-signed PKI")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *mode == "" {
		return errors.New("--mode is required: one of " + strings.Join(modes.Names(), ", "))
	}
	m, err := modes.Parse(*mode)
	if err != nil {
		return fmt.Errorf("--mode: %w", err)
	}
	if *output != "" && *output != "yaml" {
		return fmt.Errorf("-o %q: only yaml is supported", *output)
	}
	o := initcmd.Options{Mode: m, ServerSecret: *serverSecret}
	for _, n := range strings.Split(*dnsNames, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.ServerDNSNames = append(o.ServerDNSNames, n)
		}
	}
	objs, err := initcmd.Objects(o)
	if err != nil {
		return err
	}
	if *output == "yaml" {
		return initcmd.YAML(stdout, objs)
	}
	conn, err := kube.Connect("management", *kcfg, *kctx)
	if err != nil {
		return err
	}
	serverName, _ := m.ServerSecretName(*serverSecret)
	if err := initcmd.Preflight(ctx, conn, m, "management", serverName); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Installing relaytls mode %s in %s\n", m.Name, conn.Name)
	if err := conn.Apply(ctx, objs, stdout); err != nil {
		return err
	}
	if err := initcmd.WaitPKI(ctx, conn, objs, *timeout, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Done. Next: relayctl status, then relayctl register for each workload cluster.\n")
	return nil
}

func runRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("register", stderr)
	var o register.Options
	fs.StringVar(&o.Cluster, "cluster", "", "workload cluster name, a DNS-1123 label (required)")
	mgmt := addCluster(fs, "mgmt", "management")
	remote := addCluster(fs, "remote", "workload")
	fs.StringVar(&o.Endpoint, "endpoint", "", "issuance endpoint host:port as the workload cluster reaches it (default: the management Service's load balancer address)")
	fs.StringVar(&o.ServerName, "server-name", "", "name the endpoint's certificate must carry (default: host of --endpoint)")
	fs.DurationVar(&o.Duration, "duration", 0, "lifetime of the relay client certificate (default: the profile's 720h)")
	fs.DurationVar(&o.RenewBefore, "renew-before", 0, "renew the client certificate this long before it expires (default: the profile's 240h)")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for the client certificate")
	dryRun := fs.Bool("dry-run", false, "print the workload objects instead of writing them (with -o yaml); the token Secret is never printed")
	output := fs.String("o", "", `"yaml" with --dry-run`)
	secretsOnly := fs.Bool("secrets-only", false, "only copy ca.crt of the root and the token to the workload cluster (for GitOps installs of the rest)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return err
	}
	if *output != "" && (!*dryRun || *output != "yaml") {
		return errors.New("-o yaml goes with --dry-run")
	}
	if *dryRun && *secretsOnly {
		return errors.New("--dry-run and --secrets-only conflict: --secrets-only writes only Secrets, which --dry-run never prints")
	}
	if !mgmt.given() {
		return errors.New("--mgmt-context or --mgmt-kubeconfig is required: the management cluster to copy the root and token from")
	}
	if !*dryRun && !remote.given() {
		return errors.New("--remote-context or --remote-kubeconfig is required: the workload cluster to register")
	}
	mc, err := mgmt.connect()
	if err != nil {
		return err
	}
	plan, err := register.Prepare(ctx, mc, o)
	if err != nil {
		return err
	}
	if *dryRun {
		return plan.DryRun(stdout)
	}
	rc, err := remote.connect()
	if err != nil {
		return err
	}
	if *secretsOnly {
		return plan.CopySecrets(ctx, rc, stdout)
	}
	return plan.Apply(ctx, rc, o, stdout)
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	mgmt := addCluster(fs, "mgmt", "management")
	remote := addCluster(fs, "remote", "workload")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !mgmt.given() && !remote.given() {
		return errors.New("give --mgmt-context and/or --remote-context (or their --*-kubeconfig twins)")
	}
	var errs []error
	for _, side := range []*clusterFlags{mgmt, remote} {
		if !side.given() {
			continue
		}
		c, err := side.connect()
		if err == nil {
			err = status.Print(ctx, c, stdout, time.Now())
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	mgmt := addCluster(fs, "mgmt", "management")
	remote := addCluster(fs, "remote", "workload")
	var in check.Input
	fs.StringVar(&in.DialAddress, "server-addr", "", "host:port agents dial to reach the relay server (checked against the server certificate's names)")
	fs.StringVar(&in.Cluster, "cluster", "", "workload cluster name (default: from the workload install)")
	fs.DurationVar(&in.MinLifetime, "min-lifetime", 24*time.Hour, "shortest acceptable certificate lifetime: shorter ones leave too little room to retry a failed renewal")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !mgmt.given() && !remote.given() {
		return errors.New("give --mgmt-context and/or --remote-context (or their --*-kubeconfig twins)")
	}
	var problems []check.Finding
	modeName := ""
	for _, side := range []*clusterFlags{mgmt, remote} {
		if !side.given() {
			continue
		}
		c, err := side.connect()
		if err != nil {
			return err
		}
		cfg, err := check.Config(ctx, c)
		if err != nil {
			return err
		}
		if modeName != "" && cfg["mode"] != modeName {
			problems = append(problems, check.Finding{Severity: check.Error, Check: "mode",
				Problem: fmt.Sprintf("the management cluster runs mode %s, the workload cluster mode %s", modeName, cfg["mode"]),
				Fix:     "install both clusters with the same mode"})
		}
		modeName = cfg["mode"]
		if m, err := modes.Parse(cfg["mode"]); err == nil && m.BYOServer && side.role == "management" {
			if _, err := m.ServerSecretName(cfg["serverSecret"]); err != nil {
				problems = append(problems, check.Finding{Severity: check.Error, Check: "reserved-name",
					Problem: fmt.Sprintf("%s: ConfigMap %s/%s names server Secret %s: %v", c.Name, modes.Namespace, modes.ConfigMapName, cfg["serverSecret"], err),
					Fix:     "store your server certificate in " + modes.CustomServerSecret + " (or another name) and set it in the install (chart value secrets.server)"})
			}
		}
		s, err := check.GatherSide(ctx, c, side.role, cfg, &problems)
		if err != nil {
			return err
		}
		if side.role == "management" {
			in.Management = s
		} else {
			in.Workload = s
			if in.Cluster == "" {
				in.Cluster = cfg["cluster"]
			}
		}
	}
	m, err := modes.Parse(modeName)
	if err != nil {
		return err
	}
	in.Mode = m
	in.Now = time.Now()
	r := check.Evaluate(in)
	r.Findings = append(problems, r.Findings...)
	if in.DialAddress == "" && in.Management != nil && in.Management.Server != nil {
		fmt.Fprintln(stdout, "skipped  server-san: pass --server-addr, the address agents dial")
	}
	r.Print(stdout)
	if !r.OK() {
		return errors.New("the setup has errors (see the findings above)")
	}
	return nil
}
