// Package issuance is the wire protocol of the issuance endpoint: the gRPC
// service a workload cluster's remote RelayIssuer calls to have a CSR signed
// by the management cluster (SPEC sections 1 and 4). Messages travel as JSON
// under the gRPC content-subtype "json"; the service is described by hand,
// so no code generator is needed to build or to call it.
//
// A call carries the cluster name, the CSR and the identity proof made with
// the relay identity token; the token itself never crosses the network.
package issuance

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

const (
	// ServiceName is the gRPC service name.
	ServiceName = "relaytls.issuance.v1.Issuance"
	// SignMethod is the full name of the Sign method.
	SignMethod = "/" + ServiceName + "/Sign"
	// ContentSubtype selects the JSON codec on both sides.
	ContentSubtype = "json"
	// MaxRequestBytes bounds a request; a CSR is a few KiB at most.
	MaxRequestBytes = 64 << 10
	// ErrorDomain is the domain of the ErrorInfo detail that carries the
	// management issuer's machine-readable refusal reason (for example
	// InvalidIdentityProof) next to the status message.
	ErrorDomain = "relaytls.io"
)

// SignRequest asks for a CSR to be signed.
type SignRequest struct {
	// Cluster is the workload cluster's name, the certificate's DNS SAN.
	Cluster string `json:"cluster"`
	// CSR is the PEM certificate signing request.
	CSR []byte `json:"csr"`
	// Proof is the identity proof for Cluster and CSR (SPEC section 4).
	Proof string `json:"proof"`
	// Usages are cert-manager key usage names ("client auth", ...).
	Usages []string `json:"usages,omitempty"`
	// DurationSeconds is the requested lifetime; the issuer may cap it.
	DurationSeconds int64 `json:"durationSeconds,omitempty"`
	// IsCA asks for a CA certificate (always refused by a relay issuer).
	IsCA bool `json:"isCA,omitempty"`
	// TrustBundle lists the SHA-256 fingerprints (hex, of the DER) of the
	// roots in the caller's trust bundle as it asks. The management cluster
	// records them as what the cluster holds: a root rotation waits for
	// them, not for what it sent, which may have been lost on the way.
	TrustBundle []string `json:"trustBundle,omitempty"`
}

// MaxTrustBundle bounds SignRequest.TrustBundle (4 KiB in the request's
// annotation): a relay bundle holds one root, two during a rotation; a
// bring-your-own bundle may hold a few more. A caller with a larger bundle
// reports none.
const MaxTrustBundle = 64

// SignResponse carries the signed chain.
type SignResponse struct {
	// Certificate is the PEM chain: leaf followed by intermediates.
	Certificate []byte `json:"certificate"`
	// CA is the PEM root the chain verifies against.
	CA []byte `json:"ca"`
}

// Server is implemented by the issuance endpoint.
type Server interface {
	Sign(context.Context, *SignRequest) (*SignResponse, error)
}

type codec struct{}

func (codec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (codec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (codec) Name() string                       { return ContentSubtype }

func init() {
	encoding.RegisterCodec(codec{})
}

func signHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(SignRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(Server).Sign(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: SignMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(Server).Sign(ctx, req.(*SignRequest))
	})
}

// ServiceDesc describes the service for grpc.Server.RegisterService.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Server)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Sign", Handler: signHandler}},
	Streams:     []grpc.StreamDesc{},
}

// Register registers s on a gRPC server.
func Register(g *grpc.Server, s Server) { g.RegisterService(&ServiceDesc, s) }

// Client calls an issuance endpoint.
type Client struct{ cc grpc.ClientConnInterface }

// NewClient wraps a connection.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// Sign calls the endpoint. On a refusal, the returned gRPC status carries the
// issuer's message and ReasonOf gives the reason.
func (c *Client) Sign(ctx context.Context, req *SignRequest, opts ...grpc.CallOption) (*SignResponse, error) {
	out := new(SignResponse)
	opts = append([]grpc.CallOption{grpc.CallContentSubtype(ContentSubtype)}, opts...)
	if err := c.cc.Invoke(ctx, SignMethod, req, out, opts...); err != nil {
		return nil, err
	}
	if len(out.Certificate) == 0 {
		return nil, fmt.Errorf("the issuance endpoint answered without a certificate")
	}
	return out, nil
}

// Refusal returns a gRPC status error with code, message and a reason in an
// ErrorInfo detail.
func Refusal(code codes.Code, reason, message string) error {
	st := status.New(code, message)
	if reason == "" {
		return st.Err()
	}
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// ReasonOf returns the reason a Refusal carries, or "".
func ReasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == ErrorDomain {
			return info.Reason
		}
	}
	return ""
}
