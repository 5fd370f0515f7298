// Package cork makes one large TLS write one write to the socket.
//
// crypto/tls writes every record (at most 16 KiB of plaintext) with its
// own write to the underlying connection, so gRPC's 32 KiB (or larger)
// flush becomes two or more system calls (many more while a connection is
// new, when crypto/tls sends small records). Wrap wraps the raw connection
// under TLS so that, during one large Write of the TLS connection, the
// encrypted records are gathered in a pooled buffer and written at once
// when the Write ends. Nothing is held between writes: an idle connection
// keeps no buffer.
package cork

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// MinWrite is the smallest TLS write that is gathered. A smaller one is
// likely one record (crypto/tls sends small records only while a
// connection is new) and gains nothing from a copy.
const MinWrite = 4 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Raw is the connection under TLS. Its writes go to the socket, except
// while its TLS connection's Write gathers them.
type Raw struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    *[]byte
}

// Write writes b, or appends it to the gathered records.
func (r *Raw) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.corked {
		*r.buf = append(*r.buf, b...)
		return len(b), nil
	}
	return r.Conn.Write(b)
}

func (r *Raw) cork() {
	r.mu.Lock()
	r.corked = true
	r.buf = pool.Get().(*[]byte)
	r.mu.Unlock()
}

// uncork writes what was gathered; the lock keeps any other write (an
// alert from a concurrent Read) behind it.
func (r *Raw) uncork() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corked = false
	b := r.buf
	r.buf = nil
	var err error
	if len(*b) > 0 {
		_, err = r.Conn.Write(*b)
	}
	if cap(*b) <= 1<<20 {
		*b = (*b)[:0]
		pool.Put(b)
	}
	return err
}

// Conn is a TLS connection over a Raw whose large writes are gathered.
type Conn struct {
	net.Conn // the TLS connection
	raw      *Raw
}

// New returns c (a TLS connection over raw) with gathered large writes.
func New(c net.Conn, raw *Raw) *Conn { return &Conn{Conn: c, raw: raw} }

// Write writes b through TLS; a large b leaves in one socket write.
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) < MinWrite {
		return c.Conn.Write(b)
	}
	c.raw.cork()
	n, err := c.Conn.Write(b)
	if ferr := c.raw.uncork(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}

// Credentials wraps gRPC transport credentials (TLS) so that the
// connections they make gather large writes. The handshake and the
// AuthInfo are the inner credentials' own.
func Credentials(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return &creds{TransportCredentials: inner}
}

type creds struct {
	credentials.TransportCredentials
}

func (c *creds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	under := &Raw{Conn: raw}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, under)
	if err != nil {
		return nil, nil, err
	}
	return New(conn, under), info, nil
}

func (c *creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	under := &Raw{Conn: raw}
	conn, info, err := c.TransportCredentials.ServerHandshake(under)
	if err != nil {
		return nil, nil, err
	}
	return New(conn, under), info, nil
}

func (c *creds) Clone() credentials.TransportCredentials {
	return &creds{TransportCredentials: c.TransportCredentials.Clone()}
}
