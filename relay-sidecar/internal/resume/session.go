// Package resume is the byte-stream engine of resumable tunnels, shared by
// both roles: a Session owns one local connection (the agent's client, or
// the server's upstream) and carries its bytes over a sequence of gRPC
// streams. Bytes read from the local connection are numbered by offset and
// kept in a bounded buffer until the peer acknowledges them; when the
// buffer is full the local connection is not read (backpressure). Bytes
// from the peer are delivered once each, in order: duplicates after a
// resume are dropped, a gap is a protocol error.
package resume

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/mem"

	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
)

// Stream is the part of a gRPC stream a Session uses.
type Stream interface {
	SendMsg(m any) error
	RecvMsg(m any) error
}

// Options tune a Session.
type Options struct {
	// Limit is the most unacknowledged bytes kept (default 1 MiB).
	Limit int
	// AckDelay is how long delivered bytes may wait for an acknowledgement
	// when fewer than a quarter of the limit are pending (default 10ms).
	AckDelay time.Duration
	// OnBuffered, if set, is told of every change of the buffered bytes.
	OnBuffered func(delta int)
	// Budget, if set, is a cap shared with other sessions: reading the
	// local connection waits while it is spent.
	Budget *Budget
	// OnOpen, if set, takes the server's Open frame (with the tunnel ID)
	// arriving on the first stream: the agent sends its first bytes without
	// waiting for it. Without OnOpen an Open frame is a protocol error.
	OnOpen func(id []byte)
}

// DefaultLimit is the default unacknowledged-bytes limit per direction.
const DefaultLimit = 1 << 20

// Errors of an attachment.
var (
	// ErrDetached: the stream was replaced by another one or stopped.
	ErrDetached = errors.New("the tunnel moved to another stream")
	// ErrEndOfStream: the peer ended the stream before the tunnel was done.
	ErrEndOfStream = errors.New("the relay stream ended before the tunnel was done")
)

// Aborted is why a session was given up.
type Aborted struct {
	Reason string
	// ByPeer is true when the peer sent the abort.
	ByPeer bool
}

func (a *Aborted) Error() string { return a.Reason }

// chunk is bytes read from local at offset off: b is the unacknowledged
// part of buf, a pooled buffer the session holds one reference to.
type chunk struct {
	off uint64
	b   []byte
	buf mem.Buffer
}

// data returns a reference to the chunk's bytes from offset from on, for
// a frame to send.
func (c *chunk) data(from uint64) mem.Buffer {
	all := c.buf.Len()
	return c.buf.Slice(all-len(c.b)+int(from-c.off), all)
}

// Session is one resumable tunnel's byte stream state.
type Session struct {
	local net.Conn
	o     Options
	every uint64

	mu        sync.Mutex
	chunks    []chunk
	base      uint64 // first unacknowledged data offset
	end       uint64 // offset after the last byte read from local
	eof       bool   // local side finished; a Close at end follows
	eofReason string
	closeAckd bool   // the peer acknowledged our Close
	delivered uint64 // peer bytes delivered to local, +1 after its Close
	peerDone  bool
	ackSent   uint64
	ackArmed  bool
	ackFired  bool
	notify    chan struct{} // current attachment's sender wake-up
	space     chan struct{}
	done      chan struct{}
	err       error
	gen       atomic.Uint64

	inMu sync.Mutex // held while delivering to local
}

// New makes a session for local; Start begins reading it.
func New(local net.Conn, o Options) *Session {
	if o.Limit <= 0 {
		o.Limit = DefaultLimit
	}
	if o.AckDelay <= 0 {
		o.AckDelay = 10 * time.Millisecond
	}
	every := uint64(min(o.Limit/4, 64<<10))
	return &Session{local: local, o: o, every: max(every, 1),
		space: make(chan struct{}, 1), done: make(chan struct{}), notify: make(chan struct{}, 1)}
}

// Start reads the local connection until it ends.
func (s *Session) Start() { go s.readLocal() }

// Done is closed when the session finished or was aborted.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil for a finished session, an *Aborted after an abort.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Buffered is the number of unacknowledged bytes held.
func (s *Session) Buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.end - s.base)
}

// wake signals the current sender; s.mu is held.
func (s *Session) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Session) readLocal() {
	var rd frame.Reader
	defer func() { s.drain() }()
	for {
		s.mu.Lock()
		for int(s.end-s.base) >= s.o.Limit {
			s.mu.Unlock()
			select {
			case <-s.space:
			case <-s.done:
				return
			}
			s.mu.Lock()
		}
		free := s.o.Limit - int(s.end-s.base)
		s.mu.Unlock()
		// Below its reserve a session reads whatever the shared budget
		// says, so that tunnels that hold the budget cannot starve it.
		if s.o.Budget != nil && s.o.Limit-free >= BudgetReserve {
			if ch := s.o.Budget.wait(); ch != nil {
				select {
				case <-ch:
				case <-s.done:
					return
				}
				continue // an acknowledgement may have put it below its reserve
			}
		}
		// The pooled buffer read into is kept, by reference, until the
		// peer acknowledges it (a small read is copied into a small one).
		c, err := rd.Read(s.local, free)
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			if c != nil {
				c.Free()
			}
			return
		}
		if c != nil {
			n := c.Len()
			s.chunks = append(s.chunks, chunk{off: s.end, b: c.ReadOnlyData(), buf: c})
			s.end += uint64(n)
			s.account(n)
			s.wake()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.mu.Unlock()
				s.Abort("reading the local connection: "+err.Error(), false)
				return
			}
			s.eof = true
			s.wake()
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// drain runs when reading ends: after an abort, what the local side still
// sends is read and dropped for a moment, so that the close is a FIN and
// not a reset; then the connection is closed.
func (s *Session) drain() {
	<-s.done
	if s.Err() != nil {
		var buf [4 << 10]byte
		for {
			if _, err := s.local.Read(buf[:]); err != nil {
				break
			}
		}
	}
	_ = s.local.Close()
}

// account tells the observers and the shared budget of a change of the
// buffered bytes.
func (s *Session) account(delta int) {
	if delta == 0 {
		return
	}
	if s.o.OnBuffered != nil {
		s.o.OnBuffered(delta)
	}
	if s.o.Budget != nil {
		s.o.Budget.add(delta)
	}
}

// ack releases the bytes the peer acknowledged; s.mu is held.
func (s *Session) ack(a uint64) error {
	if s.eof && a == s.end+1 {
		s.closeAckd = true
		a = s.end
	}
	if a > s.end {
		return fmt.Errorf("the peer acknowledged offset %d, but only %d bytes were sent", a, s.end)
	}
	if a <= s.base {
		return nil
	}
	released := int(a - s.base)
	s.base = a
	for len(s.chunks) > 0 {
		c := &s.chunks[0]
		cend := c.off + uint64(len(c.b))
		if cend <= a {
			c.buf.Free()
			s.chunks[0] = chunk{}
			s.chunks = s.chunks[1:]
			continue
		}
		if c.off < a {
			c.b = c.b[a-c.off:]
			c.off = a
		}
		break
	}
	if len(s.chunks) == 0 {
		s.chunks = nil
	}
	s.account(-released)
	select {
	case s.space <- struct{}{}:
	default:
	}
	return nil
}

// CheckPeerOffset reports whether off is an offset the peer may resume
// from: not beyond what was sent, not before what it acknowledged.
func (s *Session) CheckPeerOffset(off uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	top := s.end
	if s.eof {
		top++
	}
	switch {
	case off > top:
		return fmt.Errorf("offset %d was never sent (sent %d bytes)", off, s.end)
	case off < s.base:
		return fmt.Errorf("offset %d was already acknowledged (at %d)", off, s.base)
	}
	return nil
}

// Takeover makes a new attachment generation current: the previous
// attachment stops delivering, and the offset delivered so far is
// returned, for the Resume frame.
func (s *Session) Takeover() (gen uint64, delivered uint64) {
	gen = s.gen.Add(1)
	s.mu.Lock()
	old := s.notify
	s.notify = make(chan struct{}, 1)
	s.mu.Unlock()
	select { // the old sender sees the new generation
	case old <- struct{}{}:
	default:
	}
	s.inMu.Lock()
	defer s.inMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return gen, s.delivered
}

// Delivered is the count of peer bytes delivered so far.
func (s *Session) Delivered() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivered
}

// Abort ends the session: the local connection is closed and, if the
// abort is ours, the current stream tells the peer why.
func (s *Session) Abort(reason string, byPeer bool) {
	s.mu.Lock()
	if s.err != nil || s.isDone() {
		s.mu.Unlock()
		return
	}
	s.err = &Aborted{Reason: reason, ByPeer: byPeer}
	buffered := int(s.end - s.base)
	for i := range s.chunks {
		s.chunks[i].buf.Free()
	}
	s.chunks = nil
	s.base = s.end
	close(s.done)
	s.mu.Unlock()
	s.account(-buffered)
	// The peer of the local connection sees a clean end (FIN); drain
	// closes it once reading stops, at the latest after a moment.
	closeWrite(s.local)
	_ = s.local.SetReadDeadline(time.Now().Add(2 * time.Second))
}

func (s *Session) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// complete: both directions closed and acknowledged; s.mu is held.
func (s *Session) complete() bool {
	return s.eof && s.closeAckd && s.peerDone && s.ackSent >= s.delivered
}

func (s *Session) finish() {
	if s.isDone() {
		return
	}
	close(s.done)
}

// Attach carries the session over st until the tunnel is done (nil), the
// session is aborted (*Aborted), the attachment ends early (ErrDetached:
// replaced is closed when a newer stream or connection takes the tunnel
// over, expired when the connection under st expires; a nil channel never
// closes), or the stream fails (its error). from is the offset the peer has
// delivered; gen comes from Takeover. With waitEOF (the agent), a finished
// tunnel also waits for the server to end the stream. cancel, if set, ends
// st; it is called when the attachment stops for any other reason than the
// tunnel's end, so that a send blocked on flow control returns.
func (s *Session) Attach(st Stream, gen, from uint64, replaced, expired <-chan struct{}, waitEOF bool, cancel func()) error {
	s.mu.Lock()
	if err := s.ack(from); err != nil {
		s.mu.Unlock()
		return err
	}
	s.ackArmed, s.ackFired = false, false
	notify := s.notify
	s.mu.Unlock()

	sendErr := make(chan error, 1)
	recvErr := make(chan error, 1)
	quit := make(chan struct{})
	go func() { sendErr <- s.send(st, gen, from, notify, quit) }()
	go func() { recvErr <- s.recv(st, gen) }()
	var err error
	recvDone := false
	stopped := func() {
		close(quit)
		if cancel != nil && !s.isDone() {
			cancel()
		}
		<-sendErr
	}
	select {
	case err = <-sendErr:
		close(quit)
	case err = <-recvErr:
		recvDone = true
		stopped()
	case <-replaced:
		err = ErrDetached
		stopped()
	case <-expired:
		err = ErrDetached
		stopped()
	}
	if !s.isDone() {
		if err == nil {
			err = ErrDetached
		}
		return err
	}
	s.mu.Lock()
	aerr := s.err
	s.mu.Unlock()
	if aerr != nil {
		if a := aerr.(*Aborted); !a.ByPeer && s.gen.Load() == gen {
			_ = st.SendMsg(&frame.Frame{Kind: frame.KindClose, Flags: frame.FlagAbort, Reason: a.Reason})
		}
		return aerr
	}
	if waitEOF && !recvDone {
		select {
		case <-recvErr:
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

func (s *Session) send(st Stream, gen, next uint64, notify chan struct{}, quit chan struct{}) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	closeSent := false
	for {
		if s.gen.Load() != gen {
			return ErrDetached
		}
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			return nil
		}
		if s.complete() {
			s.finish()
			s.mu.Unlock()
			return nil
		}
		if next < s.base {
			next = s.base
		}
		var f *frame.Frame
		switch {
		case next < s.end:
			// The chunk holding next: the last one starting at or before it.
			i := sort.Search(len(s.chunks), func(i int) bool { return s.chunks[i].off > next }) - 1
			c := &s.chunks[max(i, 0)]
			f = &frame.Frame{Kind: frame.KindData, Offset: next, Data: c.data(next), Ack: s.delivered}
			next = c.off + uint64(len(c.b))
		case s.eof && !closeSent:
			f = &frame.Frame{Kind: frame.KindClose, Offset: s.end, Reason: s.eofReason, Ack: s.delivered}
			closeSent = true
		case s.delivered > s.ackSent && (s.delivered-s.ackSent >= s.every || s.peerDone || s.ackFired):
			f = &frame.Frame{Kind: frame.KindAck, Ack: s.delivered}
		}
		if f != nil {
			if f.Ack > s.ackSent {
				s.ackSent = f.Ack
			}
			if s.ackSent >= s.delivered {
				s.ackArmed, s.ackFired = false, false
			}
		} else if s.delivered > s.ackSent && !s.ackArmed {
			s.ackArmed, s.ackFired = true, false
			if timer == nil {
				timer = time.AfterFunc(s.o.AckDelay, func() { s.ackFire(notify) })
			} else {
				timer.Reset(s.o.AckDelay)
			}
		}
		s.mu.Unlock()
		if f == nil {
			select {
			case <-notify:
			case <-quit:
				return ErrDetached
			case <-s.done:
			}
			continue
		}
		if err := st.SendMsg(f); err != nil {
			return err
		}
	}
}

func (s *Session) ackFire(notify chan struct{}) {
	s.mu.Lock()
	s.ackFired = true
	s.mu.Unlock()
	select {
	case notify <- struct{}{}:
	default:
	}
}

func (s *Session) recv(st Stream, gen uint64) error {
	for {
		var f frame.Frame
		if err := st.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return ErrEndOfStream
			}
			return err
		}
		if f.Ack > 0 {
			s.mu.Lock()
			err := s.ack(f.Ack)
			s.wake()
			s.mu.Unlock()
			if err != nil {
				s.Abort("protocol error: "+err.Error(), false)
				return err
			}
		}
		switch f.Kind {
		case frame.KindData:
			err := s.deliver(gen, f.Offset, f.Payload, false)
			f.Release()
			if err != nil {
				return err
			}
		case frame.KindClose:
			if f.Flags&frame.FlagAbort != 0 {
				s.Abort(f.Reason, true)
				return &Aborted{Reason: f.Reason, ByPeer: true}
			}
			if err := s.deliver(gen, f.Offset, nil, true); err != nil {
				return err
			}
		case frame.KindAck:
		case frame.KindOpen:
			if s.o.OnOpen == nil {
				err := errors.New("unexpected open frame in a resumable tunnel")
				s.Abort("protocol error: "+err.Error(), false)
				return err
			}
			s.o.OnOpen(f.ID)
		default:
			err := fmt.Errorf("unexpected %s frame in a resumable tunnel", f.Kind)
			s.Abort("protocol error: "+err.Error(), false)
			return err
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

func (s *Session) deliver(gen, off uint64, p []byte, isClose bool) error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.gen.Load() != gen {
		return ErrDetached
	}
	s.mu.Lock()
	d, peerDone := s.delivered, s.peerDone
	s.mu.Unlock()
	if peerDone {
		return nil // a repeated Close after a resume
	}
	if off > d {
		err := fmt.Errorf("the peer sent offset %d but only %d bytes arrived", off, d)
		s.Abort("protocol error: "+err.Error(), false)
		return err
	}
	n := uint64(0)
	if isClose {
		if off != d {
			return nil // stale
		}
		closeWrite(s.local)
		n = 1
	} else {
		skip := d - off
		if skip >= uint64(len(p)) {
			return nil // already delivered
		}
		w, err := s.local.Write(p[skip:])
		n = uint64(w)
		if err != nil {
			s.Abort("writing the local connection: "+err.Error(), false)
			return err
		}
	}
	s.mu.Lock()
	s.delivered += n
	if isClose {
		s.peerDone = true
	}
	if s.delivered-s.ackSent >= s.every || isClose || !s.ackArmed {
		s.wake()
	}
	s.mu.Unlock()
	return nil
}
