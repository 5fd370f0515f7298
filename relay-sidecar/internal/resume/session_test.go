package resume

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc/mem"
	"time"

	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
)

// memStream is one end of an in-memory stream of encoded frames that a
// test can cut.
type memStream struct {
	in, out chan []byte
	cut     chan struct{}
}

var errCut = errors.New("stream cut")

func memPair() (a, b *memStream, cut func()) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	c := make(chan struct{})
	var once sync.Once
	return &memStream{in: ba, out: ab, cut: c}, &memStream{in: ab, out: ba, cut: c}, func() { once.Do(func() { close(c) }) }
}

// SendMsg and RecvMsg go through the gRPC codec, as on a real stream.
func (m *memStream) SendMsg(v any) error {
	bs, err := frame.Codec{}.Marshal(v)
	if err != nil {
		return err
	}
	b := bs.Materialize()
	bs.Free()
	select {
	case m.out <- b:
		return nil
	case <-m.cut:
		return errCut
	}
}

func (m *memStream) RecvMsg(v any) error {
	select {
	case b := <-m.in:
		return frame.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, v)
	case <-m.cut:
		return errCut
	}
}

// tcpPair returns two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// feed writes b in random pieces, then half-closes; got collects what the
// other way brings until EOF.
func feed(c net.Conn, b []byte) {
	for len(b) > 0 {
		n := min(len(b), 1+rand.IntN(20000))
		if _, err := c.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
	}
	_ = c.(*net.TCPConn).CloseWrite()
}

// Both directions arrive whole and in order across many cuts, each at a
// random moment, with a small buffer so that backpressure and acks are
// exercised.
func TestCutsAndResumes(t *testing.T) {
	client, agentSide := tcpPair(t)
	serverSide, upstream := tcpPair(t)
	up, down := pattern(1, 3<<20), pattern(2, 2<<20)
	a := New(agentSide, Options{Limit: 64 << 10})
	b := New(serverSide, Options{Limit: 64 << 10})
	a.Start()
	b.Start()
	go feed(client, up)
	go feed(upstream, down)
	gotUp, gotDown := make(chan []byte, 1), make(chan []byte, 1)
	go func() { x, _ := io.ReadAll(upstream); gotUp <- x }()
	go func() { x, _ := io.ReadAll(client); gotDown <- x }()

	var cuts int
	for attempt := 0; attempt < 1000; attempt++ {
		sa, sb, cut := memPair()
		genA, dA := a.Takeover()
		genB, dB := b.Takeover()
		if err := a.CheckPeerOffset(dB); err != nil {
			t.Fatal(err)
		}
		if err := b.CheckPeerOffset(dA); err != nil {
			t.Fatal(err)
		}
		errA, errB := make(chan error, 1), make(chan error, 1)
		go func() { errA <- a.Attach(sa, genA, dB, nil, nil, false, cut) }()
		go func() { errB <- b.Attach(sb, genB, dA, nil, nil, false, cut) }()
		if cuts < 30 {
			select {
			case <-time.After(time.Duration(rand.IntN(3000)) * time.Microsecond):
				cut()
				cuts++
			case <-a.Done():
			}
		}
		ea, eb := <-errA, <-errB
		if ea == nil && eb == nil {
			break
		}
		select {
		case <-a.Done():
			if a.Err() != nil {
				t.Fatalf("agent side aborted: %v", a.Err())
			}
		default:
		}
	}
	for name, c := range map[string]struct {
		got  chan []byte
		want []byte
	}{"up": {gotUp, up}, "down": {gotDown, down}} {
		select {
		case g := <-c.got:
			if !bytes.Equal(g, c.want) {
				t.Fatalf("%s: got %d bytes, want %d, equal prefix %v", name, len(g), len(c.want), bytes.HasPrefix(c.want, g))
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: not finished", name)
		}
	}
	if cuts == 0 {
		t.Fatal("no cut happened")
	}
	t.Logf("%d cuts", cuts)
}

func TestOffsetChecks(t *testing.T) {
	_, local := tcpPair(t)
	s := New(local, Options{})
	if err := s.CheckPeerOffset(1); err == nil {
		t.Fatal("offset 1 of an empty stream accepted")
	}
	if err := s.CheckPeerOffset(0); err != nil {
		t.Fatal(err)
	}
}
