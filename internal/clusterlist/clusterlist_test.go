package clusterlist

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEncodeParseRoundTrip(t *testing.T) {
	b, err := Encode([]Cluster{{Name: "b", Generation: 2, Revoked: true}, {Name: "a", Generation: 1}})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Encode([]Cluster{{Name: "a", Generation: 1}, {Name: "b", Generation: 2, Revoked: true}})
	if string(b) != string(again) {
		t.Fatal("Encode depends on the input order")
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if m["b"].Generation != 2 || !m["b"].Revoked || m["a"].Revoked {
		t.Fatalf("parsed %+v", m)
	}
}

func TestParseRefusesBadLists(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          "  ",
		"garbage":        "not json",
		"wrong version":  `{"version":2,"clusters":[]}`,
		"bad name":       `{"version":1,"clusters":[{"name":"Bad_Name","generation":1}]}`,
		"generation 0":   `{"version":1,"clusters":[{"name":"a","generation":0}]}`,
		"duplicate":      `{"version":1,"clusters":[{"name":"a","generation":1},{"name":"a","generation":2}]}`,
		"unknown field":  `{"version":1,"clusters":[{"name":"a","generation":1,"token":"x"}]}`,
		"truncated JSON": `{"version":1,"clusters":[{"name":"a"`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestReaderKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clusters.json")
	write := func(cs ...Cluster) {
		b, _ := Encode(cs)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(Cluster{Name: "a", Generation: 1})
	r, err := NewReader(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed := r.Subscribe()
	if _, revoked, _ := r.Lookup("a"); revoked {
		t.Fatal("a is revoked at start")
	}
	write(Cluster{Name: "a", Generation: 3, Revoked: true})
	r.Reload()
	select {
	case <-changed:
	default:
		t.Fatal("no change announced")
	}
	if g, revoked, listed := r.Lookup("a"); g != 3 || !revoked || !listed {
		t.Fatalf("Lookup(a) = %d, %v, %v", g, revoked, listed)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var results []string
	r.OnResult = func(s string) { results = append(results, s) }
	r.Reload()
	if _, revoked, _ := r.Lookup("a"); !revoked || strings.Join(results, ",") != "error" {
		t.Fatalf("a bad list replaced the good one (results %v)", results)
	}
	if g, revoked, listed := r.Lookup("unlisted"); g != 1 || revoked || listed {
		t.Fatalf("an unlisted cluster: %d, %v, %v", g, revoked, listed)
	}
	if _, err := NewReader(filepath.Join(dir, "missing"), nil); err == nil || !strings.Contains(err.Error(), "--cluster-list") {
		t.Fatalf("a missing list at start: %v", err)
	}
}
