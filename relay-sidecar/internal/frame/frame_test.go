package frame

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Frame
	}{
		{"open", Frame{Kind: KindOpen}},
		{"data", Frame{Kind: KindData, Payload: bytes.Repeat([]byte{0xab}, MaxPayload)}},
		{"close with reason", Frame{Kind: KindClose, Reason: "upstream closed"}},
		{"hello", Frame{Kind: KindHello, Reason: "cluster-a"}},
		{"resumable open", Frame{Kind: KindOpen, ID: bytes.Repeat([]byte{7}, IDLen), Flags: FlagResumable}},
		{"data at offset", Frame{Kind: KindData, Payload: []byte("x"), Offset: 1 << 40, Ack: 300}},
		{"ack", Frame{Kind: KindAck, Ack: 12345}},
		{"resume", Frame{Kind: KindResume, ID: []byte("0123456789abcdef"), Offset: 99}},
		{"abort", Frame{Kind: KindClose, Reason: "gone", Flags: FlagAbort, Offset: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Frame
			if err := got.Unmarshal(tc.f.Marshal()); err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.f.Kind || !bytes.Equal(got.Payload, tc.f.Payload) || got.Reason != tc.f.Reason ||
				!bytes.Equal(got.ID, tc.f.ID) || got.Offset != tc.f.Offset || got.Ack != tc.f.Ack || got.Flags != tc.f.Flags {
				t.Fatalf("got %+v, want %+v", got, tc.f)
			}
		})
	}
}

func TestUnknownFieldsAreSkipped(t *testing.T) {
	// A future peer adds tags 9 and 12; this version must still read the
	// payload.
	b := []byte{Version, byte(KindData)}
	b = appendField(b, 12, []byte("something new"))
	b = appendField(b, tagPayload, []byte("bytes"))
	b = appendField(b, 9, nil)
	var f Frame
	if err := f.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if string(f.Payload) != "bytes" {
		t.Fatalf("payload %q", f.Payload)
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"version 2", []byte{2, byte(KindData)}, "unsupported version"},
		{"unknown kind", []byte{Version, 77}, "unknown kind 77"},
		{"overlong field", []byte{Version, byte(KindData), tagPayload, 100, 1}, "overlong"},
		{"truncated tag", []byte{Version, byte(KindData), 0x80}, "malformed field tag"},
		{"bad offset", []byte{Version, byte(KindData), tagOffset, 2, 0x80, 0x80}, "well-formed number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f Frame
			err := f.Unmarshal(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var f Frame
	if err := f.Unmarshal([]byte{3, 1}); !errors.Is(err, ErrVersion) {
		t.Fatalf("version error not wrapped: %v", err)
	}
}

func TestCodecRejectsOtherTypes(t *testing.T) {
	if _, err := (Codec{}).Marshal("x"); err == nil {
		t.Fatal("marshal of a string accepted")
	}
	var s string
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer{1, 2}}, &s); err == nil {
		t.Fatal("unmarshal into a string accepted")
	}
}

// The codec sends a payload given as Data without copying it and gives
// gRPC the one reference it was handed; a received payload split over
// several buffers decodes to the same bytes, and Release frees it.
func TestCodecBufferSlices(t *testing.T) {
	payload := make([]byte, MaxPayload)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	owner := mem.Copy(payload, Pool())
	view := owner.Slice(100, len(payload)) // a second reference
	in := &Frame{Kind: KindData, Offset: 100, Ack: 9, ID: []byte("0123456789abcdef"), Data: view}
	out, err := Codec{}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if in.Data != nil {
		t.Fatal("the codec kept the Data reference it handed to gRPC")
	}
	if len(out) != 2 || &out[1].ReadOnlyData()[0] != &owner.ReadOnlyData()[100] {
		t.Fatal("the payload was copied instead of sent as it is")
	}
	wire := out.Materialize()
	out.Free()
	owner.Free() // both references gone: back to the pool

	// Received in pieces, as HTTP/2 DATA frames arrive.
	var pieces mem.BufferSlice
	for rest := wire; len(rest) > 0; {
		n := min(len(rest), 5000)
		pieces = append(pieces, mem.Copy(rest[:n], Pool()))
		rest = rest[n:]
	}
	var got Frame
	if err := (Codec{}).Unmarshal(pieces, &got); err != nil {
		t.Fatal(err)
	}
	pieces.Free()
	if got.Kind != KindData || got.Offset != 100 || got.Ack != 9 || string(got.ID) != "0123456789abcdef" ||
		!bytes.Equal(got.Payload, payload[100:]) {
		t.Fatalf("decoded %v offset %d ack %d id %q, %d payload bytes", got.Kind, got.Offset, got.Ack, got.ID, len(got.Payload))
	}
	got.Release()
	if got.Payload != nil {
		t.Fatal("Release left the payload in place")
	}

	// A plain Payload is copied, so the caller may reuse its buffer.
	scratch := []byte("reused")
	out, err = Codec{}.Marshal(&Frame{Kind: KindData, Payload: scratch})
	if err != nil {
		t.Fatal(err)
	}
	copy(scratch, "XXXXXX")
	var plain Frame
	if err := (Codec{}).Unmarshal(out, &plain); err != nil || string(plain.Payload) != "reused" {
		t.Fatalf("a reused Payload buffer changed what was sent: %q, %v", plain.Payload, err)
	}
}
