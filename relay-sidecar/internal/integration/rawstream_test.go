package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A raw byte stream through a tunnel, checked byte for byte on both ends:
// each end sends a deterministic pseudo-random stream and compares what it
// receives with the stream the other end sends. A client starts with
// rawMagic and an 8-byte seed; client to server uses the seed, server to
// client the seed plus one.
const rawMagic = "RAW1"

// rawEnd is one end of a raw stream.
type rawEnd struct {
	c    net.Conn
	out  *rand.ChaCha8
	in   *rand.ChaCha8
	rate int // bytes per 5ms tick; 0 means as fast as possible

	mu        sync.Mutex
	sent      int64
	recv      int64
	bad       int64 // offset of the first wrong byte, -1 if none
	eof       bool
	readErr   error
	sentSum   hash.Hash
	recvSum   hash.Hash
	stop      chan struct{}
	writeDone chan struct{}
	readDone  chan struct{}
}

func seeded(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

func newRawEnd(c net.Conn, outSeed, inSeed uint64, rate int) *rawEnd {
	return &rawEnd{c: c, out: seeded(outSeed), in: seeded(inSeed), rate: rate, bad: -1,
		sentSum: sha256.New(), recvSum: sha256.New(),
		stop: make(chan struct{}), writeDone: make(chan struct{}), readDone: make(chan struct{})}
}

func (r *rawEnd) start() {
	go r.write()
	go r.read()
}

func (r *rawEnd) write() {
	defer close(r.writeDone)
	buf := make([]byte, 16<<10)
	var tick *time.Ticker
	if r.rate > 0 {
		tick = time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
	}
	for {
		select {
		case <-r.stop:
			if cw, ok := r.c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			return
		default:
		}
		n := len(buf)
		if r.rate > 0 {
			n = min(r.rate, n)
		}
		_, _ = r.out.Read(buf[:n])
		w, err := r.c.Write(buf[:n])
		r.mu.Lock()
		r.sent += int64(w)
		r.sentSum.Write(buf[:w])
		r.mu.Unlock()
		if err != nil {
			return
		}
		if tick != nil {
			select {
			case <-tick.C:
			case <-r.stop:
			}
		}
	}
}

func (r *rawEnd) read() {
	defer close(r.readDone)
	buf := make([]byte, 32<<10)
	want := make([]byte, 32<<10)
	for {
		n, err := r.c.Read(buf)
		if n > 0 {
			_, _ = r.in.Read(want[:n])
			r.mu.Lock()
			if r.bad < 0 && !bytes.Equal(buf[:n], want[:n]) {
				i := 0
				for buf[i] == want[i] {
					i++
				}
				r.bad = r.recv + int64(i)
			}
			r.recv += int64(n)
			r.recvSum.Write(buf[:n])
			r.mu.Unlock()
		}
		if err != nil {
			r.mu.Lock()
			r.eof = errors.Is(err, io.EOF)
			if !r.eof {
				r.readErr = err
			}
			r.mu.Unlock()
			return
		}
	}
}

type rawStats struct {
	Sent, Recv, Bad  int64
	EOF              bool
	Err              error
	SentSum, RecvSum string
}

func (r *rawEnd) stats() rawStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return rawStats{Sent: r.sent, Recv: r.recv, Bad: r.bad, EOF: r.eof, Err: r.readErr,
		SentSum: fmt.Sprintf("%x", r.sentSum.Sum(nil)), RecvSum: fmt.Sprintf("%x", r.recvSum.Sum(nil))}
}

// rawUpstream serves the server end of raw streams beside the sample app.
type rawUpstream struct {
	mu   sync.Mutex
	ends map[uint64]*rawEnd
	rate int
}

func newRawUpstream() *rawUpstream { return &rawUpstream{ends: map[uint64]*rawEnd{}, rate: 4 << 10} }

func (u *rawUpstream) end(seed uint64) *rawEnd {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ends[seed]
}

// mux accepts on lis, keeps raw streams and hands the rest to the
// returned listener.
func (u *rawUpstream) mux(t *testing.T, lis net.Listener) net.Listener {
	cl := &chanListener{addr: lis.Addr(), c: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				cl.Close()
				return
			}
			go func() {
				br := bufio.NewReader(c)
				head, err := br.Peek(len(rawMagic))
				if err != nil {
					c.Close()
					return
				}
				pc := &bufConn{Conn: c, r: br}
				if string(head) != rawMagic {
					select {
					case cl.c <- pc:
					case <-cl.done:
						c.Close()
					}
					return
				}
				var hdr [len(rawMagic) + 8]byte
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					c.Close()
					return
				}
				seed := binary.BigEndian.Uint64(hdr[len(rawMagic):])
				u.mu.Lock()
				rate := u.rate
				u.mu.Unlock()
				e := newRawEnd(pc, seed+1, seed, rate)
				u.mu.Lock()
				u.ends[seed] = e
				u.mu.Unlock()
				e.start()
			}()
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return cl
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

type chanListener struct {
	addr net.Addr
	c    chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

var rawSeeds atomic.Uint64

// startRaw opens a raw stream through the agent sidecar and returns both
// ends once the server end exists.
func (e *env) startRaw(rate int) (client, server *rawEnd) {
	e.t.Helper()
	c := must[net.Conn](e.t)(net.Dial("tcp", e.agLocal))
	e.t.Cleanup(func() { c.Close() })
	seed := rawSeeds.Add(2) << 8
	var hdr [len(rawMagic) + 8]byte
	copy(hdr[:], rawMagic)
	binary.BigEndian.PutUint64(hdr[len(rawMagic):], seed)
	if _, err := c.Write(hdr[:]); err != nil {
		e.t.Fatal(err)
	}
	client = newRawEnd(c, seed, seed+1, rate)
	client.start()
	waitFor(e.t, "the raw stream to reach the upstream", 10*time.Second, func() bool { return e.raw.end(seed) != nil })
	return client, e.raw.end(seed)
}

// finishRaw stops both writers and checks that each end received exactly
// what the other sent, byte for byte and by checksum.
func finishRaw(t *testing.T, client, server *rawEnd) {
	t.Helper()
	close(client.stop)
	close(server.stop)
	for _, c := range []chan struct{}{client.writeDone, server.writeDone, client.readDone, server.readDone} {
		select {
		case <-c:
		case <-time.After(30 * time.Second):
			t.Fatalf("the raw stream did not finish: client %+v, server %+v", client.stats(), server.stats())
		}
	}
	cs, ss := client.stats(), server.stats()
	if cs.Bad >= 0 || ss.Bad >= 0 {
		t.Fatalf("corrupted bytes: client's first bad byte at %d, server's at %d", cs.Bad, ss.Bad)
	}
	if !cs.EOF || !ss.EOF || cs.Err != nil || ss.Err != nil {
		t.Fatalf("the raw stream did not end cleanly: client %+v, server %+v", cs, ss)
	}
	if cs.Sent != ss.Recv || ss.Sent != cs.Recv || cs.SentSum != ss.RecvSum || ss.SentSum != cs.RecvSum {
		t.Fatalf("bytes lost or duplicated: client sent %d (sha256 %s), server received %d (%s); server sent %d (%s), client received %d (%s)",
			cs.Sent, cs.SentSum, ss.Recv, ss.RecvSum, ss.Sent, ss.SentSum, cs.Recv, cs.RecvSum)
	}
	t.Logf("raw stream: %d bytes up (sha256 %s…), %d bytes down (sha256 %s…), identical on both ends",
		cs.Sent, cs.SentSum[:16], ss.Sent, ss.SentSum[:16])
}
