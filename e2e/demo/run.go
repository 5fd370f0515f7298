package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"k8s.io/klog/v2"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/e2e/harness"
	"github.com/relaytls/relaytls/e2e/provider"
)

// view prints timestamped lines, one writer at a time.
type view struct {
	mu    sync.Mutex
	begin time.Time
}

func (v *view) printf(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Printf("[%6.1fs] %s\n", time.Since(v.begin).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, t *testing.T, c config) error {
	v := &view{begin: time.Now()}
	mode, err := harness.ModeByName(c.mode)
	if err != nil {
		return err
	}
	prov, err := provider.FromEnv()
	if err != nil {
		return err
	}
	fmt.Printf("relaytls demo — mode %d: %s\n", mode.Number, mode.Title)
	fmt.Printf("(Ctrl-C to stop%s; everything started is stopped and removed on exit)\n\n", durationNote(c.duration))

	dir := t.TempDir()
	logDir, err := prepareLogs(dir, c.logs)
	if err != nil {
		return err
	}
	bins, clusters, err := buildAndStart(ctx, t, v, prov, dir)
	if err != nil || ctx.Err() != nil {
		return err
	}
	in, err := harness.Install(ctx, harness.Options{
		T: t, Mode: mode, Mgmt: clusters[0], Workload: clusters[1], Bins: bins, Dir: dir, LogDir: logDir,
		RenewEvery: c.renewEvery, Progress: func(s string) { v.printf("  %s", s) },
	})
	if err != nil {
		return unlessInterrupted(ctx, err)
	}
	showEnrollment(ctx, v, in)

	relay, err := startRelay(ctx, t, v, harness.RelayOptions{
		Mode: mode, Bins: bins, LogDir: logDir, Server: in.Server, Agent: in.Agent, Interval: c.interval,
	})
	if err != nil {
		return unlessInterrupted(ctx, err)
	}
	relayUp := time.Now()
	watchCtx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	rotations := showRotations(watchCtx, v, in, relay, c.renewEvery)
	failure := watchRelay(ctx, watchCtx, v, relay, c.duration)
	cancelWatch()
	return summarize(v, in, relay, rotations, time.Since(relayUp), logDir, failure)
}

// unlessInterrupted is err, or nil once Ctrl-C (or -duration) ended ctx: a
// step cut short by the user is not a failure.
func unlessInterrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// prepareLogs makes the directory the components log to (logs under dir,
// or -logs) and sends the in-process libraries' logs there.
func prepareLogs(dir, keep string) (string, error) {
	logDir := filepath.Join(dir, "logs")
	if keep != "" {
		logDir = keep
	}
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return "", err
	}
	return logDir, quietLibraries(logDir)
}

// buildAndStart builds the binaries and starts the management and workload
// clusters. It returns early, with no error, once ctx is done.
func buildAndStart(ctx context.Context, t *testing.T, v *view, prov provider.Provider, dir string) (harness.Binaries, []provider.Cluster, error) {
	v.printf("building relay-sidecar, relayapp, relay-issuer and relayctl with go build …")
	bins, err := harness.Build(ctx, filepath.Join(dir, "bin"), func(s string) { v.printf("  %s", s) })
	if err != nil || ctx.Err() != nil {
		return bins, nil, err
	}
	v.printf("starting two %s clusters (management, workload): kube-apiserver, etcd, cert-manager controllers and webhook …", prov.Name())
	clusters := prov.Start(t, "management", "workload")
	v.printf("  clusters up")
	return bins, clusters, nil
}

// startRelay starts the sample app and server behind their sidecars; they
// are stopped when the demo ends.
func startRelay(ctx context.Context, t *testing.T, v *view, o harness.RelayOptions) (*harness.Relay, error) {
	relay, err := harness.StartRelay(ctx, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := relay.Stop(); err != nil {
			v.printf("stopping the relay: %v", err)
		}
	})
	v.printf("relay up: agent → agent sidecar ⇒ %s ⇒ server sidecar → management server (pids %d, %d, %d, %d)",
		map[string]string{"insecure": "h2c", "tls": "TLS 1.3 + channel-bound token proof", "mtls": "mutual TLS 1.3"}[o.Mode.Sidecar],
		relay.App.Pid(), relay.AgentSidecar.Pid(), relay.ServerSidecar.Pid(), relay.AppServer.Pid())
	return relay, nil
}

// rotationCounts counts the renewals seen per Certificate.
type rotationCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *rotationCounts) add(cert string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[cert]++
}

func (r *rotationCounts) get(cert string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[cert]
}

// showRotations prints each renewal of the installation's renewed
// certificates, with the stream's state at that moment, until ctx ends.
func showRotations(ctx context.Context, v *view, in *harness.Installation, relay *harness.Relay, renewEvery time.Duration) *rotationCounts {
	rotations := &rotationCounts{n: map[string]int{}}
	harness.WatchRotations(ctx, in.Renewed, func(r harness.Rotation) {
		s, a := relay.Stats()
		rotations.add(r.Certificate)
		v.printf("↻ rotated %s %s (Secret %s): serial %s → %s, valid until %s — stream %s",
			r.Cluster.Name(), r.Certificate, r.Secret, harness.Serial(r.Old.SerialNumber), harness.Serial(r.New.SerialNumber),
			r.New.NotAfter.Local().Format("15:04:05"), streamState(s.Gaps+a.Gaps, s.Breaks+a.Breaks, a.Streams))
	})
	if len(in.Renewed) == 0 {
		v.printf("(mode %d: cert-manager renews nothing in this mode, so there are no rotations to show)", in.Mode.Number)
	} else {
		names := make([]string, len(in.Renewed))
		for i, r := range in.Renewed {
			names[i] = r.Cluster.Name() + "/" + r.Certificate
		}
		v.printf("cert-manager renews %s about every %s", strings.Join(names, ", "), renewEvery)
	}
	return rotations
}

// watchRelay prints the heartbeat counts every 5s until Ctrl-C (ctx), the
// -duration deadline, or a relay process exiting, which is the failure it
// returns. watchCtx ends the process watchers.
func watchRelay(ctx, watchCtx context.Context, v *view, relay *harness.Relay, duration time.Duration) error {
	var deadline <-chan time.Time
	if duration > 0 {
		tm := time.NewTimer(duration)
		defer tm.Stop()
		deadline = tm.C
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	exited := make(chan *harness.Proc, 4)
	for _, p := range []*harness.Proc{relay.AppServer, relay.ServerSidecar, relay.AgentSidecar, relay.App} {
		go func() {
			select {
			case <-p.Done():
				exited <- p
			case <-watchCtx.Done():
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			fmt.Println()
			v.printf("interrupted")
			return nil
		case <-deadline:
			return nil
		case p := <-exited:
			return fmt.Errorf("%s exited unexpectedly; its log: %s", p.Name, p.LogPath)
		case <-tick.C:
			s, a := relay.Stats()
			hs, _ := harness.Metric(ctx, relay.ServerHealth, "relay_sidecar_handshakes_total")
			v.printf("♥ heartbeats: agent sent %d / received %d, server sent %d / received %d; gaps %d, breaks %d; %s; server handshakes %v",
				a.Sent, a.Received, s.Sent, s.Received, s.Gaps+a.Gaps, s.Breaks+a.Breaks, streamState(s.Gaps+a.Gaps, s.Breaks+a.Breaks, a.Streams), hs)
		}
	}
}

// summarize prints the renewals and heartbeat totals and adds a broken
// stream to failure.
func summarize(v *view, in *harness.Installation, relay *harness.Relay, rotations *rotationCounts, up time.Duration, logDir string, failure error) error {
	s, a := relay.Stats()
	fmt.Println()
	v.printf("summary after %s of relay:", up.Round(time.Second))
	for _, r := range in.Renewed {
		v.printf("  %s/%s renewed %d times", r.Cluster.Name(), r.Certificate, rotations.get(r.Certificate))
	}
	v.printf("  heartbeats: agent received %d, server received %d; gaps %d; breaks %d; streams opened %d",
		a.Received, s.Received, s.Gaps+a.Gaps, s.Breaks+a.Breaks, a.Streams)
	broke := s.Gaps+a.Gaps+s.Breaks+a.Breaks > 0 || a.Streams != 1
	if broke {
		failure = errors.Join(failure, fmt.Errorf("the stream broke: gaps %d, breaks %d, streams %d (logs in %s)", s.Gaps+a.Gaps, s.Breaks+a.Breaks, a.Streams, logDir))
	} else {
		v.printf("  the stream never broke ✓")
	}
	v.printf("stopping every process and removing temporary files …")
	return failure
}

func streamState(gaps, breaks, streams int64) string {
	if gaps == 0 && breaks == 0 && streams <= 1 {
		return "unbroken"
	}
	return fmt.Sprintf("BROKEN (gaps %d, breaks %d, streams %d)", gaps, breaks, streams)
}

func durationNote(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf(", or it stops by itself %s after the relay is up", d)
}

// showEnrollment prints the workload's client certificate (modes 4-6) or
// the server certificate the agent will see: serials and issuers only.
func showEnrollment(ctx context.Context, v *view, in *harness.Installation) {
	show := func(c provider.Cluster, secret, what string) {
		s, err := harness.GetSecret(ctx, c, secret)
		if err != nil {
			return
		}
		leaf, err := pki.DecodeX509CertificateBytes(s.Data["tls.crt"])
		if err != nil {
			return
		}
		v.printf("%s: %s serial %s, subject %v, issued by %q, valid until %s",
			what, secret, harness.Serial(leaf.SerialNumber), leaf.DNSNames, leaf.Issuer.CommonName, leaf.NotAfter.Local().Format("15:04:05"))
	}
	switch in.Mode.Number {
	case 4, 5:
		show(in.Workload, relayv1.ClientSecretName, "enrolled "+harness.ClusterName+" through the issuance endpoint (token proof, never the token)")
	case 6:
		show(in.Workload, relayv1.BYOClientSecretName, "client certificate from the user's PKI")
	}
	switch in.Mode.Number {
	case 2, 4, 5:
		show(in.Mgmt, relayv1.ServerSecretName, "server certificate")
	case 3, 6:
		show(in.Mgmt, relayv1.CustomServerSecretName, "server certificate (bring your own)")
	}
}

// quietLibraries sends klog (cert-manager's webhook and client-go) to a log
// file instead of the terminal.
func quietLibraries(logDir string) error {
	f, err := os.OpenFile(filepath.Join(logDir, "in-process.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fs := flagSet()
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(f)
	return nil
}
