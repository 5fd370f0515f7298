package frame

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// payloadPool keeps buffers of one size, large enough for a frame with a
// full payload. Unlike gRPC's default pool it does not clear a buffer it
// hands out: every user writes the bytes it reads (a local read, a copy of
// the received pieces), and clearing 64 KiB per frame was a quarter of the
// relay's CPU time in the throughput profile. Requests for less than half
// its size get a buffer of their own size, so that a small chunk does not
// hold a large buffer.
type payloadPool struct {
	p sync.Pool
}

// poolSize is a full payload plus room for a frame's header fields.
const poolSize = MaxPayload + 1024

var _ mem.BufferPool = (*payloadPool)(nil)

func (pp *payloadPool) Get(n int) *[]byte {
	if n > poolSize || n < poolSize/2 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := pp.p.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, poolSize)
	return &b
}

func (pp *payloadPool) Put(b *[]byte) {
	if cap(*b) == poolSize {
		pp.p.Put(b)
	}
}
