package kubeletdir

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteProjectsLikeKubelet(t *testing.T) {
	d, err := New(filepath.Join(t.TempDir(), "secret"))
	if err != nil {
		t.Fatal(err)
	}
	gens := []map[string][]byte{
		{"tls.crt": []byte("crt-1"), "tls.key": []byte("key-1")},
		{"tls.crt": []byte("crt-2"), "tls.key": []byte("key-2"), "ca.crt": []byte("ca-2")},
		{"tls.crt": []byte("crt-3")},
	}
	var prev string
	for i, files := range gens {
		if err := d.Write(files); err != nil {
			t.Fatalf("generation %d: %v", i, err)
		}
		target, err := os.Readlink(filepath.Join(d.Path(), "..data"))
		if err != nil {
			t.Fatalf("generation %d: ..data is not a symlink: %v", i, err)
		}
		if !strings.HasPrefix(target, "..") || target == prev {
			t.Fatalf("generation %d: ..data points to %q (previous %q)", i, target, prev)
		}
		if prev != "" {
			if _, err := os.Stat(filepath.Join(d.Path(), prev)); !os.IsNotExist(err) {
				t.Errorf("generation %d: previous directory %s still there", i, prev)
			}
		}
		prev = target
		for k, want := range files {
			link, err := os.Readlink(d.File(k))
			if err != nil || link != filepath.Join("..data", k) {
				t.Errorf("generation %d: %s links to %q (%v)", i, k, link, err)
			}
			got, err := os.ReadFile(d.File(k))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("generation %d: %s = %q (%v), want %q", i, k, got, err, want)
			}
		}
		entries, _ := os.ReadDir(d.Path())
		for _, e := range entries {
			if e.Name()[0] != '.' {
				if _, ok := files[e.Name()]; !ok {
					t.Errorf("generation %d: stale key %s left", i, e.Name())
				}
			}
		}
	}
}

func TestWriteHalfTearsAllButFirstKey(t *testing.T) {
	d, err := New(filepath.Join(t.TempDir(), "secret"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"tls.crt": []byte("0123456789"), "tls.key": []byte("abcdefghij")}
	if err := d.WriteHalf(files); err != nil {
		t.Fatal(err)
	}
	crt, _ := os.ReadFile(d.File("tls.crt"))
	key, _ := os.ReadFile(d.File("tls.key"))
	if string(crt) != "0123456789" || string(key) != "abcde" {
		t.Fatalf("torn projection: tls.crt=%q tls.key=%q", crt, key)
	}
}

func TestRejectsPathKeys(t *testing.T) {
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"", "../x", "a/b", "..data"} {
		if err := d.Write(map[string][]byte{k: []byte("x")}); err == nil {
			t.Errorf("key %q accepted", k)
		}
	}
}
