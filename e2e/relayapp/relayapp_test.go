package relayapp

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/relaytls/relaytls/test/poll"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.EventuallyEvery(t, 10*time.Millisecond, 20*time.Second, what, poll.Seen(func(context.Context) (bool, string) { return cond(), "" }))
}

func TestHeartbeatsBothWaysAndBreaks(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Options{Interval: 5 * time.Millisecond, PayloadSize: 16})
	go s.Serve(lis)
	a := NewAgent(lis.Addr().String(), Options{Interval: 5 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- a.Run(t.Context()) }()

	waitFor(t, "heartbeats both ways", func() bool {
		return s.Stats().Received > 20 && a.Stats().Received > 20
	})
	if st := a.Stats(); st.Gaps != 0 || st.Breaks != 0 {
		t.Fatalf("agent counted gaps or breaks on a clean stream: %+v", st)
	}

	// Cutting the server is a break for the agent, which reopens the stream
	// on a new server at the same address.
	addr := lis.Addr().String()
	s.Stop()
	waitFor(t, "the agent to see the break", func() bool { return a.Stats().Breaks >= 1 })
	if a.LastError() == "" {
		t.Error("break without an error")
	}
	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s2 := NewServer(Options{Interval: 5 * time.Millisecond})
	go s2.Serve(lis2)
	t.Cleanup(s2.Stop)
	waitFor(t, "the stream to reopen", func() bool { return s2.Stats().Received > 5 && a.Stats().Streams >= 2 })
	if st := s2.Stats(); st.Gaps != 0 {
		t.Fatalf("new stream has gaps: %+v", st)
	}
}

func TestCodecRejectsMalformed(t *testing.T) {
	var h Heartbeat
	for _, b := range [][]byte{nil, {1, 2, 3}, {2, 0, 0, 0, 0, 0, 0, 0, 1}} {
		if err := (codec{}).Unmarshal(b, &h); err == nil {
			t.Errorf("accepted %v", b)
		}
	}
	b, _ := (codec{}).Marshal(&Heartbeat{Seq: 7, Payload: []byte("x")})
	if err := (codec{}).Unmarshal(b, &h); err != nil || h.Seq != 7 || string(h.Payload) != "x" {
		t.Fatalf("round trip: %+v %v", h, err)
	}
}
