package resume

import "sync"

// Budget is a cap on the unacknowledged bytes several sessions hold
// together (the server gives each cluster one). A session checks it before
// every read of its local connection and waits while the budget is spent,
// so the bytes held by all its sessions stay below Limit plus one read
// (frame.MaxPayload) per session.
type Budget struct {
	limit int

	mu   sync.Mutex
	used int
	// freed is closed and replaced whenever bytes are released.
	freed chan struct{}
}

// NewBudget makes a budget of limit bytes (at least 1).
func NewBudget(limit int) *Budget {
	return &Budget{limit: max(limit, 1), freed: make(chan struct{})}
}

// Limit is the budget's cap.
func (b *Budget) Limit() int { return b.limit }

// Used is the number of bytes currently held against the budget.
func (b *Budget) Used() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// wait returns nil when the budget has room, or a channel that is closed
// when bytes are released.
func (b *Budget) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used < b.limit {
		return nil
	}
	return b.freed
}

func (b *Budget) add(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used += n
	if n < 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
	b.mu.Unlock()
}
