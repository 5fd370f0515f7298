package render

import (
	"slices"
	"testing"
)

// TestConfigMapKeysMatchTheMode: relaytls-config names only what the mode
// has. A token Secret exists in modes 2 to 5, an issuance endpoint only on
// the workload side of modes 4 and 5 (its remote issuer); an unused key
// reads as something to configure.
func TestConfigMapKeysMatchTheMode(t *testing.T) {
	tokenModes := []string{"tls-self-signed", "tls-byo-server", "mtls-self-signed", "mtls-byo-ca"}
	remoteModes := []string{"mtls-self-signed", "mtls-byo-ca"}
	for _, mode := range Modes {
		for _, role := range Roles {
			r, err := Chart(ChartDir(), ChartOptions{Values: ProfileValues(mode, role)})
			if err != nil {
				t.Fatal(err)
			}
			var data map[string]any
			for _, o := range r.Objects {
				if o.GetKind() == "ConfigMap" && o.GetName() == "relaytls-config" {
					data, _ = o.Object["data"].(map[string]any)
				}
			}
			if data == nil {
				t.Fatalf("%s/%s: no relaytls-config ConfigMap", mode, role)
			}
			_, tok := data["tokenSecret"]
			if want := slices.Contains(tokenModes, mode); tok != want {
				t.Errorf("%s/%s: tokenSecret present = %v, want %v", mode, role, tok, want)
			}
			_, ep := data["endpoint"]
			if want := role == "workload" && slices.Contains(remoteModes, mode); ep != want {
				t.Errorf("%s/%s: endpoint present = %v, want %v", mode, role, ep, want)
			}
		}
	}
}
