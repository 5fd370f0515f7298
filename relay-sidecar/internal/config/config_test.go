package config

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func parse(args ...string) (*Config, error) {
	fs := flag.NewFlagSet("relay-sidecar", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return c, c.Finish(fs)
}

func TestValidate(t *testing.T) {
	server := []string{"--role=server", "--listen=:8443", "--upstream=127.0.0.1:9000"}
	agent := []string{"--role=agent", "--listen=127.0.0.1:7000", "--server-addr=relay.example:8443", "--cluster=cluster-a"}
	with := func(base []string, more ...string) []string { return append(append([]string{}, base...), more...) }
	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of the error; empty means valid
	}{
		{"server insecure", with(server, "--mode=insecure"), nil},
		{"server tls", with(server, "--mode=tls", "--cert-dir=/c", "--token-file=/t"), nil},
		{"server mtls", with(server, "--mode=mtls", "--cert-dir=/c", "--trust-bundle=/b"), nil},
		{"agent insecure", with(agent, "--mode=insecure"), nil},
		{"agent tls", with(agent, "--mode=tls", "--trust-bundle=/b", "--token-file=/t"), nil},
		{"agent mtls on unix", []string{"--role=agent", "--mode=mtls", "--listen=unix:/run/a.sock", "--server-addr=r:1", "--cert-dir=/c", "--trust-bundle=/b"}, nil},
		{"no role", []string{"--mode=tls"}, []string{"--role is required"}},
		{"resume off", with(server, "--mode=insecure", "--resume=false"), nil},
		{"resume window with resume off", with(agent, "--mode=insecure", "--resume=false", "--resume-window=5s", "--resume-buffer=70000"),
			[]string{"--resume-window conflicts with --resume=false", "--resume-buffer conflicts with --resume=false"}},
		{"zero resume window", with(server, "--mode=insecure", "--resume-window=0s"), []string{"--resume-window must be positive"}},
		{"tiny resume buffer", with(server, "--mode=insecure", "--resume-buffer=10"), []string{"--resume-buffer=10 is below"}},
		{"bad role", []string{"--role=proxy"}, []string{`--role="proxy"`}},
		{"bounds set", with(server, "--mode=insecure", "--max-streams-per-connection=8", "--max-tunnels-per-cluster=4",
			"--max-unacked-bytes-per-cluster=2097152", "--auth-timeout=2s"), nil},
		{"bounds too small", with(server, "--mode=insecure", "--max-streams-per-connection=1", "--max-tunnels-per-cluster=0", "--auth-timeout=1ms"),
			[]string{"--max-streams-per-connection=1 is below 2", "--max-tunnels-per-cluster=0 must be at least 1", "--auth-timeout=1ms is below 100ms"}},
		{"cluster budget below the tunnel buffer", with(server, "--mode=insecure", "--max-unacked-bytes-per-cluster=70000"),
			[]string{"--max-unacked-bytes-per-cluster=70000 is below --resume-buffer=1048576"}},
		{"bound on agent", with(agent, "--mode=insecure", "--max-tunnels-per-cluster=5", "--auth-timeout=1s"),
			[]string{"--max-tunnels-per-cluster is only for --role=server", "--auth-timeout is only for --role=server"}},
		{"no mode", server, []string{"--mode is required"}},
		{"bad mode", with(server, "--mode=plain"), []string{`--mode="plain"`}},
		{"agent flag on server", with(server, "--mode=insecure", "--cluster=x", "--server-addr=a:1"),
			[]string{"--cluster is only for --role=agent and conflicts with --role=server", "--server-addr is only for --role=agent"}},
		{"server flag on agent", with(agent, "--mode=insecure", "--upstream=127.0.0.1:1", "--proxy-protocol"),
			[]string{"--upstream is only for --role=server and conflicts with --role=agent", "--proxy-protocol is only for --role=server"}},
		{"token in mtls", with(server, "--mode=mtls", "--cert-dir=/c", "--trust-bundle=/b", "--token-file=/t"),
			[]string{"--token-file conflicts with --mode=mtls"}},
		{"cert in insecure", with(agent, "--mode=insecure", "--cert-dir=/c"), []string{"--cert-dir conflicts with --mode=insecure"}},
		{"client cert in tls agent", with(agent, "--mode=tls", "--trust-bundle=/b", "--token-file=/t", "--cert-dir=/c"),
			[]string{"--cert-dir conflicts with --mode=tls --role=agent"}},
		{"tls server without token", with(server, "--mode=tls", "--cert-dir=/c"), []string{"--token-file is required with --mode=tls --role=server"}},
		{"mtls agent without bundle", with(agent, "--mode=mtls", "--cert-dir=/c"), []string{"--trust-bundle is required"}},
		{"agent on all interfaces", []string{"--role=agent", "--mode=insecure", "--listen=0.0.0.0:7000", "--server-addr=r:1", "--cluster=a"},
			[]string{"--allow-non-loopback-listen"}},
		{"agent on all interfaces allowed", []string{"--role=agent", "--mode=insecure", "--listen=0.0.0.0:7000", "--server-addr=r:1", "--cluster=a", "--allow-non-loopback-listen"}, nil},
		{"bad cluster", with(agent[:3], "--mode=insecure", "--cluster=Not_A_Label"), []string{"--cluster", "DNS-1123"}},
		{"missing cluster", with(agent[:3], "--mode=tls", "--trust-bundle=/b", "--token-file=/t"), []string{"--cluster: cluster name is empty"}},
		{"health equals listen", with(server, "--mode=insecure", "--health-listen=:8443"), []string{"--health-listen and --listen"}},
		{"short keepalive", with(agent, "--mode=insecure", "--keepalive-time=1s"), []string{"--keepalive-time=1s"}},
		{"tls version", with(server, "--mode=tls", "--cert-dir=/c", "--token-file=/t", "--tls-min-version=1.1"), []string{`--tls-min-version="1.1"`}},
		{"tls version insecure", with(server, "--mode=insecure", "--tls-min-version=1.2"), []string{"--tls-min-version conflicts with --mode=insecure"}},
		{"stray args", with(server, "--mode=insecure", "extra"), []string{"unexpected arguments: extra"}},
		{"shared scope", with(server, "--mode=tls", "--cert-dir=/c", "--token-file=/t", "--token-scope=shared"), nil},
		{"unknown scope", with(server, "--mode=tls", "--cert-dir=/c", "--token-file=/t", "--token-scope=global"), []string{`--token-scope="global" is not per-cluster or shared`}},
		{"scope in mtls", with(server, "--mode=mtls", "--cert-dir=/c", "--trust-bundle=/b", "--token-scope=shared"), []string{"--token-scope conflicts with --mode=mtls"}},
		{"cluster list on the agent", with(agent, "--mode=insecure", "--cluster-list=/l"), []string{"--cluster-list is only for --role=server"}},
		{"cluster list in insecure", with(server, "--mode=insecure", "--cluster-list=/l"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(tc.args...)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid flags refused: %v", err)
				}
				if c.Role == "agent" && c.Mode != "insecure" && c.ServerName == "" {
					t.Errorf("--server-name not defaulted")
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
