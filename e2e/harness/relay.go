package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/relaytls/relaytls/e2e/relayapp"
	"k8s.io/apimachinery/pkg/util/wait"
)

// RelayOptions configure the relay: the sample management server behind a
// server sidecar, and the sample agent behind an agent sidecar.
type RelayOptions struct {
	Mode   Mode
	Bins   Binaries
	LogDir string
	// Server and Agent are the sidecars' mounts.
	Server, Agent Mounts
	// Interval between heartbeats (default 20ms).
	Interval time.Duration
	// Name prefixes the process names (default "relay").
	Name string
	// AgentDial, when set, is called with the server sidecar's address once
	// it is ready and returns the address the agent sidecar dials instead
	// (for a fault proxy in between).
	AgentDial func(serverAddr string) (string, error)
}

// Relay is the running chain: relayapp server ← server sidecar ⇐ agent
// sidecar ← relayapp agent, each a separate process.
type Relay struct {
	Opts                                        RelayOptions
	AppServer, ServerSidecar, AgentSidecar, App *Proc
	// ServerAddr is the server sidecar's relay address; ServerHealth and
	// AgentHealth are the sidecars' /livez, /readyz and /metrics addresses.
	ServerAddr, ServerHealth, AgentHealth string

	mu                      sync.Mutex
	serverStats, agentStats relayapp.Stats
}

// StartRelay starts the four processes in order, each once the one before
// is ready, and waits until heartbeats flow both ways.
func StartRelay(ctx context.Context, o RelayOptions) (*Relay, error) {
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Name == "" {
		o.Name = "relay"
	}
	r := &Relay{Opts: o}
	addrs := make([]string, 5)
	for i := range addrs {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	upstream, listen, agentListen := addrs[0], addrs[1], addrs[2]
	r.ServerAddr, r.ServerHealth, r.AgentHealth = listen, addrs[3], addrs[4]
	stats := func(dst *relayapp.Stats) func(string) {
		return func(line string) {
			var s relayapp.Stats
			if json.Unmarshal([]byte(line), &s) == nil {
				r.mu.Lock()
				*dst = s
				r.mu.Unlock()
			}
		}
	}
	appArgs := []string{"--interval=" + o.Interval.String(), "--stats-interval=200ms"}
	var err error
	fail := func(err error) (*Relay, error) {
		_ = r.Stop()
		return nil, err
	}
	if r.AppServer, err = StartProc(o.Name+"-app-server", o.LogDir, o.Bins.RelayApp, append([]string{"--role=server", "--listen=" + upstream}, appArgs...), stats(&r.serverStats)); err != nil {
		return fail(err)
	}
	if r.ServerSidecar, err = StartProc(o.Name+"-sidecar-server", o.LogDir, o.Bins.Sidecar, r.serverArgs(listen, upstream), nil); err != nil {
		return fail(err)
	}
	if err := waitReady(ctx, r.ServerHealth, r.ServerSidecar); err != nil {
		return fail(fmt.Errorf("server sidecar: %w", err))
	}
	dial := listen
	if o.AgentDial != nil {
		if dial, err = o.AgentDial(listen); err != nil {
			return fail(err)
		}
	}
	if r.AgentSidecar, err = StartProc(o.Name+"-sidecar-agent", o.LogDir, o.Bins.Sidecar, r.agentArgs(agentListen, dial), nil); err != nil {
		return fail(err)
	}
	if err := waitReady(ctx, r.AgentHealth, r.AgentSidecar); err != nil {
		return fail(fmt.Errorf("agent sidecar: %w", err))
	}
	if r.App, err = StartProc(o.Name+"-app-agent", o.LogDir, o.Bins.RelayApp, append([]string{"--role=agent", "--connect=" + agentListen}, appArgs...), stats(&r.agentStats)); err != nil {
		return fail(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		s, a := r.Stats()
		return s.Received > 0 && a.Received > 0, nil
	})
	if err != nil {
		s, a := r.Stats()
		return fail(fmt.Errorf("no heartbeats through the relay (server %+v, agent %+v): %w", s, a, err))
	}
	return r, nil
}

func (r *Relay) serverArgs(listen, upstream string) []string {
	o := r.Opts
	args := []string{"--role=server", "--mode=" + o.Mode.Sidecar, "--listen=" + listen, "--upstream=" + upstream,
		"--health-listen=" + r.ServerHealth, "--log-format=json"}
	if o.Mode.Sidecar != "insecure" {
		args = append(args, "--cert-dir="+o.Server.CertDir, "--server-name="+ServerName, "--reload-poll-interval=2s")
	}
	if o.Server.Bundle != "" {
		args = append(args, "--trust-bundle="+o.Server.Bundle)
	}
	if o.Server.Token != "" {
		args = append(args, "--token-file="+o.Server.Token)
	}
	return args
}

func (r *Relay) agentArgs(listen, server string) []string {
	o := r.Opts
	args := []string{"--role=agent", "--mode=" + o.Mode.Sidecar, "--listen=" + listen, "--server-addr=" + server,
		"--health-listen=" + r.AgentHealth, "--cluster=" + ClusterName, "--log-format=json", "--reconnect-max-delay=2s"}
	if o.Mode.Sidecar != "insecure" {
		args = append(args, "--server-name="+ServerName, "--trust-bundle="+o.Agent.Bundle, "--reload-poll-interval=2s")
	}
	if o.Agent.CertDir != "" {
		args = append(args, "--cert-dir="+o.Agent.CertDir)
	}
	if o.Agent.Token != "" {
		args = append(args, "--token-file="+o.Agent.Token)
	}
	return args
}

// waitReady waits for a sidecar's /readyz, or its exit.
func waitReady(ctx context.Context, addr string, p *Proc) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if done, err := p.Exited(); done {
			return false, fmt.Errorf("exited (%v); see %s", err, p.LogPath)
		}
		code, body, err := HTTPGet(ctx, "http://"+addr+"/readyz")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		return code == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("not ready (last /readyz: %s): %w", last, err)
	}
	return nil
}

// HTTPGet fetches url with a 2 s deadline and returns the status code and
// up to 4 MiB of the body.
func HTTPGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}

// Metric returns the sum of the samples of a Prometheus metric whose line
// starts with name (and matches every label given as `key="value"`) on the
// sidecar at addr.
func Metric(ctx context.Context, addr, name string, labels ...string) (float64, error) {
	code, body, err := HTTPGet(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics answered %d", code)
	}
	return SumMetric(body, name, labels...), nil
}

// SumMetric sums the samples of metric name in a Prometheus text
// exposition whose lines contain every one of labels (e.g. `result="success"`),
// wherever they stand among the sample's labels.
func SumMetric(body, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// Stats are the latest counters of the sample server and agent.
func (r *Relay) Stats() (server, agent relayapp.Stats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serverStats, r.agentStats
}

// Stop stops the processes, the agent first, and reports what did not
// stop cleanly.
func (r *Relay) Stop() error {
	var errs []error
	for _, p := range []*Proc{r.App, r.AgentSidecar, r.ServerSidecar, r.AppServer} {
		if p != nil {
			if err := p.Stop(25 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}
