package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
)

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// drainWait is how long a local connection that is being closed is still
// read, so that its close is a FIN and not a reset.
const drainWait = 2 * time.Second

// closeClean ends local with a FIN: what the client still sends is read
// and dropped for up to drainWait (until it closes its side), because
// closing a socket with unread bytes sends a reset instead.
func closeClean(local net.Conn) {
	closeWrite(local)
	_ = local.SetReadDeadline(time.Now().Add(drainWait))
	_, _ = io.Copy(io.Discard, local)
	_ = local.Close()
}

// handle carries one local connection as a tunnel.
func (a *Agent) handle(local net.Conn) {
	rc := a.pick()
	handedOff := false
	defer func() {
		if !handedOff {
			// A resumable tunnel's session releases rc and closes local.
			a.release(rc)
			closeClean(local)
		}
	}()

	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	openTimer := time.AfterFunc(a.cfg.OpenTimeout, cancel)
	stream, err := rc.cc.NewStream(ctx, &frame.TunnelStreamDesc, frame.TunnelMethod, grpc.WaitForReady(true))
	if err == nil {
		open := &frame.Frame{Kind: frame.KindOpen}
		if a.cfg.ResumeWindow > 0 {
			open.Flags = frame.FlagResumable
		}
		err = stream.SendMsg(open)
		if err != nil {
			err = recvErr(stream, err)
		}
	}
	if err == nil && a.cfg.ResumeWindow > 0 && rc.resumable.Load() {
		// One round trip: the first bytes follow the open at once; the
		// server's answer (the tunnel ID) arrives on the stream.
		openTimer.Stop()
		handedOff = true // runResumable releases rc
		a.runResumable(local, rc, stream, cancel, nil)
		return
	}
	var f frame.Frame
	if err == nil {
		err = stream.RecvMsg(&f)
		if err == nil && f.Kind != frame.KindOpen {
			err = errors.New("the server answered open with a " + f.Kind.String() + " frame")
		}
	}
	if !openTimer.Stop() && err != nil && ctx.Err() != nil {
		err = errors.New("timed out waiting for the relay to open the tunnel")
	}
	if err != nil {
		a.cfg.Metrics.Tunnels.WithLabelValues("open_failed").Inc()
		a.cfg.Log.Warn("tunnel refused", "conn", rc.id, "error", message(err))
		return
	}
	if len(f.ID) > 0 && a.cfg.ResumeWindow > 0 {
		handedOff = true // runResumable releases rc
		a.runResumable(local, rc, stream, cancel, f.ID)
		return
	}
	a.cfg.Metrics.ActiveTunnels.Inc()
	defer a.cfg.Metrics.ActiveTunnels.Dec()

	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		buf := make([]byte, frame.MaxPayload)
		for {
			n, rerr := local.Read(buf)
			if n > 0 {
				if err := stream.SendMsg(&frame.Frame{Kind: frame.KindData, Payload: buf[:n]}); err != nil {
					return
				}
			}
			if errors.Is(rerr, io.EOF) {
				_ = stream.CloseSend()
				return
			}
			if rerr != nil {
				cancel()
				return
			}
		}
	}()
	var result string
	for {
		var f frame.Frame
		err := stream.RecvMsg(&f)
		if errors.Is(err, io.EOF) {
			result = "ok"
			break
		}
		if err != nil {
			result = "broken"
			if a.ctx.Err() == nil {
				a.cfg.Log.Warn("tunnel ended by the relay", "conn", rc.id, "error", message(err))
			}
			break
		}
		switch f.Kind {
		case frame.KindData:
			_, err := local.Write(f.Payload)
			f.Release()
			if err != nil {
				result = "local_error"
				cancel()
			}
		case frame.KindClose:
			closeWrite(local)
		}
		if result != "" {
			break
		}
	}
	if result != "ok" {
		cancel()
		// The reader below stops at the deadline; the deferred
		// closeClean finishes with a FIN.
		closeWrite(local)
		_ = local.SetReadDeadline(time.Now().Add(drainWait))
	}
	<-upDone
	a.cfg.Metrics.Tunnels.WithLabelValues(result).Inc()
}

func message(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}
