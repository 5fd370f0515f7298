// Package relayapp is the sample relay application of the end-to-end tests,
// the demo and the benchmarks: a management server and an agent that keep
// one bidirectional gRPC stream open and send sequence-numbered heartbeats
// both ways. Each side counts what it received, every gap in the sequence
// and every break of the stream, so a test can show that a transport under
// it (the relay sidecar) lost nothing.
package relayapp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// Method is the app's only RPC, a bidirectional stream of heartbeats.
const Method = "/relayapp.v1.Management/Connect"

// Heartbeat is one message: a sequence number (1, 2, 3... per stream and
// direction) and an optional payload.
type Heartbeat struct {
	Seq     uint64
	Payload []byte
}

const wireVersion = 1

type codec struct{}

var _ encoding.Codec = codec{}

func (codec) Name() string { return "relayapp" }

func (codec) Marshal(v any) ([]byte, error) {
	h, ok := v.(*Heartbeat)
	if !ok {
		return nil, fmt.Errorf("relayapp codec cannot marshal %T", v)
	}
	b := make([]byte, 9, 9+len(h.Payload))
	b[0] = wireVersion
	binary.BigEndian.PutUint64(b[1:], h.Seq)
	return append(b, h.Payload...), nil
}

func (codec) Unmarshal(data []byte, v any) error {
	h, ok := v.(*Heartbeat)
	if !ok {
		return fmt.Errorf("relayapp codec cannot unmarshal into %T", v)
	}
	if len(data) < 9 || data[0] != wireVersion {
		return errors.New("relayapp: malformed heartbeat")
	}
	h.Seq = binary.BigEndian.Uint64(data[1:9])
	h.Payload = append([]byte(nil), data[9:]...)
	return nil
}

// Stats are one side's counters.
type Stats struct {
	// Streams is how many streams were opened (agent) or accepted (server).
	Streams int64 `json:"streams"`
	// Sent and Received count heartbeats.
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
	// Gaps counts heartbeats that did not follow the previous one.
	Gaps int64 `json:"gaps"`
	// Breaks counts streams that ended with an error while the side was
	// running.
	Breaks int64 `json:"breaks"`
}

type counters struct {
	streams, sent, received, gaps, breaks atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{Streams: c.streams.Load(), Sent: c.sent.Load(), Received: c.received.Load(),
		Gaps: c.gaps.Load(), Breaks: c.breaks.Load()}
}

// Options are shared by both sides.
type Options struct {
	// Interval between heartbeats (default 10ms).
	Interval time.Duration
	// PayloadSize is the size of each heartbeat's payload.
	PayloadSize int
	Log         *slog.Logger
}

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// msgStream is what exchange needs of a gRPC stream: a grpc.ClientStream
// (the agent) and a grpc.ServerStream (the server) both have it.
type msgStream interface {
	SendMsg(m any) error
	RecvMsg(m any) error
}

// exchange runs one stream: heartbeats out every interval, heartbeats in
// checked for gaps. It returns when either direction fails, or, once ctx
// ends, after a clean close: closeSend (the agent) half-closes and the peer's
// end of stream is awaited, so that stopping is not mistaken for a break.
func exchange(ctx context.Context, s msgStream, o Options, c *counters, closeSend func() error) error {
	sendErr, recvErr := make(chan error, 1), make(chan error, 1)
	go func() {
		payload := make([]byte, o.PayloadSize)
		t := time.NewTicker(o.Interval)
		defer t.Stop()
		for seq := uint64(1); ; seq++ {
			if err := s.SendMsg(&Heartbeat{Seq: seq, Payload: payload}); err != nil {
				sendErr <- fmt.Errorf("sending heartbeat %d: %w", seq, err)
				return
			}
			c.sent.Add(1)
			select {
			case <-ctx.Done():
				if closeSend != nil {
					_ = closeSend()
				}
				sendErr <- nil
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		var last uint64
		for {
			var h Heartbeat
			if err := s.RecvMsg(&h); err != nil {
				if errors.Is(err, io.EOF) {
					recvErr <- io.EOF
					return
				}
				recvErr <- fmt.Errorf("receiving after heartbeat %d: %w", last, err)
				return
			}
			if h.Seq != last+1 {
				c.gaps.Add(1)
			}
			last = h.Seq
			c.received.Add(1)
		}
	}()
	select {
	case err := <-sendErr:
		if err != nil || closeSend == nil {
			return err
		}
		select {
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-time.After(2 * time.Second):
			return errors.New("the server did not end the stream after the agent closed its side")
		}
	case err := <-recvErr:
		return err
	}
}

// Server is the management server side.
type Server struct {
	o       Options
	g       *grpc.Server
	c       counters
	stopped atomic.Bool
}

// NewServer builds the management server.
func NewServer(o Options) *Server {
	o.defaults()
	s := &Server{o: o}
	s.g = grpc.NewServer(grpc.ForceServerCodec(codec{}))
	s.g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "relayapp.v1.Management",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Connect", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error { return s.connect(st) }}},
	}, s)
	return s
}

func (s *Server) connect(st grpc.ServerStream) error {
	s.c.streams.Add(1)
	err := exchange(st.Context(), st, s.o, &s.c, nil)
	if err != nil && !errors.Is(err, io.EOF) && !s.stopped.Load() {
		s.c.breaks.Add(1)
		s.o.Log.Warn("relayapp server: stream broke", "error", err.Error())
	}
	return nil
}

// Serve serves on lis (plaintext gRPC).
func (s *Server) Serve(lis net.Listener) error { return s.g.Serve(lis) }

// Stop stops the server; streams ended by it are not counted as breaks.
func (s *Server) Stop() { s.stopped.Store(true); s.g.Stop() }

// Stats returns the server's counters.
func (s *Server) Stats() Stats { return s.c.snapshot() }

// Agent is the agent side: it keeps one stream to Target open and opens a
// new one after a break.
type Agent struct {
	o      Options
	target string
	c      counters
	mu     sync.Mutex
	last   string
}

// NewAgent makes an agent that connects to target: host:port or
// unix:/path.
func NewAgent(target string, o Options) *Agent {
	o.defaults()
	return &Agent{o: o, target: target}
}

// Stats returns the agent's counters.
func (a *Agent) Stats() Stats { return a.c.snapshot() }

// LastError is the error of the last break ("" if none).
func (a *Agent) LastError() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Run streams until ctx ends, reopening the stream after each break.
func (a *Agent) Run(ctx context.Context) error {
	target := a.target
	if len(target) > 5 && target[:5] == "unix:" {
		target = "unix://" + target[5:]
	} else {
		target = "passthrough:///" + target
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})))
	if err != nil {
		return fmt.Errorf("relayapp agent: %w", err)
	}
	defer cc.Close()
	desc := &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}
	delay := 20 * time.Millisecond
	for ctx.Err() == nil {
		// The stream outlives ctx by the clean close exchange performs.
		// Until the stream exists, ending ctx ends the wait for it.
		sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, scancel)
		st, err := cc.NewStream(sctx, desc, Method, grpc.WaitForReady(true))
		stop()
		if err == nil {
			a.c.streams.Add(1)
			err = exchange(ctx, st, a.o, &a.c, st.CloseSend)
		}
		scancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		a.c.breaks.Add(1)
		a.mu.Lock()
		a.last = err.Error()
		a.mu.Unlock()
		a.o.Log.Warn("relayapp agent: stream broke; reopening", "error", err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
	return nil
}
