package bench

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// syscalls returns the read and write system calls this process made so
// far (Linux /proc/self/io), or -1.
func syscalls() float64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return -1
	}
	defer f.Close()
	var n float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		if k == "syscr" || k == "syscw" {
			var x float64
			for _, c := range v {
				x = x*10 + float64(c-'0')
			}
			n += x
		}
	}
	return n
}

// reportSyscalls reports the read and write system calls per MiB carried
// since before (all paths of the process: client, sidecars, upstream).
func reportSyscalls(b *testing.B, before float64, bytesPerOp int64) {
	if before < 0 {
		return
	}
	mib := float64(bytesPerOp) * float64(b.N) / (1 << 20)
	b.ReportMetric((syscalls()-before)/mib, "syscalls/MiB")
}

// TestMeasurementsRun keeps the benchmark code working: each measurement
// runs on both paths with small sizes and returns a result.
func TestMeasurementsRun(t *testing.T) {
	s, err := NewSetup(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for name, d := range map[string]Dialer{"direct": s.Direct, "sidecar": s.Sidecar, "resumable": s.Resumable} {
		t.Run(name, func(t *testing.T) {
			if bps, err := Throughput(d, 4, 1<<20); err != nil || bps <= 0 {
				t.Fatalf("throughput: %v, %v", bps, err)
			}
			if p50, p99, err := Latency(d, 50, 1024); err != nil || p50 <= 0 || p99 < p50 {
				t.Fatalf("latency: %v %v %v", p50, p99, err)
			}
			if o, err := OpenTime(d, 5); err != nil || o <= 0 {
				t.Fatalf("open: %v %v", o, err)
			}
		})
	}
}

func BenchmarkThroughputDirect(b *testing.B)  { benchThroughput(b, false) }
func BenchmarkThroughputSidecar(b *testing.B) { benchThroughput(b, true) }

// BenchmarkThroughputResumable is the default path (resume on), for
// profiling: go test -bench Resumable -cpuprofile cpu.out.
func BenchmarkThroughputResumable(b *testing.B) {
	s, err := NewSetup(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const chunk = 4 << 20
	b.SetBytes(chunk)
	before := syscalls()
	for b.Loop() {
		if _, err := Throughput(s.Resumable, 1, chunk); err != nil {
			b.Fatal(err)
		}
	}
	reportSyscalls(b, before, chunk)
}

// BenchmarkThroughputResumable16 is 16 streams at once on the default path
// (resume on), all on the agent's one connection.
func BenchmarkThroughputResumable16(b *testing.B) {
	s, err := NewSetup(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const chunk = 1 << 20
	b.SetBytes(16 * chunk)
	before := syscalls()
	for b.Loop() {
		if _, err := Throughput(s.Resumable, 16, chunk); err != nil {
			b.Fatal(err)
		}
	}
	reportSyscalls(b, before, 16*chunk)
}

func benchThroughput(b *testing.B, sidecar bool) {
	s, err := NewSetup(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	d := s.Direct
	if sidecar {
		d = s.Sidecar
	}
	const chunk = 4 << 20
	b.SetBytes(chunk)
	before := syscalls()
	for b.Loop() {
		if _, err := Throughput(d, 1, chunk); err != nil {
			b.Fatal(err)
		}
	}
	reportSyscalls(b, before, chunk)
}
