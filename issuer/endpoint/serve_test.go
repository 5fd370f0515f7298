package endpoint

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/policy"
	"github.com/relaytls/relaytls/test/testpki"
)

// preProtoCodec is the codec remote issuers used before the protocol was
// generated: JSON under the content-subtype "json". The test passes it per
// call; nothing registers it.
type preProtoCodec struct{}

func (preProtoCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (preProtoCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (preProtoCodec) Name() string                       { return "json" }

// preProtoRequest is a SignRequest as that protocol wrote it.
type preProtoRequest struct {
	Cluster string `json:"cluster"`
	CSR     []byte `json:"csr"`
	Proof   string `json:"proof"`
}

// serveForTest serves the endpoint's gRPC server (the one Start serves, on
// plain TCP) on a loopback port and returns a connection to it.
func serveForTest(t *testing.T) *grpc.ClientConn {
	t.Helper()
	r := &Runnable{Server: newTestServer(t, Config{})}
	g, _ := r.grpcServer(insecure.NewCredentials())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// TestWireProtocol calls the endpoint's own gRPC server: protobuf calls reach
// the handler, a call in the pre-proto JSON encoding is refused with a reason
// that says what to do, and no codec but protobuf is registered.
func TestWireProtocol(t *testing.T) {
	if c := encoding.GetCodecV2("json"); c != nil {
		t.Fatalf("a codec %q is registered globally; the issuance protocol is protobuf only", c.Name())
	}
	cc := serveForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"c1"}})

	t.Run("protobuf calls reach the handler", func(t *testing.T) {
		// Every field arrives: the handler names the invalid cluster, then
		// the CSR it decoded, then the duration.
		for _, tc := range []struct {
			req     *issuancev1.SignRequest
			reason  string
			message string
		}{
			{&issuancev1.SignRequest{Cluster: "Not_A_Label", Csr: testpki.CSRPEM(der), Proof: "p"}, policy.ReasonInvalidCluster, ""},
			{&issuancev1.SignRequest{Cluster: "c1", Csr: []byte("not pem"), Proof: "p"}, policy.ReasonInvalidCSR, "exactly one PEM CERTIFICATE REQUEST"},
			{&issuancev1.SignRequest{Cluster: "c1", Csr: testpki.CSRPEM(der)}, policy.ReasonMissingIdentityProof, "no identity proof"},
			{&issuancev1.SignRequest{Cluster: "c1", Csr: testpki.CSRPEM(der), Proof: "p", DurationSeconds: -5}, policy.ReasonInvalidDuration, "got -5"},
			{&issuancev1.SignRequest{Cluster: "c1", Csr: testpki.CSRPEM(der), Proof: "p", TrustBundle: []string{"AB"}}, policy.ReasonInvalidTrustBundle, "trustBundle[0]"},
		} {
			_, err := issuancev1.NewIssuanceClient(cc).Sign(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument || issuance.ReasonOf(err) != tc.reason || !strings.Contains(status.Convert(err).Message(), tc.message) {
				t.Errorf("%v: got %v (reason %q); want InvalidArgument %s saying %q", tc.req, err, issuance.ReasonOf(err), tc.reason, tc.message)
			}
		}
	})

	t.Run("a request larger than MaxRequestBytes is refused by gRPC", func(t *testing.T) {
		big := &issuancev1.SignRequest{Cluster: "c1", Csr: make([]byte, issuance.MaxRequestBytes+1), Proof: "p"}
		if _, err := issuancev1.NewIssuanceClient(cc).Sign(ctx, big); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("got %v; want ResourceExhausted", err)
		}
	})

	t.Run("the health service reports the issuance service", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: issuance.ServiceName})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("got %v, %v; want SERVING", resp, err)
		}
	})

	t.Run("a pre-proto remote issuer is told to upgrade", func(t *testing.T) {
		var out struct{}
		err := cc.Invoke(ctx, issuancev1.Issuance_Sign_FullMethodName,
			&preProtoRequest{Cluster: "c1", CSR: testpki.CSRPEM(der), Proof: "p"}, &out, grpc.ForceCodec(preProtoCodec{}))
		st := status.Convert(err)
		if st.Code() != codes.Unimplemented || issuance.ReasonOf(err) != issuance.ReasonUnsupportedEncoding ||
			!strings.Contains(st.Message(), `encoded as "json"`) || !strings.Contains(st.Message(), "upgrade relay-issuer on the workload cluster") {
			t.Fatalf("got %v (reason %q); want Unimplemented %s telling to upgrade", err, issuance.ReasonOf(err), issuance.ReasonUnsupportedEncoding)
		}
	})
}
