package integration

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/relay-sidecar/internal/agent"
	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/metrics"
)

// strictServer answers a tunnel's open only after the tunnel's first bytes
// arrived: an agent that waits for the answer before reading its client
// never gets one.
type strictServer struct {
	got chan string
}

func (s *strictServer) Hello(st grpc.ServerStream) error {
	var f frame.Frame
	if err := st.RecvMsg(&f); err != nil {
		return err
	}
	return st.SendMsg(&frame.Frame{Kind: frame.KindHello, Reason: cluster, Flags: frame.FlagResumable})
}

func (s *strictServer) Tunnel(st grpc.ServerStream) error {
	var open, data frame.Frame
	if err := st.RecvMsg(&open); err != nil {
		return err
	}
	if open.Kind != frame.KindOpen || open.Flags&frame.FlagResumable == 0 {
		return status.Errorf(codes.InvalidArgument, "want a resumable open, got %s", open.Kind)
	}
	if err := st.RecvMsg(&data); err != nil {
		return err
	}
	s.got <- string(data.Payload)
	if err := st.SendMsg(&frame.Frame{Kind: frame.KindOpen, ID: make([]byte, frame.IDLen)}); err != nil {
		return err
	}
	// Echo the bytes back at offset 0, acknowledging them.
	n := uint64(len(data.Payload))
	if err := st.SendMsg(&frame.Frame{Kind: frame.KindData, Payload: data.Payload, Ack: n}); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// A resumable tunnel opens in one round trip: the agent sends the client's
// first bytes with the open instead of waiting for the server's answer.
func TestResumableTunnelOpensInOneRoundTrip(t *testing.T) {
	srv := &strictServer{got: make(chan string, 1)}
	g := grpc.NewServer(grpc.ForceServerCodecV2(frame.Codec{}))
	g.RegisterService(frame.ServiceDesc(srv), srv)
	lis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	ag := must[*agent.Agent](t)(agent.New(agent.Config{Mode: access.ModeInsecure, ServerAddr: lis.Addr().String(), Cluster: cluster,
		ResumeWindow: 10 * time.Second, OpenTimeout: 5 * time.Second, Metrics: metrics.New("agent", nil),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(ag.Close)
	agLis := must[net.Listener](t)(net.Listen("tcp", "127.0.0.1:0"))
	go ag.Serve(agLis)
	waitFor(t, "the agent to connect", 20*time.Second, func() bool { return ag.Ready() == nil })

	c := must[net.Conn](t)(net.Dial("tcp", agLis.Addr().String()))
	defer c.Close()
	if _, err := c.Write([]byte("first bytes")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-srv.got:
		if got != "first bytes" {
			t.Fatalf("the server got %q with the open", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent waited for the open's answer before sending the client's bytes (two round trips)")
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	echo := make([]byte, len("first bytes"))
	if _, err := io.ReadFull(c, echo); err != nil || string(echo) != "first bytes" {
		t.Fatalf("echo %q, %v", echo, err)
	}
}
