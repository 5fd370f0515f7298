package frame

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// Service and method names of the tunnel service.
const (
	ServiceName  = "relaytls.tunnel.v1.Relay"
	TunnelMethod = "/" + ServiceName + "/Tunnel"
	HelloMethod  = "/" + ServiceName + "/Hello"
)

// Metadata keys the agent sends on every call.
const (
	// MDMode is the agent's --mode; the server refuses a mismatch.
	MDMode = "relaytls-mode"
	// MDCluster is the agent's cluster name.
	MDCluster = "relaytls-cluster"
	// MDProof is the channel-bound tunnel proof (tls mode).
	MDProof = "relaytls-proof"
)

// Codec is the gRPC codec for *Frame messages. Both roles force it, so no
// protobuf is involved. It works on gRPC's buffer slices: a payload given
// as Frame.Data is sent without a copy, and a received payload points into
// the buffer gRPC read it into (one piece) or a pooled copy (several).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// pool is where payload buffers come from and go back to.
var pool = mem.DefaultBufferPool()

// Pool is the buffer pool of tunnel payloads.
func Pool() mem.BufferPool { return pool }

// Marshal encodes a *Frame.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Frame)
	if !ok {
		return nil, fmt.Errorf("tunnel codec cannot marshal %T", v)
	}
	switch {
	case f.Data != nil:
		d := f.Data
		f.Data = nil
		return mem.BufferSlice{mem.SliceBuffer(f.header(d.Len())), d}, nil
	case len(f.Payload) > 0:
		// The caller may reuse Payload once SendMsg returns, before gRPC
		// wrote it: a pooled copy.
		return mem.BufferSlice{mem.SliceBuffer(f.header(len(f.Payload))), mem.Copy(f.Payload, pool)}, nil
	}
	return mem.BufferSlice{mem.SliceBuffer(f.header(0))}, nil
}

// Unmarshal decodes into a *Frame. Its Payload stays valid until
// Frame.Release.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return fmt.Errorf("tunnel codec cannot unmarshal into %T", v)
	}
	buf := data.MaterializeToBuffer(pool)
	if err := f.Unmarshal(buf.ReadOnlyData()); err != nil {
		buf.Free()
		return err
	}
	if len(f.ID) > 0 {
		f.ID = append([]byte(nil), f.ID...)
	}
	if len(f.Payload) == 0 {
		f.Payload = nil
		buf.Free()
		return nil
	}
	f.held = buf
	return nil
}

// Name is the gRPC content-subtype.
func (Codec) Name() string { return "relaytls-frame" }

// TunnelStreamDesc describes the bidirectional Tunnel stream.
var TunnelStreamDesc = grpc.StreamDesc{
	StreamName:    "Tunnel",
	ServerStreams: true,
	ClientStreams: true,
}

// Handlers is what a server implements.
type Handlers interface {
	Tunnel(stream grpc.ServerStream) error
	Hello(stream grpc.ServerStream) error
}

// ServiceDesc builds the service description for h. Hello is a stream too
// (one frame each way) so that it uses the same codec path as tunnels.
func ServiceDesc(h Handlers) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*Handlers)(nil),
		Streams: []grpc.StreamDesc{
			{StreamName: "Tunnel", ServerStreams: true, ClientStreams: true,
				Handler: func(_ any, s grpc.ServerStream) error { return h.Tunnel(s) }},
			{StreamName: "Hello", ServerStreams: true, ClientStreams: true,
				Handler: func(_ any, s grpc.ServerStream) error { return h.Hello(s) }},
		},
	}
}

// HelloStreamDesc describes the Hello exchange.
var HelloStreamDesc = grpc.StreamDesc{StreamName: "Hello", ServerStreams: true, ClientStreams: true}
