package manifest

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // kinds
		wantErr  string
	}{
		{"two documents and an empty one", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n", []string{"Namespace", "Secret"}, ""},
		{"JSON", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}`, []string{"ConfigMap"}, ""},
		{"nothing", "", nil, ""},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", nil, `document 1 ("x") has no apiVersion or kind`},
		{"not YAML", "apiVersion: v1\nkind: [\n", nil, "document 1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Decode([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decode error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
			}
			if strings.Join(kinds, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("kinds %v, want %v", kinds, tc.want)
			}
		})
	}
}
