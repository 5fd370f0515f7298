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
	o, err := a.openTunnel(ctx, cancel, rc)
	if err != nil {
		a.cfg.Metrics.Tunnels.WithLabelValues("open_failed").Inc()
		a.cfg.Log.Warn("tunnel refused", "conn", rc.id, "error", message(err))
		return
	}
	if o.resumable {
		handedOff = true // runResumable releases rc
		a.runResumable(local, rc, o.stream, cancel, o.id)
		return
	}
	a.cfg.Metrics.ActiveTunnels.Inc()
	defer a.cfg.Metrics.ActiveTunnels.Dec()
	result := a.pipe(local, rc, o.stream, cancel, o.confirmed)
	a.cfg.Metrics.Tunnels.WithLabelValues(result).Inc()
}

// openedTunnel is a tunnel stream that the open frame went out on.
type openedTunnel struct {
	stream grpc.ClientStream
	// resumable tunnels go to runResumable, with the server's tunnel ID
	// when it already answered (nil: the answer arrives on the stream).
	resumable bool
	id        []byte
	// confirmed: the server's answer to the open was read; otherwise it
	// arrives in pipe.
	confirmed bool
}

// openTunnel opens a tunnel stream on rc and sends the open frame, within
// --open-timeout (the timer cancels ctx). In every case the first bytes
// may follow the open at once: only a resumable tunnel on a connection
// that has not yet resumed waits for the server's answer here.
func (a *Agent) openTunnel(ctx context.Context, cancel context.CancelFunc, rc *relayConn) (openedTunnel, error) {
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
		// One round trip: the server's answer (the tunnel ID) arrives on
		// the stream.
		openTimer.Stop()
		return openedTunnel{stream: stream, resumable: true}, nil
	}
	o := openedTunnel{stream: stream}
	var f frame.Frame
	if err == nil && a.cfg.ResumeWindow == 0 {
		openTimer.Stop()
	} else if err == nil {
		o.confirmed = true
		err = stream.RecvMsg(&f)
		if err == nil && f.Kind != frame.KindOpen {
			err = errors.New("the server answered open with a " + f.Kind.String() + " frame")
		}
	}
	if !openTimer.Stop() && err != nil && ctx.Err() != nil {
		err = errors.New("timed out waiting for the relay to open the tunnel")
	}
	if err != nil {
		return openedTunnel{}, err
	}
	if len(f.ID) > 0 && a.cfg.ResumeWindow > 0 {
		o.resumable, o.id = true, f.ID
	}
	return o, nil
}

// pipe copies a tunnel that does not resume both ways until it ends, and
// returns the result label of the tunnel metric.
func (a *Agent) pipe(local net.Conn, rc *relayConn, stream grpc.ClientStream, cancel context.CancelFunc, confirmed bool) string {
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		sendLocal(local, stream, cancel)
	}()
	result := a.receive(local, rc, stream, cancel, confirmed)
	if result != "ok" {
		cancel()
		// The reader in sendLocal stops at the deadline; handle's
		// deferred closeClean finishes with a FIN.
		closeWrite(local)
		_ = local.SetReadDeadline(time.Now().Add(drainWait))
	}
	<-upDone
	return result
}

// sendLocal sends what the local client writes as data frames, and half
// closes the stream at its EOF.
func sendLocal(local net.Conn, stream grpc.ClientStream, cancel context.CancelFunc) {
	var rd frame.Reader
	for {
		// The pooled buffer goes to gRPC without a copy.
		b, rerr := rd.Read(local, frame.MaxPayload)
		if b != nil {
			if err := stream.SendMsg(&frame.Frame{Kind: frame.KindData, Data: b}); err != nil {
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
}

// receive writes the server's data frames to the local client until the
// stream ends, and says how it ended: ok, broken, open_failed (the server
// refused the open) or local_error.
func (a *Agent) receive(local net.Conn, rc *relayConn, stream grpc.ClientStream, cancel context.CancelFunc, confirmed bool) string {
	for {
		var f frame.Frame
		err := stream.RecvMsg(&f)
		if errors.Is(err, io.EOF) {
			return "ok"
		}
		if err != nil {
			switch {
			case !confirmed:
				a.cfg.Log.Warn("tunnel refused", "conn", rc.id, "error", message(err))
				return "open_failed"
			case a.ctx.Err() == nil:
				a.cfg.Log.Warn("tunnel ended by the relay", "conn", rc.id, "error", message(err))
			}
			return "broken"
		}
		switch f.Kind {
		case frame.KindOpen:
			confirmed = true
		case frame.KindData:
			_, err := local.Write(f.Payload)
			f.Release()
			if err != nil {
				cancel()
				return "local_error"
			}
		case frame.KindClose:
			closeWrite(local)
		}
	}
}

func message(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}
