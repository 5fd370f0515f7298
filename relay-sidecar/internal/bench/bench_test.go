package bench

import (
	"testing"
)

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
	for b.Loop() {
		if _, err := Throughput(s.Resumable, 1, chunk); err != nil {
			b.Fatal(err)
		}
	}
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
	for b.Loop() {
		if _, err := Throughput(d, 1, chunk); err != nil {
			b.Fatal(err)
		}
	}
}
