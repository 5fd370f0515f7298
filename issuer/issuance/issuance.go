// Package issuance holds what the generated issuance protocol (package
// issuancev1 in ./v1, from issuance.proto) does not: the bounds both sides
// apply, the refusal carried in a gRPC status, and the check that refuses a
// call encoded in anything but protobuf (a remote issuer from before the
// protocol was generated sends JSON).
//
// A call carries the cluster name, the CSR and the identity proof made with
// the relay identity token; the token itself never crosses the network.
package issuance

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// ServiceName is the gRPC service name (issuance.proto's
	// relaytls.issuance.v1.Issuance); the health service reports it.
	ServiceName = "relaytls.issuance.v1.Issuance"
	// MaxRequestBytes bounds a request; a CSR is a few KiB at most.
	MaxRequestBytes = 64 << 10
	// MaxTrustBundle bounds SignRequest.trust_bundle (4 KiB in the request's
	// annotation): a relay bundle holds one root, two during a rotation; a
	// bring-your-own bundle may hold a few more. A caller with a larger
	// bundle reports none.
	MaxTrustBundle = 64
	// ErrorDomain is the domain of the ErrorInfo detail that carries the
	// management issuer's machine-readable refusal reason (for example
	// InvalidIdentityProof) next to the status message.
	ErrorDomain = "relaytls.io"
	// ReasonUnsupportedEncoding refuses a call whose messages are not
	// protobuf: a remote issuer from before the generated protocol sends
	// JSON (content-type application/grpc+json).
	ReasonUnsupportedEncoding = "UnsupportedEncoding"
)

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

// CheckEncoding refuses a call whose content-type names a message encoding
// other than protobuf ("application/grpc" and "application/grpc+proto" pass).
// No other codec is registered, and gRPC would otherwise decode the bytes of,
// say, a JSON request as protobuf and answer with an unmarshalling error that
// does not say what is wrong. The refusal is Unimplemented with reason
// UnsupportedEncoding; a remote issuer retries it until it is upgraded.
func CheckEncoding(contentTypes []string) error {
	for _, ct := range contentTypes {
		sub, ok := contentSubtype(ct)
		if !ok || sub == "" || sub == "proto" {
			continue
		}
		return Refusal(codes.Unimplemented, ReasonUnsupportedEncoding, fmt.Sprintf(
			"this issuance endpoint speaks the generated protocol %s with protobuf messages; the call's messages are encoded as %q "+
				"(content-type %s), as a remote issuer from before that protocol sends them: upgrade relay-issuer on the workload cluster",
			ServiceName, sub, ct))
	}
	return nil
}

// contentSubtype returns the part after "application/grpc+" (up to a ";"),
// "" for plain "application/grpc", and false for another content-type.
func contentSubtype(ct string) (string, bool) {
	ct = strings.ToLower(strings.TrimSpace(ct))
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	if !ok {
		return "", false
	}
	switch {
	case rest == "" || rest[0] == ';':
		return "", true
	case rest[0] == '+':
		sub, _, _ := strings.Cut(rest[1:], ";")
		return strings.TrimSpace(sub), true
	}
	return "", false
}
