package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/relaytls/relaytls/relay-sidecar/internal/bench"
)

// The process bench: every path is its own processes in front of one sink
// process, and the paths take turns, repetition by repetition:
//
//	direct      bench client --mTLS--> sink
//	ghostunnel  bench client --> ghostunnel client --mTLS--> ghostunnel server --> sink
//	relay       bench client --> relay-sidecar agent --mTLS/gRPC--> relay-sidecar server --> sink
//
// The sink runs bench.ServeUpstream on a plain and a mutual TLS listener.

type procPath struct {
	name string
	dial bench.Dialer
}

// sinkChild is the sink process: plain on os.Args[1], mutual TLS on
// os.Args[2] with the server material in os.Args[3].
func sinkChild(plain, tlsAddr, dir string) error {
	cfg, err := mutualTLS(dir)
	if err != nil {
		return err
	}
	cfg.SessionTicketsDisabled = true
	pl, err := net.Listen("tcp", plain)
	if err != nil {
		return err
	}
	tl, err := tls.Listen("tcp", tlsAddr, cfg)
	if err != nil {
		return err
	}
	accept := func(l net.Listener) error {
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			go bench.ServeUpstream(c)
		}
	}
	go accept(tl)
	return accept(pl)
}

type procs struct {
	cmds []*exec.Cmd
}

func (p *procs) start(name string, env []string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p.cmds = append(p.cmds, cmd)
	return nil
}

func (p *procs) stop() {
	for _, c := range slices.Backward(p.cmds) {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.cmds {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

func waitDial(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePorts returns n distinct free loopback addresses: all are held open
// until the last is found, so none is handed out twice.
func freePorts(n int) ([]string, error) {
	out := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// startProcs starts the sink, the ghostunnel pair (when ghostunnel is set)
// and the relay-sidecar pairs (resume on and off), and returns the paths.
func startProcs(p *procs, dir, sidecar, ghostunnel, compare string, s *bench.Setup) ([]procPath, error) {
	ports, err := freePorts(16)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	m := s.M
	sinkPlain, sinkTLS := ports[0], ports[1]
	if err := p.start(self, []string{childEnv + "=sink"}, sinkPlain, sinkTLS, m.ServerDir); err != nil {
		return nil, err
	}
	if err := waitDial(sinkTLS); err != nil {
		return nil, err
	}
	paths := []procPath{{"direct mTLS", func() (net.Conn, error) {
		c, err := tls.Dial("tcp", sinkTLS, s.ClientTLS)
		if err != nil {
			return nil, err
		}
		return c, c.Handshake()
	}}}

	if ghostunnel != "" {
		srv, cli := bench.Sources(m.ServerDir), bench.Sources(m.AgentDir)
		gtServer, gtLocal := ports[2], ports[3]
		if err := p.start(ghostunnel, nil, "server", "--listen="+gtServer, "--target="+sinkPlain,
			"--cert="+filepath.Join(srv.CertDir, "tls.crt"), "--key="+filepath.Join(srv.CertDir, "tls.key"),
			"--cacert="+srv.BundleFile, "--allow-dns="+bench.Cluster, "--quiet=all"); err != nil {
			return nil, err
		}
		if err := p.start(ghostunnel, nil, "client", "--listen="+gtLocal, "--target="+gtServer,
			"--cert="+filepath.Join(cli.CertDir, "tls.crt"), "--key="+filepath.Join(cli.CertDir, "tls.key"),
			"--cacert="+cli.BundleFile, "--override-server-name="+bench.ServerName, "--quiet=all"); err != nil {
			return nil, err
		}
		if err := waitDial(gtLocal); err != nil {
			return nil, err
		}
		paths = append(paths, procPath{"ghostunnel", func() (net.Conn, error) { return net.Dial("tcp", gtLocal) }})
	}

	type pair struct {
		bin, name string
		resume    bool
	}
	pairs := []pair{{sidecar, "relay-sidecar", true}, {sidecar, "relay-sidecar resume off", false}}
	if compare != "" {
		pairs = append(pairs, pair{compare, "compared relay-sidecar", true})
	}
	for i, pr := range pairs {
		sidecar, resume := pr.bin, pr.resume
		srvAddr, srvHealth, agLocal, agHealth := ports[4+4*i], ports[5+4*i], ports[6+4*i], ports[7+4*i]
		srv, cli := bench.Sources(m.ServerDir), bench.Sources(m.AgentDir)
		flag := fmt.Sprintf("--resume=%t", resume)
		if err := p.start(sidecar, nil, "--role=server", "--mode=mtls", "--listen="+srvAddr, "--health-listen="+srvHealth,
			"--upstream="+sinkPlain, "--cert-dir="+srv.CertDir, "--trust-bundle="+srv.BundleFile, "--log-level=error", flag); err != nil {
			return nil, err
		}
		if err := p.start(sidecar, nil, "--role=agent", "--mode=mtls", "--listen="+agLocal, "--health-listen="+agHealth,
			"--server-addr="+srvAddr, "--server-name="+bench.ServerName, "--cert-dir="+cli.CertDir, "--trust-bundle="+cli.BundleFile,
			"--log-level=error", flag); err != nil {
			return nil, err
		}
		if err := waitHTTP("http://" + agHealth + "/readyz"); err != nil {
			return nil, err
		}
		paths = append(paths, procPath{pr.name, func() (net.Conn, error) { return net.Dial("tcp", agLocal) }})
	}
	return paths, nil
}

type measure struct {
	name           string
	unit           string
	higherIsBetter bool
}

var procMeasures = []measure{
	{"throughput, 1 stream", "MiB/s", true},
	{"throughput, 16 streams", "MiB/s", true},
	{"1 KiB round trip p50", "µs", false},
	{"1 KiB round trip p99", "µs", false},
	{"new connection or tunnel + first byte", "per s", true},
}

// runProcBench alternates the paths for reps repetitions and prints the
// medians with their spread and the ratios.
func runProcBench(dir, sidecar, ghostunnel, compare string, s *bench.Setup, reps int, mib int64, trips int) error {
	p := &procs{}
	defer p.stop()
	paths, err := startProcs(p, dir, sidecar, ghostunnel, compare, s)
	if err != nil {
		return err
	}
	// results[path][measure] = one value per repetition
	results := make([][][]float64, len(paths))
	for i := range results {
		results[i] = make([][]float64, len(procMeasures))
	}
	for rep := range reps {
		// Rotate the order so that no path always runs first.
		for k := range paths {
			i := (k + rep) % len(paths)
			d := paths[i].dial
			r := results[i]
			for j, streams := range []int{1, 16} {
				bps, err := bench.Throughput(d, streams, mib<<20/int64(streams))
				if err != nil {
					return fmt.Errorf("%s, %d streams: %w", paths[i].name, streams, err)
				}
				r[j] = append(r[j], bps/(1<<20))
			}
			a, b, err := bench.Latency(d, trips, 1024)
			if err != nil {
				return fmt.Errorf("%s, latency: %w", paths[i].name, err)
			}
			r[2], r[3] = append(r[2], us(a)), append(r[3], us(b))
			o, err := bench.OpenTime(d, 200)
			if err != nil {
				return fmt.Errorf("%s, open: %w", paths[i].name, err)
			}
			r[4] = append(r[4], 1e6/us(o))
		}
		fmt.Fprintf(os.Stderr, "repetition %d of %d done\n", rep+1, reps)
	}

	fmt.Printf("\nseparate processes on one sink, %d alternating repetitions: median [min-max]\n", reps)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	head := []string{"measure", "unit"}
	for _, pa := range paths {
		head = append(head, pa.name)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	med := make([][]float64, len(paths))
	for i := range paths {
		med[i] = make([]float64, len(procMeasures))
		for j := range procMeasures {
			med[i][j] = median(results[i][j])
		}
	}
	for j, ms := range procMeasures {
		cells := []string{ms.name, ms.unit}
		for i := range paths {
			v := results[i][j]
			cells = append(cells, fmt.Sprintf("%.1f [%.1f-%.1f]", med[i][j], slices.Min(v), slices.Max(v)))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()

	idx := func(name string) int {
		return slices.IndexFunc(paths, func(pa procPath) bool { return pa.name == name })
	}
	relay, off, gt, direct, cmp := idx("relay-sidecar"), idx("relay-sidecar resume off"), idx("ghostunnel"), idx("direct mTLS"),
		idx("compared relay-sidecar")
	fmt.Println("\nratios (how many times the baseline; >1 is better for every row):")
	tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	cols := []struct {
		name string
		a, b int
	}{{"relay/ghostunnel", relay, gt}, {"relay/direct", relay, direct}, {"off/ghostunnel", off, gt}, {"on/off", relay, off}, {"relay/compared", relay, cmp}}
	head = []string{"measure"}
	for _, c := range cols {
		if c.a >= 0 && c.b >= 0 {
			head = append(head, c.name)
		}
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for j, ms := range procMeasures {
		cells := []string{ms.name}
		for _, c := range cols {
			if c.a < 0 || c.b < 0 {
				continue
			}
			r := med[c.a][j] / med[c.b][j]
			if !ms.higherIsBetter {
				r = med[c.b][j] / med[c.a][j]
			}
			cells = append(cells, fmt.Sprintf("%.2fx", r))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	fmt.Println("(latency ratios are baseline/relay, so that >1 means the relay is faster)")
	return nil
}
