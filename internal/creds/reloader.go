package creds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options tune a Reloader.
type Options struct {
	// Poll is the fallback poll interval (default 10s).
	Poll time.Duration
	// Log receives reload results (default slog.Default()).
	Log *slog.Logger
	// OnResult is called after each reload attempt that found new material:
	// result is "success" or "failure", reason a label (empty on success).
	OnResult func(result, reason string)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Reloader keeps the last good Generation of one set of sources.
type Reloader struct {
	src  Sources
	exp  Expect
	opts Options

	cur atomic.Pointer[Generation]

	mu      sync.Mutex
	lastBad string // fingerprint or error text of the last refused material
	subs    []func(old, cur *Generation)

	expiredLogged atomic.Bool
	kick          chan struct{}
}

// NewReloader loads the first generation. It fails when that generation is
// invalid, so that a sidecar never starts without a usable identity.
func NewReloader(src Sources, exp Expect, opts Options) (*Reloader, error) {
	if opts.Poll <= 0 {
		opts.Poll = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OnResult == nil {
		opts.OnResult = func(string, string) {}
	}
	g, err := Load(src, exp, opts.Now())
	if err != nil {
		return nil, fmt.Errorf("loading initial credentials: %w", err)
	}
	r := &Reloader{src: src, exp: exp, opts: opts, kick: make(chan struct{}, 1)}
	r.cur.Store(g)
	opts.OnResult("success", "")
	return r, nil
}

// Current is the last good generation. It is never nil.
func (r *Reloader) Current() *Generation { return r.cur.Load() }

// Valid reports whether the current generation can be used at now: it is
// nil when the certificate (if any) is within its dates.
func (r *Reloader) Valid(now time.Time) error {
	g := r.Current()
	if g.ExpiredAt(now) {
		return fmt.Errorf("certificate (serial %s) expired at %s and no valid replacement is mounted", g.Serial(), g.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Subscribe registers fn, called after each swap with the previous and the
// new generation. fn must not block for long.
func (r *Reloader) Subscribe(fn func(old, cur *Generation)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, fn)
}

// Reload reads the sources now. It returns the refusal, if the material
// differs from the current generation and is bad.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.opts.Now()
	raw, err := readRaw(r.src)
	if err != nil {
		return r.refused(err.Error(), err)
	}
	fp := raw.fingerprint()
	cur := r.cur.Load()
	if fp == cur.Fingerprint {
		r.lastBad = ""
		r.checkExpiry(cur, now)
		return nil
	}
	g, err := validate(r.src, raw, r.exp, now)
	if err != nil {
		return r.refused(fmt.Sprintf("%x", fp), err)
	}
	r.lastBad = ""
	r.cur.Store(g)
	r.expiredLogged.Store(false)
	attrs := []any{"source", r.describe()}
	if g.Leaf != nil {
		attrs = append(attrs, "serial", g.Serial(), "not_after", g.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(g.BundleCerts) > 0 {
		attrs = append(attrs, "trust_bundle_cas", len(g.BundleCerts))
	}
	r.opts.Log.Info("credentials reloaded", attrs...)
	r.opts.OnResult("success", "")
	for _, fn := range r.subs {
		fn(cur, g)
	}
	return nil
}

// refused logs and counts a refusal once per distinct bad material.
func (r *Reloader) refused(key string, err error) error {
	if key == r.lastBad {
		return err
	}
	r.lastBad = key
	reason := ReasonOf(err)
	r.opts.Log.Warn("refused new credentials; keeping the last good generation",
		"source", r.describe(), "reason", reason, "error", err.Error(), "kept_serial", r.cur.Load().Serial())
	r.opts.OnResult("failure", reason)
	return err
}

func (r *Reloader) checkExpiry(g *Generation, now time.Time) {
	if g.ExpiredAt(now) && !r.expiredLogged.Swap(true) {
		r.opts.Log.Error("certificate expired and no valid replacement is mounted",
			"source", r.describe(), "serial", g.Serial(), "not_after", g.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

func (r *Reloader) describe() string {
	switch {
	case r.src.CertDir != "":
		return r.src.CertDir
	case r.src.BundleFile != "":
		return r.src.BundleFile
	}
	return r.src.TokenFile
}

// Kick asks a running Run loop to reload soon.
func (r *Reloader) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run watches the source directories and polls until ctx ends. Watch
// errors are logged; the poll keeps working without the watcher.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if err != nil {
		r.opts.Log.Warn("file watcher unavailable; relying on polling", "error", err.Error())
	} else {
		defer w.Close()
		for _, d := range r.dirs() {
			if err := w.Add(d); err != nil {
				r.opts.Log.Warn("cannot watch directory; relying on polling", "dir", d, "error", err.Error())
			}
		}
		events, errs = w.Events, w.Errors
	}
	// Anything mounted between NewReloader and the watch is picked up here.
	_ = r.Reload()
	tick := time.NewTicker(r.opts.Poll)
	defer tick.Stop()
	// Debounce: a kubelet swap is several events; reload once they settle.
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			if debounce == nil {
				debounce = time.After(20 * time.Millisecond)
			}
		case err := <-errs:
			if err != nil && !errors.Is(err, fsnotify.ErrEventOverflow) {
				r.opts.Log.Warn("file watcher error", "error", err.Error())
			}
			r.Kick()
		case <-debounce:
			debounce = nil
			_ = r.Reload()
		case <-r.kick:
			_ = r.Reload()
		case <-tick.C:
			_ = r.Reload()
		}
	}
}

func (r *Reloader) dirs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(d string) {
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	add(r.src.CertDir)
	if r.src.BundleFile != "" {
		add(filepath.Dir(r.src.BundleFile))
	}
	if r.src.TokenFile != "" {
		add(filepath.Dir(r.src.TokenFile))
	}
	return out
}
