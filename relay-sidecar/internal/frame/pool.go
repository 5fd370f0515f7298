package frame

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// payloadPool keeps buffers in a few sizes, doubling from 4 KiB to a full
// payload, each with room for a frame's header fields. Unlike gRPC's
// default pool it does not clear a buffer it hands out: every user writes
// the bytes it reads (a local read, a copy of the received pieces), and
// clearing 64 KiB per frame was a quarter of the relay's CPU time in the
// throughput profile. A request gets the smallest size that holds it, so
// a small chunk does not hold a large buffer (at most about twice its
// size); a request below the smallest size or above the largest gets a
// buffer of its own.
type payloadPool struct {
	tiers [len(tierSizes)]sync.Pool
}

// tierSizes are the pooled buffer capacities.
var tierSizes = [...]int{
	4<<10 + headerRoom, 8<<10 + headerRoom, 16<<10 + headerRoom,
	32<<10 + headerRoom, 64<<10 + headerRoom, MaxPayload + headerRoom,
}

// headerRoom is room for a frame's header fields beside its payload.
const headerRoom = 1024

var _ mem.BufferPool = (*payloadPool)(nil)

func tierOf(n int) int {
	for i, s := range tierSizes {
		if n <= s {
			return i
		}
	}
	return -1
}

func (pp *payloadPool) Get(n int) *[]byte {
	i := tierOf(n)
	if i < 0 || n < tierSizes[0]/2 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := pp.tiers[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, tierSizes[i])
	return &b
}

func (pp *payloadPool) Put(b *[]byte) {
	if i := tierOf(cap(*b)); i >= 0 && cap(*b) == tierSizes[i] {
		pp.tiers[i].Put(b)
	}
}
