package resume

import (
	"testing"
	"time"
)

// Two sessions share a budget: while the peer acknowledges nothing, their
// buffered bytes together stay below the budget plus one read each, and an
// acknowledgement lets reading go on.
func TestSessionsShareABudget(t *testing.T) {
	const limit = 128 << 10
	b := NewBudget(limit)
	type end struct {
		s      *Session
		client interface{ Write([]byte) (int, error) }
	}
	var ends []end
	for range 2 {
		local, client := tcpPair(t)
		s := New(local, Options{Limit: 1 << 20, Budget: b})
		s.Start()
		t.Cleanup(func() { s.Abort("test over", false) })
		ends = append(ends, end{s, client})
		go func() {
			buf := make([]byte, 16<<10)
			for {
				if _, err := client.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Used() < limit {
		if time.Now().After(deadline) {
			t.Fatalf("the sessions read only %d bytes", b.Used())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // they would read more now if they could
	held := ends[0].s.Buffered() + ends[1].s.Buffered()
	if bound := limit + 2*(BudgetReserve+32<<10); held > bound || b.Used() != held {
		t.Fatalf("the sessions hold %d bytes (budget counts %d), want at most %d", held, b.Used(), bound)
	}
	// Acknowledge all of the first session's bytes: the budget has room
	// again and reading resumes.
	s := ends[0].s
	s.mu.Lock()
	if err := s.ack(s.end); err != nil {
		s.mu.Unlock()
		t.Fatal(err)
	}
	s.mu.Unlock()
	deadline = time.Now().Add(10 * time.Second)
	for s.Buffered() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("reading did not resume after an acknowledgement freed the budget")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
