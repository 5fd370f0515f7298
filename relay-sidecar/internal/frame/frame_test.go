package frame

import (
	"bytes"
	"errors"
	"strings"
	"testing"
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
	if err := (Codec{}).Unmarshal([]byte{1, 2}, &s); err == nil {
		t.Fatal("unmarshal into a string accepted")
	}
}
