package issuance

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
)

// jsonNames lists a message's fields by their JSON names, in field order.
func jsonNames(m protoreflect.MessageDescriptor) []string {
	var names []string
	for i := range m.Fields().Len() {
		names = append(names, m.Fields().Get(i).JSONName())
	}
	return names
}

// TestFieldsKeepTheirJSONNames: the generated messages have the fields, and
// the JSON names, the hand-written JSON protocol had.
func TestFieldsKeepTheirJSONNames(t *testing.T) {
	req := (&issuancev1.SignRequest{}).ProtoReflect().Descriptor()
	if got, want := jsonNames(req), []string{"cluster", "csr", "proof", "usages", "durationSeconds", "isCA", "trustBundle"}; !slices.Equal(got, want) {
		t.Errorf("SignRequest fields %v; want %v", got, want)
	}
	resp := (&issuancev1.SignResponse{}).ProtoReflect().Descriptor()
	if got, want := jsonNames(resp), []string{"certificate", "ca"}; !slices.Equal(got, want) {
		t.Errorf("SignResponse fields %v; want %v", got, want)
	}

	// A request as the JSON protocol wrote it reads into the same values.
	type oldRequest struct {
		Cluster         string   `json:"cluster"`
		CSR             []byte   `json:"csr"`
		Proof           string   `json:"proof"`
		Usages          []string `json:"usages,omitempty"`
		DurationSeconds int64    `json:"durationSeconds,omitempty"`
		IsCA            bool     `json:"isCA,omitempty"`
		TrustBundle     []string `json:"trustBundle,omitempty"`
	}
	old := oldRequest{Cluster: "c1", CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\n"), Proof: "p",
		Usages: []string{"client auth"}, DurationSeconds: 3600, IsCA: true, TrustBundle: []string{strings.Repeat("ab", 32)}}
	raw, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	var got issuancev1.SignRequest
	if err := protojson.Unmarshal(raw, &got); err != nil {
		t.Fatalf("the JSON protocol's request %s does not read as SignRequest: %v", raw, err)
	}
	want := &issuancev1.SignRequest{Cluster: old.Cluster, Csr: old.CSR, Proof: old.Proof, Usages: old.Usages,
		DurationSeconds: old.DurationSeconds, IsCa: old.IsCA, TrustBundle: old.TrustBundle}
	if !proto.Equal(&got, want) {
		t.Fatalf("read %v; want %v", &got, want)
	}
}

// TestServiceName: the name the health service reports is the generated
// service's.
func TestServiceName(t *testing.T) {
	if got := issuancev1.Issuance_ServiceDesc.ServiceName; got != ServiceName {
		t.Fatalf("generated service %q; ServiceName %q", got, ServiceName)
	}
	if got := issuancev1.File_issuer_issuance_v1_issuance_proto.Services().Get(0).FullName(); string(got) != ServiceName {
		t.Fatalf("issuance.proto's service %q; ServiceName %q", got, ServiceName)
	}
	if want := "/" + ServiceName + "/Sign"; issuancev1.Issuance_Sign_FullMethodName != want {
		t.Fatalf("Sign is %q; want %q", issuancev1.Issuance_Sign_FullMethodName, want)
	}
}

func TestCheckEncoding(t *testing.T) {
	for _, ct := range [][]string{nil, {"application/grpc"}, {"application/grpc+proto"}, {"Application/GRPC+Proto; charset=utf-8"}, {"application/grpc;x=y"}} {
		if err := CheckEncoding(ct); err != nil {
			t.Errorf("%q: %v; want accepted", ct, err)
		}
	}
	for _, tc := range []struct {
		ct  []string
		sub string
	}{{[]string{"application/grpc+json"}, "json"}, {[]string{"application/grpc+JSON; charset=utf-8"}, "json"}, {[]string{"application/grpc+cbor"}, "cbor"}} {
		err := CheckEncoding(tc.ct)
		st := status.Convert(err)
		if st.Code() != codes.Unimplemented || ReasonOf(err) != ReasonUnsupportedEncoding ||
			!strings.Contains(st.Message(), `encoded as "`+tc.sub+`"`) || !strings.Contains(st.Message(), "upgrade relay-issuer") {
			t.Errorf("%q: got %v (reason %q); want Unimplemented %s naming %q and the upgrade", tc.ct, err, ReasonOf(err), ReasonUnsupportedEncoding, tc.sub)
		}
	}
}

func TestRefusalReason(t *testing.T) {
	err := Refusal(codes.PermissionDenied, "InvalidIdentityProof", "no")
	if ReasonOf(err) != "InvalidIdentityProof" || status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "no" {
		t.Fatalf("got %v (reason %q)", err, ReasonOf(err))
	}
	if r := ReasonOf(Refusal(codes.Unavailable, "", "later")); r != "" {
		t.Fatalf("a refusal without a reason carries %q", r)
	}
}
