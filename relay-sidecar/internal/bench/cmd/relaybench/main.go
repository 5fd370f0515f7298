// Command relaybench measures the relay sidecar against direct TLS on
// loopback, in one run, and prints each result with its ratio to direct
// TLS: throughput of one stream and of 16, 1 KiB round-trip latency
// (p50/p99), the time to open a tunnel on a warm relay connection, and the
// server's memory per idle agent connection with --agents agents.
//
// The memory figure runs the real relay-sidecar binary (--sidecar) as a
// child process and reads its resident set size; the direct TLS figure runs
// this program again as a plain TLS server child and reads the same.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/bench"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
)

const childEnv = "RELAYBENCH_CHILD"

func main() {
	switch os.Getenv(childEnv) {
	case "tls-idle":
		// Serves until the parent kills it: it returns only on failure.
		fmt.Fprintln(os.Stderr, tlsIdleServer(os.Args[1], os.Args[2]))
		os.Exit(1)
	case "sink":
		if err := sinkChild(os.Args[1], os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	sidecar := flag.String("sidecar", "bin/relay-sidecar", "relay-sidecar binary for the memory measurement (empty: skip it)")
	agents := flag.Int("agents", 1000, "idle agent connections for the memory measurement")
	mib := flag.Int64("mib", 128, "MiB sent per throughput run (split across streams)")
	rounds := flag.Int("rounds", 3, "throughput runs per path (the median is shown)")
	procsMode := flag.Bool("procs", false, "instead: run direct mTLS, ghostunnel and relay-sidecar as separate processes on one sink, alternating")
	ghostunnel := flag.String("ghostunnel", "", "ghostunnel binary for -procs (empty: leave it out)")
	reps := flag.Int("reps", 5, "alternating repetitions for -procs")
	trips := flag.Int("trips", 3000, "1 KiB round trips per latency run for -procs")
	memOnly := flag.Bool("memory-only", false, "measure only the server memory per idle agent (with -agents), against direct TLS")
	compare := flag.String("compare", "", "another relay-sidecar binary (e.g. an older build) to add as a path for -procs, resume on")
	flag.Parse()
	if *procsMode {
		if err := runProcs(*sidecar, *ghostunnel, *compare, *reps, *mib, *trips); err != nil {
			fmt.Fprintf(os.Stderr, "relaybench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *memOnly {
		if err := runMemory(*sidecar, *agents); err != nil {
			fmt.Fprintf(os.Stderr, "relaybench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*sidecar, *agents, *mib, *rounds); err != nil {
		fmt.Fprintf(os.Stderr, "relaybench: %v\n", err)
		os.Exit(1)
	}
}

type row struct {
	name                  string
	direct, relay, resume float64 // resume 0: not measured
	unit                  string
	higherIsBetter        bool
}

func run(sidecar string, agents int, mib int64, rounds int) error {
	dir, err := os.MkdirTemp("", "relaybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := bench.NewSetup(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	paths := []bench.Dialer{s.Direct, s.Sidecar, s.Resumable}
	var rows []row

	for _, streams := range []int{1, 16} {
		r := row{name: fmt.Sprintf("throughput, %d stream(s)", streams), unit: "MiB/s", higherIsBetter: true}
		for i, d := range paths {
			var v []float64
			for range rounds {
				bps, err := bench.Throughput(d, streams, mib<<20/int64(streams))
				if err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
				v = append(v, bps/(1<<20))
			}
			set(&r, i, median(v))
		}
		rows = append(rows, r)
	}

	p50 := row{name: "1 KiB round trip p50", unit: "µs"}
	p99 := row{name: "1 KiB round trip p99", unit: "µs"}
	for i, d := range paths {
		a, b, err := bench.Latency(d, 5000, 1024)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		set(&p50, i, us(a))
		set(&p99, i, us(b))
	}
	rows = append(rows, p50, p99)

	open := row{name: "open + first byte (direct: TCP+TLS handshake; sidecar: tunnel on warm connection) p50", unit: "µs"}
	for i, d := range paths {
		v, err := bench.OpenTime(d, 300)
		if err != nil {
			return fmt.Errorf("open time: %w", err)
		}
		set(&open, i, us(v))
	}
	rows = append(rows, open)

	if sidecar != "" && agents > 0 {
		mem := row{name: fmt.Sprintf("server memory per idle agent connection, %d agents", agents), unit: "KiB"}
		d, err := directMemory(s, agents)
		if err != nil {
			return fmt.Errorf("direct TLS memory: %w", err)
		}
		r, err := sidecarMemory(sidecar, s.M, dir, agents)
		if err != nil {
			return fmt.Errorf("sidecar memory: %w", err)
		}
		mem.direct, mem.relay = d/1024, r.rss/1024
		rows = append(rows, mem)
	}

	fmt.Printf("relay-sidecar vs direct TLS on loopback (mtls, TLS 1.3, GOMAXPROCS=%d, %s)\n", runtime.GOMAXPROCS(0), runtime.Version())
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tunit\tdirect TLS\tsidecar resume off\tsidecar resume on\toff/direct\ton/direct\ton/off")
	for _, r := range rows {
		if r.resume == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t-\t%.2fx\t-\t-\n", r.name, r.unit, r.direct, r.relay, r.relay/r.direct)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.2fx\t%.2fx\t%.2fx\n", r.name, r.unit, r.direct, r.relay, r.resume,
			r.relay/r.direct, r.resume/r.direct, r.resume/r.relay)
	}
	tw.Flush()
	fmt.Println("(throughput: higher is better; latency, open time and memory: lower is better;")
	fmt.Println(" memory is the relay-sidecar binary with its default flags, resume on)")
	return nil
}

func runMemory(sidecar string, agents int) error {
	dir, err := os.MkdirTemp("", "relaybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	m, err := bench.NewMaterial(dir)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(m.CA.Cert)
	cli, err := tls.X509KeyPair(m.Client.CertPEM, m.Client.KeyPEM)
	if err != nil {
		return err
	}
	s := &bench.Setup{M: m, ClientTLS: &tls.Config{Certificates: []tls.Certificate{cli}, RootCAs: pool, ServerName: bench.ServerName,
		MinVersion: tls.VersionTLS13}}
	d, err := directMemory(s, agents)
	if err != nil {
		return fmt.Errorf("direct TLS memory: %w", err)
	}
	r, err := sidecarMemory(sidecar, m, dir, agents)
	if err != nil {
		return fmt.Errorf("sidecar memory: %w", err)
	}
	fmt.Printf("server memory per idle agent connection, %d agents: direct TLS %.1f KiB, relay-sidecar %.1f KiB (%.2fx)\n",
		agents, d/1024, r.rss/1024, r.rss/d)
	fmt.Printf("  of the relay-sidecar's, per agent: Go heap in use %.1f KiB, goroutine stacks %.1f KiB (from its /metrics)\n",
		r.heap/1024, r.stacks/1024)
	return nil
}

func runProcs(sidecar, ghostunnel, compare string, reps int, mib int64, trips int) error {
	dir, err := os.MkdirTemp("", "relaybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := bench.NewSetup(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Printf("relay-sidecar vs ghostunnel vs direct mTLS (TLS 1.3, GOMAXPROCS=%d, %s)\n", runtime.GOMAXPROCS(0), runtime.Version())
	return runProcBench(dir, sidecar, ghostunnel, compare, s, reps, mib, trips)
}

func set(r *row, i int, v float64) {
	switch i {
	case 0:
		r.direct = v
	case 1:
		r.relay = v
	default:
		r.resume = v
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// settledRSS waits for the child's RSS to stop growing, then returns it.
func settledRSS(pid int) (float64, error) {
	var last int64
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		v, err := bench.RSS(pid)
		if err != nil {
			return 0, err
		}
		if last != 0 && v-last < 64<<10 {
			return float64(v), nil
		}
		last = v
	}
	return float64(last), nil
}

// perAgent is the growth of the server sidecar's memory per idle agent:
// resident set size, and the Go heap in use and goroutine stacks its
// metrics report.
type perAgent struct{ rss, heap, stacks float64 }

// goMemory reads the Go heap in use and goroutine stack bytes from a
// sidecar's /metrics.
func goMemory(health string) (heap, stacks float64, err error) {
	resp, err := http.Get("http://" + health + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	var seen int
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		var x float64
		if _, err := fmt.Sscanf(v, "%g", &x); err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			heap, seen = x, seen+1
		case "go_memstats_stack_inuse_bytes":
			stacks, seen = x, seen+1
		}
	}
	if seen != 2 {
		return 0, 0, errors.New("the sidecar's /metrics has no go_memstats_heap_inuse_bytes or go_memstats_stack_inuse_bytes")
	}
	return heap, stacks, nil
}

func sidecarMemory(bin string, m *bench.Material, dir string, n int) (perAgent, error) {
	addr, err := freePort()
	if err != nil {
		return perAgent{}, err
	}
	health, err := freePort()
	if err != nil {
		return perAgent{}, err
	}
	src := bench.Sources(m.ServerDir)
	cmd := exec.Command(bin, "--role=server", "--mode=mtls", "--listen="+addr, "--health-listen="+health,
		"--upstream=127.0.0.1:9", "--cert-dir="+src.CertDir, "--trust-bundle="+src.BundleFile, "--log-level=error",
		// Thousands of handshakes at once on a busy machine may take longer
		// than the default; the figure is about idle connections.
		"--auth-timeout=2m")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return perAgent{}, fmt.Errorf("starting %s: %w", bin, err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	if err := waitHTTP("http://" + health + "/readyz"); err != nil {
		return perAgent{}, err
	}
	before, err := settledRSS(cmd.Process.Pid)
	if err != nil {
		return perAgent{}, err
	}
	heap0, stacks0, err := goMemory(health)
	if err != nil {
		return perAgent{}, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := creds.NewReloader(bench.Sources(m.AgentDir), creds.Expect{Role: creds.RoleAgent}, creds.Options{Log: quiet})
	if err != nil {
		return perAgent{}, err
	}
	met := metrics.New("agent", nil)
	ags := make([]*agent.Agent, 0, n)
	defer func() {
		for _, a := range ags {
			a.Close()
		}
	}()
	// In batches, each connected before the next starts, so that the run
	// stays bounded on a busy machine; it stops by itself at the deadline.
	deadline := time.Now().Add(5 * time.Minute)
	for len(ags) < n {
		start := len(ags)
		for range min(500, n-len(ags)) {
			a, err := agent.New(agent.Config{Mode: access.ModeMTLS, ServerAddr: addr, ServerName: bench.ServerName,
				Creds: r, Metrics: met, Log: quiet})
			if err != nil {
				return perAgent{}, err
			}
			ags = append(ags, a)
		}
		for _, a := range ags[start:] {
			for a.Ready() != nil {
				if time.Now().After(deadline) {
					return perAgent{}, fmt.Errorf("%d agents connected after 5 minutes; one says: %v", start, a.Ready())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	after, err := settledRSS(cmd.Process.Pid)
	if err != nil {
		return perAgent{}, err
	}
	heap1, stacks1, err := goMemory(health)
	if err != nil {
		return perAgent{}, err
	}
	k := float64(n)
	return perAgent{rss: (after - before) / k, heap: (heap1 - heap0) / k, stacks: (stacks1 - stacks0) / k}, nil
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out waiting for " + url)
}

// directMemory runs this program as a mutual TLS server child holding n
// idle connections, each with a goroutine blocked in Read, like a plain Go
// TLS server.
func directMemory(s *bench.Setup, n int) (float64, error) {
	addr, err := freePort()
	if err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, addr, s.M.ServerDir)
	cmd.Env = append(os.Environ(), childEnv+"=tls-idle")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return 0, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	before, err := settledRSS(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	conns := make([]*tls.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := tls.Dial("tcp", addr, s.ClientTLS)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	after, err := settledRSS(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	return (after - before) / float64(n), nil
}

// mutualTLS is the TLS 1.3 server config, requiring a client certificate,
// of the server material in dir (the child processes' direct-TLS baseline).
func mutualTLS(dir string) (*tls.Config, error) {
	src := bench.Sources(dir)
	pair, err := tls.LoadX509KeyPair(filepath.Join(src.CertDir, "tls.crt"), filepath.Join(src.CertDir, "tls.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(src.BundleFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

func tlsIdleServer(addr, dir string) error {
	cfg, err := mutualTLS(dir)
	if err != nil {
		return err
	}
	l, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
}
