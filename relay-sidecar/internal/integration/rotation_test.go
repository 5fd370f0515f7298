package integration

import (
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/e2e/relayapp"
	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/test/testpki"
)

// bundleLoaded waits until r's trust bundle holds exactly cas.
func bundleLoaded(t *testing.T, r *creds.Reloader, cas ...*testpki.CA) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a trust bundle of %d CAs", len(cas)), 10*time.Second, func() bool {
		got := r.Current().BundleCerts
		if len(got) != len(cas) {
			return false
		}
		for i := range got {
			if !got[i].Equal(cas[i].Cert) {
				return false
			}
		}
		return true
	})
}

func serialLoaded(t *testing.T, r *creds.Reloader, want string) {
	t.Helper()
	waitFor(t, "serial "+want+" to load", 10*time.Second, func() bool { return r.Current().Serial() == want })
}

// shortTunnel opens a new app stream through the agent sidecar, checks it
// carries heartbeats both ways, and closes it.
func shortTunnel(t *testing.T, e *env) {
	t.Helper()
	a := relayapp.NewAgent(e.agLocal, relayapp.Options{Interval: 2 * time.Millisecond})
	ctx, cancel := contextWithCancel(t)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	waitFor(t, "a new tunnel to carry heartbeats", 10*time.Second, func() bool { return a.Stats().Received >= 3 })
	cancel()
	<-done
	if st := a.Stats(); st.Gaps != 0 || st.Breaks != 0 {
		t.Fatalf("new tunnel lost heartbeats: %+v (%s)", st, a.LastError())
	}
}

func TestRotationUnderLoad(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeMTLS})
	e.startApp()
	e.streaming(20)
	ss, as := e.srvSide, e.agSide
	cur := e.ca
	const rounds = 50
	for i := range rounds {
		next := newCA(t, fmt.Sprintf("relay root %d", i+1))
		// 1. Both sides trust old and new.
		both := map[string][]byte{"ca.crt": testpki.Bundle(cur, next)}
		ss.write(t, ss.bundle, both)
		as.write(t, as.bundle, both)
		bundleLoaded(t, ss.creds, cur, next)
		bundleLoaded(t, as.creds, cur, next)

		// 2. New server and client certificates from the new CA.
		// The server goes first, so that the agent's new connection (made
		// when its own certificate changes) meets the new server certificate.
		srvCert, cliCert := issue(t, next, serverLeaf()), issue(t, next, clientLeaf())
		ss.write(t, ss.certs, pair(srvCert))
		serialLoaded(t, ss.creds, serial(srvCert))
		as.write(t, as.certs, pair(cliCert))
		serialLoaded(t, as.creds, serial(cliCert))
		// The agent reconnects with its new certificate and sees the new
		// server certificate; the server sees the new client certificate.
		waitFor(t, fmt.Sprintf("round %d: handshake with the new serials", i), 10*time.Second, func() bool {
			st := e.ag.Status()
			return st.Ready && st.ClientSerial == serial(cliCert) && st.ServerSerial == serial(srvCert) && e.sawClientSerial(serial(cliCert))
		})

		// 3. Only the new CA.
		only := map[string][]byte{"ca.crt": next.PEM}
		ss.write(t, ss.bundle, only)
		as.write(t, as.bundle, only)
		bundleLoaded(t, ss.creds, next)
		bundleLoaded(t, as.creds, next)
		cur = next

		if i%10 == 9 {
			shortTunnel(t, e)
			e.streaming(5)
			e.noLoss()
		}
	}
	e.streaming(20)
	e.noLoss()
	for _, s := range []*side{ss, as} {
		if n := reloads(s.metrics, "failure", creds.ReasonUntrusted) + reloads(s.metrics, "failure", creds.ReasonRead); n != 0 {
			t.Errorf("%v refused reloads during a clean rotation", n)
		}
	}
	// The old connection carrying the app stream stays; superseded idle
	// ones are closed.
	if st := e.ag.Status(); st.Conns > 2 {
		t.Errorf("agent holds %d relay connections after %d rotations", st.Conns, rounds)
	}
}

func TestBrokenGenerationsUnderLoad(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeMTLS})
	e.startApp()
	e.streaming(20)
	ss, as := e.srvSide, e.agSide
	srvGood, agGood := ss.creds.Current().Serial(), as.creds.Current().Serial()
	other := newCA(t, "another root")
	expiredLeaf := func(l testpki.Leaf) testpki.Leaf {
		l.NotBefore, l.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		return l
	}
	wrongUsage := func(l testpki.Leaf) testpki.Leaf {
		if l.Usages[0] == x509.ExtKeyUsageClientAuth {
			l.Usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		} else {
			l.Usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		return l
	}
	for _, tc := range []struct {
		name   string
		files  func(leaf testpki.Leaf) map[string][]byte
		half   bool
		reason string
	}{
		{"empty file", func(l testpki.Leaf) map[string][]byte {
			return map[string][]byte{"tls.crt": {}, "tls.key": issue(t, e.ca, l).KeyPEM}
		}, false, creds.ReasonEmpty},
		{"garbage", func(testpki.Leaf) map[string][]byte {
			return map[string][]byte{"tls.crt": []byte("\x00\x01garbage"), "tls.key": []byte("junk")}
		}, false, creds.ReasonParse},
		{"key not matching", func(l testpki.Leaf) map[string][]byte {
			return map[string][]byte{"tls.crt": issue(t, e.ca, l).CertPEM, "tls.key": issue(t, e.ca, l).KeyPEM}
		}, false, creds.ReasonKeyMismatch},
		{"expired", func(l testpki.Leaf) map[string][]byte { return pair(issue(t, e.ca, expiredLeaf(l))) }, false, creds.ReasonExpired},
		{"wrong usage", func(l testpki.Leaf) map[string][]byte { return pair(issue(t, e.ca, wrongUsage(l))) }, false, creds.ReasonUsage},
		{"other CA", func(l testpki.Leaf) map[string][]byte { return pair(issue(t, other, l)) }, false, creds.ReasonUntrusted},
		{"half-written swap", func(l testpki.Leaf) map[string][]byte { return pair(issue(t, e.ca, l)) }, true, creds.ReasonParse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sd := range []struct {
				s    *side
				leaf testpki.Leaf
				good string
			}{{ss, serverLeaf(), srvGood}, {as, clientLeaf(), agGood}} {
				before := reloads(sd.s.metrics, "failure", tc.reason)
				files := tc.files(sd.leaf)
				var err error
				if tc.half {
					err = sd.s.certs.WriteHalf(files)
				} else {
					err = sd.s.certs.Write(files)
				}
				if err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the refusal to be counted with reason "+tc.reason, 10*time.Second, func() bool {
					return reloads(sd.s.metrics, "failure", tc.reason) == before+1
				})
				if !strings.Contains(sd.s.logs.String(), "reason="+tc.reason) {
					t.Errorf("log does not say reason=%s", tc.reason)
				}
				if got := sd.s.creds.Current().Serial(); got != sd.good {
					t.Fatalf("serial %s in use, want the last good %s", got, sd.good)
				}
			}
			e.streaming(10)
			e.noLoss()
		})
	}
	// New handshakes still work with the last good material.
	shortTunnel(t, e)
	e.noLoss()
	if !e.ag.Status().Ready {
		t.Fatal("agent not ready")
	}
}

// TestHalfClose checks that each direction of a tunnel ends on its own:
// the local client's EOF reaches the upstream, and the upstream's answer
// still comes back.
func TestHalfClose(t *testing.T) {
	// An upstream that reads everything, then answers.
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	t.Cleanup(func() { lis.Close() })
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(b))
	}()
	e := newEnv(t, envOpts{mode: access.ModeTLS, upstream: lis.Addr().String()})
	waitFor(t, "agent ready", 10*time.Second, func() bool { return e.ag.Ready() == nil })
	c := must[net.Conn](t)(net.Dial("tcp", e.agLocal))
	defer c.Close()
	payload := strings.Repeat("x", 200<<10)
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("got %d bytes", len(payload)); string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
