package harness

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/relaytls/relaytls/test/kubeletdir"
)

// Projector keeps a kubelet-style directory in step with one Secret, as the
// kubelet does for a pod's Secret volume with an items list: a generation is
// projected only when every listed key is present, and each change of the
// Secret's data is a new generation (an atomic ..data swap).
type Projector struct {
	Namespace, Secret string
	Dir               *kubeletdir.Dir

	keys []string
	cs   kubernetes.Interface

	mu          sync.Mutex
	last        map[string][]byte
	seen        [][]byte
	generations int
	err         error
	changed     chan struct{}
}

// Project starts projecting the given keys of namespace/secret into dir,
// one file per key, until ctx ends.
func Project(ctx context.Context, cfg *rest.Config, namespace, secret string, dir *kubeletdir.Dir, keys ...string) (*Projector, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	p := &Projector{Namespace: namespace, Secret: secret, Dir: dir, keys: keys, cs: cs, changed: make(chan struct{})}
	go p.run(ctx)
	return p, nil
}

func (p *Projector) run(ctx context.Context) {
	sel := fields.OneTermEqualSelector("metadata.name", p.Secret).String()
	for ctx.Err() == nil {
		l, err := p.cs.CoreV1().Secrets(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err == nil {
			for i := range l.Items {
				p.observe(&l.Items[i])
			}
			var w watch.Interface
			w, err = p.cs.CoreV1().Secrets(p.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
			if err == nil {
				for ev := range w.ResultChan() {
					if s, ok := ev.Object.(*corev1.Secret); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
						p.observe(s)
					}
				}
				w.Stop()
			}
		}
		if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			p.setErr(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *Projector) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *Projector) observe(s *corev1.Secret) {
	files := map[string][]byte{}
	for _, k := range p.keys {
		v := s.Data[k]
		if len(v) == 0 {
			return // as kubelet: a listed key that is missing fails the mount
		}
		files[k] = v
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil && sameFiles(p.last, files) {
		return
	}
	if err := p.Dir.Write(files); err != nil {
		p.err = fmt.Errorf("projecting %s/%s: %w", p.Namespace, p.Secret, err)
		return
	}
	p.last = files
	for _, v := range files {
		p.seen = append(p.seen, v)
	}
	p.generations++
	close(p.changed)
	p.changed = make(chan struct{})
}

func sameFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// Seen returns every file content projected so far (for the leak check).
func (p *Projector) Seen() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.seen...)
}

// Wait waits until at least n generations were projected.
func (p *Projector) Wait(ctx context.Context, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		p.mu.Lock()
		g, ch, err := p.generations, p.changed, p.err
		p.mu.Unlock()
		if g >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			//lint:ignore ST1005 the message starts with the Kubernetes kind it names
			return fmt.Errorf("Secret %s/%s: %d generations projected, waiting for %d (last error: %v): %w", p.Namespace, p.Secret, g, n, err, ctx.Err())
		}
	}
}
