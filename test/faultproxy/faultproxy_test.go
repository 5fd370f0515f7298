package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes lines back until the listener closes.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return lis.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, msg string, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestModes(t *testing.T) {
	p, err := New("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	c1, r1 := dial(t)
	if got, err := roundTrip(c1, r1, "hello", 5*time.Second); err != nil || got != "hello\n" {
		t.Fatalf("pass: got %q, %v", got, err)
	}

	t.Run("blackhole swallows bytes without closing", func(t *testing.T) {
		p.SetMode(Blackhole)
		_, err := roundTrip(c1, r1, "lost", 300*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("blackholed round trip: want a timeout, got %v", err)
		}
		p.SetMode(Pass)
		// The blackholed connection stays dead; a new one passes.
		if _, err := roundTrip(c1, r1, "still lost", 300*time.Millisecond); err == nil {
			t.Fatal("a blackholed connection came back to life")
		}
		c2, r2 := dial(t)
		if got, err := roundTrip(c2, r2, "again", 5*time.Second); err != nil || got != "again\n" {
			t.Fatalf("new connection after blackhole: got %q, %v", got, err)
		}
	})

	t.Run("reset aborts current and new connections", func(t *testing.T) {
		c3, r3 := dial(t)
		if got, err := roundTrip(c3, r3, "x", 5*time.Second); err != nil || got != "x\n" {
			t.Fatalf("before reset: %q, %v", got, err)
		}
		p.SetMode(Reset)
		if _, err := roundTrip(c3, r3, "y", 5*time.Second); err == nil {
			t.Fatal("reset connection still works")
		}
		// A new connection is reset as soon as it is accepted (the reset
		// may even reach the dial).
		if c4, err := net.Dial("tcp", p.Addr()); err == nil {
			defer c4.Close()
			if _, err := roundTrip(c4, bufio.NewReader(c4), "z", 5*time.Second); err == nil {
				t.Fatal("new connection in reset mode works")
			}
		}
		p.SetMode(Pass)
		c5, r5 := dial(t)
		if got, err := roundTrip(c5, r5, "ok", 5*time.Second); err != nil || got != "ok\n" {
			t.Fatalf("after reset: %q, %v", got, err)
		}
	})
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "example.com:80", "nope"} {
		if _, err := New(addr, "127.0.0.1:1"); err == nil {
			t.Errorf("New(%q) accepted", addr)
		}
	}
}
