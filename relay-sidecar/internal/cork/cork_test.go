package cork

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaytls/relaytls/test/testpki"
)

// counting counts the writes that reach the socket.
type counting struct {
	net.Conn
	writes atomic.Int64
}

func (c *counting) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// pair returns a TLS client over a corked, counted connection and the
// server end of it.
func pair(t *testing.T) (*Conn, *counting, *tls.Conn) {
	t.Helper()
	ca, err := testpki.NewCA("cork test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.Leaf{DNSNames: []string{"cork.test"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cnt := &counting{Conn: raw}
	under := &Raw{Conn: cnt}
	cli := tls.Client(under, &tls.Config{RootCAs: pool, ServerName: "cork.test", MinVersion: tls.VersionTLS13})
	srv := <-accepted
	if srv == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return New(cli, under), cnt, srv
}

// TestLargeWriteIsOneSocketWrite checks that a write of several TLS
// records leaves in one socket write and arrives intact, and that a small
// write is not gathered.
func TestLargeWriteIsOneSocketWrite(t *testing.T) {
	c, cnt, srv := pair(t)
	for _, size := range []int{100, MinWrite - 1, MinWrite, 16 << 10, 64 << 10, 300 << 10} {
		msg := make([]byte, size)
		if _, err := rand.Read(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		done := make(chan error, 1)
		go func() { _, err := io.ReadFull(srv, got); done <- err }()
		before := cnt.writes.Load()
		n, err := c.Write(msg)
		if err != nil || n != size {
			t.Fatalf("write of %d bytes: %d, %v", size, n, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("reading %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes arrived changed", size)
		}
		// Below MinWrite it is one socket write per record, however
		// crypto/tls sizes them (small ones while a connection is new).
		if writes := cnt.writes.Load() - before; size >= MinWrite && writes != 1 {
			t.Errorf("a %d-byte write took %d socket writes, want 1", size, writes)
		}
	}
	if c.raw.buf != nil || c.raw.corked {
		t.Error("the raw connection still holds a buffer after the writes")
	}
}

// TestWriteErrorReported checks that a failed gathered write is reported.
func TestWriteErrorReported(t *testing.T) {
	c, cnt, _ := pair(t)
	cnt.Conn.Close()
	if _, err := c.Write(make([]byte, 64<<10)); err == nil {
		t.Fatal("a write on a closed connection succeeded")
	}
}
