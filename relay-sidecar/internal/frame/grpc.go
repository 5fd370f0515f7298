package frame

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
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
// protobuf is involved.
type Codec struct{}

var _ encoding.Codec = Codec{}

// Marshal encodes a *Frame.
func (Codec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*Frame)
	if !ok {
		return nil, fmt.Errorf("tunnel codec cannot marshal %T", v)
	}
	return f.Marshal(), nil
}

// Unmarshal decodes into a *Frame. The payload is copied because gRPC may
// reuse the buffer.
func (Codec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return fmt.Errorf("tunnel codec cannot unmarshal into %T", v)
	}
	buf := make([]byte, len(data))
	copy(buf, data)
	return f.Unmarshal(buf)
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
