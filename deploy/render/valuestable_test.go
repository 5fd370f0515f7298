package render_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/deploy/render"
)

// TestValuesDocumented: every key of values.yaml has a description in the
// generated values table (its own comment, or one the rules of ValueDocs
// give it).
func TestValuesDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(render.ChartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := render.ValueDocs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 50 {
		t.Fatalf("only %d keys in values.yaml", len(docs))
	}
	for _, d := range docs {
		if d.Description == "" {
			t.Errorf("values.yaml: %s has no comment", d.Key)
		}
	}
}

func TestValueDocsRules(t *testing.T) {
	docs, err := render.ValueDocs([]byte(`# header of the file

# a is a thing.
a: 1
# m holds things.
m:
  # x and y of m.
  x: "s"
  y: [1, 2]
  z: {}
n:
  # p is p.
  p: true
  q: null
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][3]string{
		"a":   {"int", "1", "a is a thing."},
		"m.x": {"string", `"s"`, "x and y of m."},
		"m.y": {"list", "[1,2]", "x and y of m."},
		"m.z": {"object", "{}", "m holds things."},
		"n.p": {"bool", "true", "p is p."},
		"n.q": {"null", "null", ""},
	}
	if len(docs) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(docs), len(want), docs)
	}
	for _, d := range docs {
		w := want[d.Key]
		if got := [3]string{d.Type, d.Default, d.Description}; got != w {
			t.Errorf("%s: %q, want %q", d.Key, got, w)
		}
	}
	table, err := render.ValuesTable([]byte("# a | b\na: \"x|y\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "| `a` | string | `\"x\\|y\"` | a \\| b |") {
		t.Errorf("pipes are not escaped:\n%s", table)
	}
}
