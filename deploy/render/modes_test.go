package render_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/deploy/render"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// TestUserSecretsAgreeWithRelayctl: the Secrets the chart tells the user to
// bring (NOTES.txt, and its install-time preflight) are the ones relayctl's
// init preflight and check look for, in every mode and role.
func TestUserSecretsAgreeWithRelayctl(t *testing.T) {
	if !slices.Equal(modes.Names(), render.Modes) {
		t.Fatalf("relayctl modes %v differ from the chart's %v", modes.Names(), render.Modes)
	}
	for _, m := range modes.All() {
		for _, role := range render.Roles {
			r := chart(t, render.ProfileValues(m.Name, role))
			var fromChart []string
			_, list, _ := strings.Cut(r.Notes, "Secrets you bring")
			list, _, _ = strings.Cut(list, "\n\n")
			for _, line := range strings.Split(list, "\n") {
				if name, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "- "), ":"); ok && strings.HasPrefix(strings.TrimSpace(line), "- ") {
					fromChart = append(fromChart, name)
				}
			}
			server, err := m.ServerSecretName("")
			if err != nil {
				t.Fatal(err)
			}
			var fromRelayctl []string
			for _, s := range m.UserSecrets(role, server) {
				fromRelayctl = append(fromRelayctl, s.Name)
			}
			slices.Sort(fromChart)
			slices.Sort(fromRelayctl)
			if !slices.Equal(fromChart, fromRelayctl) {
				t.Errorf("%s/%s: the chart asks for Secrets %v, relayctl for %v", m.Name, role, fromChart, fromRelayctl)
			}
		}
	}
}
