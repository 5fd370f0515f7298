package frame

import (
	"bytes"
	"io"
	"testing"
)

// chunks returns, per Read, the next of its pieces.
type chunks struct{ parts [][]byte }

func (c *chunks) Read(b []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if len(c.parts[0]) == 0 {
		c.parts = c.parts[1:]
	}
	return n, nil
}

// TestReaderSizes checks that a Reader's reads grow to MaxPayload while
// they fill its buffer, shrink while they are small, keep the bytes
// intact, and that a small read does not hold a large buffer.
func TestReaderSizes(t *testing.T) {
	var want, got []byte
	src := &chunks{}
	for i := range 6 {
		p := bytes.Repeat([]byte{byte(i)}, MaxPayload)
		src.parts = append(src.parts, p)
		want = append(want, p...)
	}
	var r Reader
	sizes := []int{}
	for r.Size() < MaxPayload {
		sizes = append(sizes, r.Size())
		b, err := r.Read(src, MaxPayload)
		if err != nil || b == nil {
			t.Fatalf("read: %v, %v", b, err)
		}
		got = append(got, b.ReadOnlyData()...)
		b.Free()
		if len(sizes) > 10 {
			t.Fatalf("the read size did not grow to %d: %v", MaxPayload, sizes)
		}
	}
	if sizes[0] != startRead {
		t.Errorf("first read size %d, want %d", sizes[0], startRead)
	}
	// A read limited by the caller does not grow the size.
	b, err := r.Read(src, 100)
	if err != nil || b.Len() != 100 || r.Size() != MaxPayload {
		t.Fatalf("limited read: %d bytes, %v, size %d", b.Len(), err, r.Size())
	}
	got = append(got, b.ReadOnlyData()...)
	b.Free()
	for {
		b, err := r.Read(src, MaxPayload)
		if b != nil {
			got = append(got, b.ReadOnlyData()...)
			b.Free()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d equal ones", len(got), len(want))
	}

	// Small reads: the size shrinks and each is copied into a small buffer.
	src = &chunks{}
	for range 8 {
		src.parts = append(src.parts, []byte("hello"), bytes.Repeat([]byte{'x'}, 3000))
	}
	r = Reader{size: MaxPayload}
	for len(src.parts) > 0 {
		b, err := r.Read(src, MaxPayload)
		if err != nil {
			t.Fatal(err)
		}
		if n := b.Len(); n == 3000 {
			if c := cap(b.ReadOnlyData()); c > 2*(n+headerRoom) {
				t.Errorf("a %d-byte read holds a buffer of %d bytes", n, c)
			}
		}
		b.Free()
	}
	if r.Size() != minRead {
		t.Errorf("after small reads the read size is %d, want %d", r.Size(), minRead)
	}
}
