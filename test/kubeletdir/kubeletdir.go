// Package kubeletdir projects Secret keys into a directory the way kubelet
// does for a Secret volume, so that reload tests exercise the same file
// system moves a pod sees.
//
// Layout after a projection:
//
//	dir/..2026_11_27_16_04_05.000000001/tls.crt   the files of one generation
//	dir/..data -> ..2026_11_27_16_04_05.000000001  the current generation
//	dir/tls.crt -> ..data/tls.crt                  one symlink per key
//
// An update writes a new timestamped directory, points a temporary symlink at
// it and renames that symlink over ..data (an atomic swap), then removes the
// previous generation's directory and any key symlink that is gone.
package kubeletdir

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

const (
	dataLink = "..data"
	tmpLink  = "..data_tmp"
)

// Dir is a kubelet-style projected Secret directory.
type Dir struct {
	path string

	mu  sync.Mutex
	seq int
}

// New creates (if needed) the directory at path and returns it. It does not
// project anything yet.
func New(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating projected directory %s: %w", path, err)
	}
	return &Dir{path: path}, nil
}

// Path is the directory a consumer mounts.
func (d *Dir) Path() string { return d.path }

// File is the path of key as a consumer sees it (the key symlink).
func (d *Dir) File(key string) string { return filepath.Join(d.path, key) }

// Write projects files (key -> content) as a new generation with an atomic
// swap of ..data.
func (d *Dir) Write(files map[string][]byte) error {
	return d.project(files)
}

// WriteHalf projects a torn generation, as if the writer had been cut short:
// the first key (in sorted order) is written whole, every other key is cut
// to half its length, and the ..data swap still happens. A reader must refuse
// the result and keep its last good generation.
func (d *Dir) WriteHalf(files map[string][]byte) error {
	keys := sortedKeys(files)
	torn := make(map[string][]byte, len(files))
	for i, k := range keys {
		if i == 0 {
			torn[k] = files[k]
			continue
		}
		torn[k] = files[k][:len(files[k])/2]
	}
	return d.project(torn)
}

func sortedKeys(files map[string][]byte) []string {
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (d *Dir) project(files map[string][]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range files {
		if k == "" || k[0] == '.' || filepath.Base(k) != k {
			return fmt.Errorf("key %q is not a plain file name", k)
		}
	}
	old, _ := os.Readlink(filepath.Join(d.path, dataLink))

	d.seq++
	ts := fmt.Sprintf("..%s.%09d", time.Now().UTC().Format("2006_01_02_15_04_05"), d.seq)
	genDir := filepath.Join(d.path, ts)
	if err := os.Mkdir(genDir, 0o755); err != nil {
		return fmt.Errorf("creating generation directory: %w", err)
	}
	for _, k := range sortedKeys(files) {
		if err := os.WriteFile(filepath.Join(genDir, k), files[k], 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", k, err)
		}
	}
	tmp := filepath.Join(d.path, tmpLink)
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return fmt.Errorf("linking %s: %w", tmpLink, err)
	}
	if err := os.Rename(tmp, filepath.Join(d.path, dataLink)); err != nil {
		return fmt.Errorf("swapping %s: %w", dataLink, err)
	}
	// Key symlinks: create new ones, drop those no longer projected.
	for k := range files {
		link := filepath.Join(d.path, k)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join(dataLink, k) {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join(dataLink, k), link); err != nil {
			return fmt.Errorf("linking key %s: %w", k, err)
		}
	}
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if name[0] == '.' {
			continue
		}
		if _, ok := files[name]; !ok {
			_ = os.Remove(filepath.Join(d.path, name))
		}
	}
	if old != "" && old != ts {
		if err := os.RemoveAll(filepath.Join(d.path, old)); err != nil {
			return fmt.Errorf("removing previous generation: %w", err)
		}
	}
	return nil
}
