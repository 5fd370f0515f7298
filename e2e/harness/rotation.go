package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

// Rotation is one observed change of a renewed certificate's Secret.
type Rotation struct {
	Renewed
	Old, New *x509.Certificate
}

// Serial formats a serial number for display (hex, shortened).
func Serial(n *big.Int) string {
	s := fmt.Sprintf("%x", n)
	if len(s) > 16 {
		s = s[:16] + "…"
	}
	return s
}

// RotationWatcher follows the Secrets of the renewed certificates and
// reports each new leaf, with the serial it replaced.
type RotationWatcher struct {
	mu      sync.Mutex
	serials map[string][]*big.Int // by cluster/secret
}

// WatchRotations polls the Secrets every 250ms until ctx ends and calls
// onRotation (from one goroutine) for each new leaf certificate.
func WatchRotations(ctx context.Context, renewed []Renewed, onRotation func(Rotation)) *RotationWatcher {
	w := &RotationWatcher{serials: map[string][]*big.Int{}}
	go func() {
		last := map[string]*x509.Certificate{}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			for _, r := range renewed {
				s, err := GetSecret(ctx, r.Cluster, r.Secret)
				if err != nil {
					continue
				}
				leaf, err := pki.DecodeX509CertificateBytes(s.Data["tls.crt"])
				if err != nil {
					continue
				}
				key := r.Cluster.Name() + "/" + r.Secret
				old := last[key]
				if old != nil && old.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
					continue
				}
				last[key] = leaf
				w.mu.Lock()
				w.serials[key] = append(w.serials[key], leaf.SerialNumber)
				w.mu.Unlock()
				if old != nil && onRotation != nil {
					onRotation(Rotation{Renewed: r, Old: old, New: leaf})
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Renewals is how many times the Secret of r changed its leaf since the
// watcher started.
func (w *RotationWatcher) Renewals(r Renewed) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(0, len(w.serials[r.Cluster.Name()+"/"+r.Secret])-1)
}

// Serials is every serial seen for r, in order.
func (w *RotationWatcher) Serials(r Renewed) []*big.Int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*big.Int(nil), w.serials[r.Cluster.Name()+"/"+r.Secret]...)
}

// ServedServerCert makes a new TLS handshake with the server sidecar at
// addr, verifying it against the bundle file as an agent would, and returns
// the leaf it presented.
func ServedServerCert(ctx context.Context, addr, bundleFile string) (*x509.Certificate, error) {
	pem, err := os.ReadFile(bundleFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificates in %s", bundleFile)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{
		RootCAs: roots, ServerName: ServerName, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}
