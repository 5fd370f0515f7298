// Package faultproxy is a loopback TCP proxy that injects network faults
// for tests: it passes bytes through, blackholes connections (bytes are
// swallowed silently, nothing is closed) or resets them (RST, no FIN).
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Mode is what the proxy does to traffic.
type Mode int32

const (
	// Pass forwards bytes both ways.
	Pass Mode = iota
	// Blackhole swallows every byte of every current and new connection
	// without closing anything. A blackholed connection stays dead after the
	// mode returns to Pass (its byte stream has holes); new connections pass.
	Blackhole
	// Reset aborts every current connection with a TCP RST and resets new
	// connections as soon as they are accepted.
	Reset
)

// Proxy forwards a loopback listener to one target address.
type Proxy struct {
	lis    net.Listener
	target string
	mode   atomic.Int32

	mu     sync.Mutex
	conns  map[*pair]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted atomic.Int64
}

type pair struct {
	client, server net.Conn
	dead           atomic.Bool // blackholed for good
}

// New listens on listenAddr (use "127.0.0.1:0") and forwards to target.
func New(listenAddr, target string) (*Proxy, error) {
	host, _, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil, fmt.Errorf("fault proxy listen address %q: %w", listenAddr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("fault proxy listen address %q is not a loopback IP", listenAddr)
	}
	lis, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("fault proxy: %w", err)
	}
	p := &Proxy{lis: lis, target: target, conns: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Accepted is how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// SetMode switches the mode. Blackhole and Reset act on current connections
// at once and on new ones as they arrive.
func (p *Proxy) SetMode(m Mode) {
	p.mode.Store(int32(m))
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		switch m {
		case Blackhole:
			c.dead.Store(true)
		case Reset:
			reset(c.client)
			reset(c.server)
		}
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.client.Close()
		c.server.Close()
	}
	p.mu.Unlock()
	err := p.lis.Close()
	p.wg.Wait()
	return err
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		if p.Mode() == Reset {
			reset(c)
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			reset(c)
			continue
		}
		pr := &pair{client: c, server: s}
		pr.dead.Store(p.Mode() == Blackhole)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[pr] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		var done sync.WaitGroup
		done.Add(2)
		go func() { defer p.wg.Done(); defer done.Done(); p.pump(pr, s, c) }()
		go func() { defer p.wg.Done(); defer done.Done(); p.pump(pr, c, s) }()
		go func() {
			done.Wait()
			p.mu.Lock()
			delete(p.conns, pr)
			p.mu.Unlock()
		}()
	}
}

// pump copies src to dst until either side fails; bytes read while the pair
// is blackholed are dropped.
func (p *Proxy) pump(pr *pair, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pr.dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if pr.dead.Load() && !errors.Is(err, net.ErrClosed) {
				// A blackhole never tells the other side anything.
				return
			}
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			dst.Close()
			return
		}
	}
}
