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
// peers: a decoder skips tags it does not know. Resumable tunnels use tags
// 3 (tunnel ID), 4 (byte offset), 5 (acknowledged offset) and 6 (flags), and
// kinds 5 (Ack) and 6 (Resume); a peer that does not know a kind refuses it
// with an error naming it.
//
// Resumable tunnels: the agent asks for one with FlagResumable on its Open;
// a server that keeps tunnels answers Open with the tunnel ID. From then on
// each Data frame carries the offset of its first byte in the sender's byte
// stream, and each side acknowledges (Ack frames, or the Ack field of any
// frame) how many bytes it has delivered, the peer's Close counting as one
// more byte. After a cut the agent sends Resume with the ID and the offset it
// has delivered; the server answers Resume with its own delivered offset,
// and both sides send again from the offset the other one named.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/mem"
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
	// KindAck acknowledges, in Ack, the bytes delivered so far.
	KindAck Kind = 5
	// KindResume re-attaches a tunnel (ID) to a new stream: Offset is what
	// the sender has delivered of the peer's bytes.
	KindResume Kind = 6
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
	case KindAck:
		return "ack"
	case KindResume:
		return "resume"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Field tags.
const (
	tagPayload = 1
	tagReason  = 2
	tagID      = 3
	tagOffset  = 4
	tagAck     = 5
	tagFlags   = 6
)

// Flags of a frame.
const (
	// FlagResumable on the agent's Open asks for a resumable tunnel.
	FlagResumable uint64 = 1 << iota
	// FlagAbort on a Close says the tunnel is given up, not finished: the
	// peer drops it at once instead of keeping it for a resume.
	FlagAbort
)

// IDLen is the length of a tunnel ID (random bytes).
const IDLen = 16

// MaxPayload is the largest Data payload a sender puts in one frame (a
// receiver takes any size up to gRPC's 4 MiB message limit). 128 KiB
// reads and frames took the relay from about 213 to 133 read and write
// system calls per MiB carried, against 32 KiB ones (BenchmarkThroughput*).
const MaxPayload = 128 << 10

// WriteBufferSize is the agent's gRPC write buffer: a flush carries up to
// a full payload, and crypto/tls's records of it leave in one socket write
// (internal/cork). gRPC takes it from a pool only while it has something
// to write. The server keeps gRPC's 32 KiB one (see server.New).
const WriteBufferSize = MaxPayload

// Frame is one message of a tunnel stream.
type Frame struct {
	Kind    Kind
	Payload []byte
	Reason  string
	// ID is the tunnel ID (resumable tunnels).
	ID []byte
	// Offset is the stream offset of a Data payload's first byte, of a
	// Close, or (Resume) the bytes the sender has delivered.
	Offset uint64
	// Ack is how many of the peer's bytes the sender has delivered.
	Ack   uint64
	Flags uint64

	// Data, when set on a frame to send, is the payload instead of
	// Payload: the codec hands it to gRPC without a copy, and gRPC frees
	// the reference when it has written it. The sender gives up one
	// reference per SendMsg.
	Data mem.Buffer
	// held is the received buffer Payload points into (see Release).
	held mem.Buffer
}

// Release returns the buffer a received frame's Payload points into to
// the pool; Payload must not be used afterwards. Without a Release the
// buffer is simply garbage collected.
func (f *Frame) Release() {
	if f.held != nil {
		f.held.Free()
		f.held = nil
	}
	f.Payload = nil
}

// header encodes every field but the payload, then the payload's tag and
// length, so that the payload bytes can follow as they are.
func (f *Frame) header(payloadLen int) []byte {
	b := make([]byte, 2, 2+3*(2+binary.MaxVarintLen64)+2+len(f.Reason)+binary.MaxVarintLen64+2+len(f.ID)+binary.MaxVarintLen64+1)
	b[0], b[1] = Version, byte(f.Kind)
	if f.Reason != "" {
		b = appendField(b, tagReason, []byte(f.Reason))
	}
	if len(f.ID) > 0 {
		b = appendField(b, tagID, f.ID)
	}
	b = appendUint(b, tagOffset, f.Offset)
	b = appendUint(b, tagAck, f.Ack)
	b = appendUint(b, tagFlags, f.Flags)
	if payloadLen > 0 {
		b = binary.AppendUvarint(b, tagPayload)
		b = binary.AppendUvarint(b, uint64(payloadLen))
	}
	return b
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
	if len(f.ID) > 0 {
		n += 2 + len(f.ID)
	}
	n += 3 * (2 + binary.MaxVarintLen64)
	b := make([]byte, 2, n)
	b[0], b[1] = Version, byte(f.Kind)
	if len(f.Payload) > 0 {
		b = appendField(b, tagPayload, f.Payload)
	}
	if f.Reason != "" {
		b = appendField(b, tagReason, []byte(f.Reason))
	}
	if len(f.ID) > 0 {
		b = appendField(b, tagID, f.ID)
	}
	b = appendUint(b, tagOffset, f.Offset)
	b = appendUint(b, tagAck, f.Ack)
	b = appendUint(b, tagFlags, f.Flags)
	return b
}

// appendUint appends a non-zero number as a uvarint field.
func appendUint(b []byte, tag, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = binary.AppendUvarint(b, tag)
	b = binary.AppendUvarint(b, uint64(binary.PutUvarint(make([]byte, binary.MaxVarintLen64), v)))
	return binary.AppendUvarint(b, v)
}

func parseUint(tag uint64, v []byte) (uint64, error) {
	x, n := binary.Uvarint(v)
	if n <= 0 || n != len(v) {
		return 0, fmt.Errorf("tunnel frame field %d is not a well-formed number", tag)
	}
	return x, nil
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
	case KindOpen, KindData, KindClose, KindHello, KindAck, KindResume:
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
		case tagID:
			f.ID = v
		case tagOffset, tagAck, tagFlags:
			x, err := parseUint(tag, v)
			if err != nil {
				return err
			}
			switch tag {
			case tagOffset:
				f.Offset = x
			case tagAck:
				f.Ack = x
			default:
				f.Flags = x
			}
		}
		// Unknown tags are skipped on purpose (forward compatibility).
	}
	return nil
}
