package server

import (
	"fmt"
	"testing"
	"time"
)

// Ended tunnels are remembered oldest first and forgotten from the front:
// after goneKeep, or when goneMax are kept.
func TestRegistryForgetsOldestEndedTunnels(t *testing.T) {
	var r registry
	end := func(id string) {
		tu := &tunnel{id: id}
		r.add(tu)
		r.remove(tu, "finished "+id)
	}
	end("a")
	end("b")
	r.mu.Lock()
	r.order[0].at = r.order[0].at.Add(-goneKeep - time.Second)
	r.gone["a"] = gone{reason: r.gone["a"].reason, at: r.order[0].at}
	r.mu.Unlock()
	end("c")
	if _, g, _ := r.lookup("a"); g.reason != "" {
		t.Fatalf("a tunnel that ended more than %s ago is still remembered: %q", goneKeep, g.reason)
	}
	if _, g, _ := r.lookup("b"); g.reason != "finished b" {
		t.Fatalf("a recent end was forgotten: %q", g.reason)
	}
	for i := range goneMax + 10 {
		end(fmt.Sprint("n", i))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.gone) > goneMax || len(r.order) > goneMax {
		t.Fatalf("%d ended tunnels remembered (%d queued), want at most %d", len(r.gone), len(r.order), goneMax)
	}
	if _, ok := r.gone["n9"]; ok {
		t.Fatalf("the oldest ends were kept past goneMax")
	}
	if _, ok := r.gone[fmt.Sprint("n", goneMax+9)]; !ok {
		t.Fatalf("the newest end was not remembered")
	}
}
