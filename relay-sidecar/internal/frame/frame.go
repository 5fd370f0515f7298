// Package frame defines the tunnel wire format of the relay sidecar: a small,
// versioned binary frame carried as the message of a gRPC bidirectional
// stream, the gRPC codec that (un)marshals it, and the service description
// both roles share.
//
// Encoding of one frame (version 1):
//
//	byte 0    version (1)
//	byte 1    kind (Open, Data, Close, Hello)
//	then zero or more fields: uvarint tag, uvarint length, length bytes
//
// Fields carry a tag so that new ones can be added without breaking older
// peers: a decoder skips tags it does not know. Tags 3-5 are reserved for
// resumable tunnels (tunnel ID, byte offset, acknowledged offset) and kinds
// 5-6 for their Ack and Resume frames; a peer that does not know a kind
// refuses it with an error naming it.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the frame format version this package writes.
const Version = 1

// Kind is the type of a frame.
type Kind uint8

const (
	// KindOpen starts a tunnel (agent to server) and confirms it (server to
	// agent, once the upstream is connected).
	KindOpen Kind = 1
	// KindData carries tunnel bytes in Payload.
	KindData Kind = 2
	// KindClose says the sender will write no more bytes (a half-close);
	// Reason may say why.
	KindClose Kind = 3
	// KindHello is the agent's authentication check on a fresh connection
	// and the server's answer, naming the identity it verified in Reason.
	KindHello Kind = 4
	// Kinds 5 (ack) and 6 (resume) are reserved for resumable tunnels.
)

func (k Kind) String() string {
	switch k {
	case KindOpen:
		return "open"
	case KindData:
		return "data"
	case KindClose:
		return "close"
	case KindHello:
		return "hello"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Field tags.
const (
	tagPayload = 1
	tagReason  = 2
	// 3 tunnel ID, 4 offset, 5 acknowledged offset: reserved.
)

// MaxPayload is the largest Data payload a sender puts in one frame.
const MaxPayload = 32 << 10

// Frame is one message of a tunnel stream.
type Frame struct {
	Kind    Kind
	Payload []byte
	Reason  string
}

// Errors returned by Unmarshal.
var (
	ErrShort   = errors.New("tunnel frame is shorter than its 2-byte header")
	ErrVersion = errors.New("tunnel frame has an unsupported version")
)

// Marshal encodes f.
func (f *Frame) Marshal() []byte {
	n := 2
	if len(f.Payload) > 0 {
		n += 1 + binary.MaxVarintLen64 + len(f.Payload)
	}
	if f.Reason != "" {
		n += 1 + binary.MaxVarintLen64 + len(f.Reason)
	}
	b := make([]byte, 2, n)
	b[0], b[1] = Version, byte(f.Kind)
	if len(f.Payload) > 0 {
		b = appendField(b, tagPayload, f.Payload)
	}
	if f.Reason != "" {
		b = appendField(b, tagReason, []byte(f.Reason))
	}
	return b
}

func appendField(b []byte, tag uint64, v []byte) []byte {
	b = binary.AppendUvarint(b, tag)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// Unmarshal decodes b into f. Payload aliases b.
func (f *Frame) Unmarshal(b []byte) error {
	if len(b) < 2 {
		return ErrShort
	}
	if b[0] != Version {
		return fmt.Errorf("%w: got %d, this sidecar speaks %d", ErrVersion, b[0], Version)
	}
	*f = Frame{Kind: Kind(b[1])}
	switch f.Kind {
	case KindOpen, KindData, KindClose, KindHello:
	default:
		return fmt.Errorf("tunnel frame has unknown kind %d", b[1])
	}
	rest := b[2:]
	for len(rest) > 0 {
		tag, n := binary.Uvarint(rest)
		if n <= 0 {
			return errors.New("tunnel frame has a malformed field tag")
		}
		rest = rest[n:]
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return fmt.Errorf("tunnel frame field %d has a malformed or overlong length", tag)
		}
		v := rest[n : n+int(l)]
		rest = rest[n+int(l):]
		switch tag {
		case tagPayload:
			f.Payload = v
		case tagReason:
			f.Reason = string(v)
		}
		// Unknown tags are skipped on purpose (forward compatibility).
	}
	return nil
}
