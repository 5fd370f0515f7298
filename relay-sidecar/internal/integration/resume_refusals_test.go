package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/server"
	"github.com/relaytls/relaytls/test/testpki"
)

// relayClient is a hand-made agent connection (mtls with cert).
func relayClient(t *testing.T, e *env, cert tls.Certificate, name string) *grpc.ClientConn {
	t.Helper()
	md := &mdCreds{mode: string(access.ModeMTLS), cluster: name, secure: true}
	cc, err := grpc.NewClient("passthrough:///"+e.srvAddr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(e, cert))),
		grpc.WithPerRPCCredentials(md), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frame.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// openTunnel opens a resumable tunnel and returns its stream and ID.
func openTunnel(t *testing.T, cc *grpc.ClientConn) (grpc.ClientStream, context.CancelFunc, []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	s, err := cc.NewStream(ctx, &frame.TunnelStreamDesc, frame.TunnelMethod)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&frame.Frame{Kind: frame.KindOpen, Flags: frame.FlagResumable}); err != nil {
		t.Fatal(err)
	}
	var f frame.Frame
	if err := s.RecvMsg(&f); err != nil {
		t.Fatal(err)
	}
	if f.Kind != frame.KindOpen || len(f.ID) != frame.IDLen {
		t.Fatalf("open answered with %s and a %d-byte ID", f.Kind, len(f.ID))
	}
	return s, cancel, f.ID
}

func tryResume(t *testing.T, cc *grpc.ClientConn, id []byte, off uint64) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := cc.NewStream(ctx, &frame.TunnelStreamDesc, frame.TunnelMethod)
	if err != nil {
		return err
	}
	if err := s.SendMsg(&frame.Frame{Kind: frame.KindResume, ID: id, Offset: off}); err != nil {
		return recvErrOf(s, err)
	}
	var f frame.Frame
	if err := s.RecvMsg(&f); err != nil {
		return err
	}
	if f.Kind != frame.KindResume {
		return fmt.Errorf("resume answered with %s", f.Kind)
	}
	return nil
}

func recvErrOf(s grpc.ClientStream, err error) error {
	var f frame.Frame
	if rerr := s.RecvMsg(&f); rerr != nil {
		return rerr
	}
	return err
}

func TestResumeRefusals(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeMTLS, resume: time.Second})
	ours := keyPair(t, issue(t, e.ca, clientLeaf()))
	other := keyPair(t, issue(t, e.ca, testpki.Leaf{DNSNames: []string{"cluster-b"}, Usages: clientLeaf().Usages}))
	cc := relayClient(t, e, ours, cluster)
	live, _, id := openTunnel(t, cc)
	_ = live

	check := func(name string, err error, code codes.Code, reason string) {
		t.Helper()
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), reason) {
			t.Errorf("%s: got %v, want %s with %q", name, err, code, reason)
		}
		if got := resumes(e.srvSide.metrics, reason); got < 1 {
			t.Errorf("%s: resumes_total{result=%q} = %v", name, reason, got)
		}
	}
	// Another cluster's identity.
	check("other cluster", tryResume(t, relayClient(t, e, other, "cluster-b"), id, 0), codes.PermissionDenied, server.ResumeOtherIdentity)
	// An ID the server never gave.
	unknown := make([]byte, frame.IDLen)
	_, _ = rand.Read(unknown)
	check("unknown ID", tryResume(t, cc, unknown, 0), codes.NotFound, server.ResumeUnknownTunnel)
	// An offset the server never sent.
	check("offset never sent", tryResume(t, cc, id, 1<<30), codes.FailedPrecondition, server.ResumeOffsetNeverSent)
	// None of that touched the live tunnel: a resume at 0 takes it over.
	if err := tryResume(t, cc, id, 0); err != nil {
		t.Fatalf("the owner's resume was refused: %v", err)
	}

	// An expired ID: the tunnel lost its stream and the window passed. The
	// first tunnel lost its stream too when the owner's resume above ended,
	// and its window started earlier: both must have expired before the
	// second one surely has.
	_, cancel2, id2 := openTunnel(t, cc)
	cancel2()
	waitFor(t, "the resume windows of both tunnels to end", 10*time.Second, func() bool {
		return tunnels(e.srvSide.metrics, server.ResumeWindowExpired) >= 2
	})
	check("expired ID", tryResume(t, cc, id2, 0), codes.NotFound, server.ResumeExpiredTunnel)

	// A revoked identity: the agent's CA leaves the trust bundle; its
	// connection is still up, but it cannot resume.
	agentRoot := newCA(t, "agent root")
	e.srvSide.write(t, e.srvSide.bundle, map[string][]byte{"ca.crt": testpki.Bundle(e.ca, agentRoot)})
	bundleLoaded(t, e.srvSide.creds, e.ca, agentRoot)
	cc3 := relayClient(t, e, keyPair(t, issue(t, agentRoot, clientLeaf())), cluster)
	_, _, id3 := openTunnel(t, cc3)
	e.srvSide.write(t, e.srvSide.bundle, map[string][]byte{"ca.crt": e.ca.PEM})
	bundleLoaded(t, e.srvSide.creds, e.ca)
	check("revoked identity", tryResume(t, cc3, id3, 0), codes.PermissionDenied, server.ResumeIdentityRevoked)

	// No tunnel ID in any log.
	for _, tid := range [][]byte{id, id2, id3} {
		for _, logs := range []string{e.srvSide.logs.String(), e.agSide.logs.String()} {
			if strings.Contains(logs, fmt.Sprintf("%x", tid)) || bytes.Contains([]byte(logs), tid) {
				t.Errorf("a tunnel ID appears in a log")
			}
		}
	}
}
