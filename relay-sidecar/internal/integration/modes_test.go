package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/access"
)

func TestEachModeCarriesTheAppStream(t *testing.T) {
	for _, mode := range []access.Mode{access.ModeInsecure, access.ModeTLS, access.ModeMTLS} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, envOpts{mode: mode})
			e.startApp()
			e.streaming(100)
			e.noLoss()
			waitFor(t, "the agent to be ready", 10*time.Second, func() bool { return e.ag.Ready() == nil })
			if err := e.srv.Ready(); err != nil {
				t.Fatalf("server not ready: %v", err)
			}
			if got := e.srvSide.metrics.ActiveTunnels; got == nil {
				t.Fatal("no tunnel gauge")
			}
			st := e.ag.Status()
			if mode != access.ModeInsecure && st.ServerSerial != e.srvSide.creds.Current().Serial() {
				t.Errorf("agent saw server serial %q, want %q", st.ServerSerial, e.srvSide.creds.Current().Serial())
			}
			if mode == access.ModeMTLS && !e.sawClientSerial(e.agSide.creds.Current().Serial()) {
				t.Errorf("server never saw the client serial %s", e.agSide.creds.Current().Serial())
			}
			if !strings.Contains(e.agSide.logs.String(), "relay connected") {
				t.Error("agent did not log its connection")
			}
		})
	}
}
