package frame

import (
	"io"

	"google.golang.org/grpc/mem"
)

// Read sizes of a Reader: it starts at startRead, doubles up to
// MaxPayload while reads fill its buffer, and halves down to minRead while
// they use less than a quarter of it.
const (
	minRead   = 4 << 10
	startRead = 32 << 10
)

// Reader reads a connection into pooled buffers whose size follows the
// reads: a bulk transfer reads MaxPayload at a time (fewer system calls
// and frames per byte), a quiet connection holds only a small buffer
// while it waits in Read. A zero Reader is ready to use.
type Reader struct {
	size int
}

// Size is the size of the next read.
func (r *Reader) Size() int {
	if r.size == 0 {
		r.size = startRead
	}
	return r.size
}

// Read reads at most limit bytes (at most the current read size) from src
// and returns them in a buffer the caller owns one reference to (nil when
// nothing was read), with the read's error. A read that fills less than
// half its buffer is copied into a buffer of its size, so that the
// memory held stays within about twice the bytes.
func (r *Reader) Read(src io.Reader, limit int) (mem.Buffer, error) {
	size := min(r.Size(), max(limit, 1))
	rb := pool.Get(size)
	n, err := src.Read(*rb)
	switch {
	case size < r.size: // limited by the caller: says nothing of the source
	case n == size && r.size < MaxPayload:
		r.size *= 2
	case n < size/4 && r.size > minRead:
		r.size /= 2
	}
	if n <= 0 {
		pool.Put(rb)
		return nil, err
	}
	if n < (cap(*rb)-headerRoom)/2 {
		c := mem.Copy((*rb)[:n], pool)
		pool.Put(rb)
		return c, err
	}
	*rb = (*rb)[:n]
	return mem.NewBuffer(rb, pool), err
}
