package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/relay-sidecar/internal/frame"
	"github.com/relaytls/relaytls/relay-sidecar/internal/resume"
)

// tunnel is a resumable tunnel on the agent: the relay connection its
// stream uses and the channel that moves it to a newer connection.
type tunnel struct {
	rc   *relayConn
	move chan struct{}
}

// attachTo picks the connection for t's next stream and counts t on it.
func (a *Agent) attachTo(t *tunnel) (*relayConn, chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rc := a.cur
	rc.active.Add(1)
	t.rc, t.move = rc, make(chan struct{})
	return rc, t.move
}

// moveTunnels detaches every tunnel on old so that it resumes on the
// current connection (make-before-break).
func (a *Agent) moveTunnels(old *relayConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for t := range a.live {
		if t.rc == old {
			close(t.move)
			t.rc, t.move = nil, make(chan struct{})
			n++
		}
	}
	if n > 0 {
		a.cfg.Log.Info("moving live tunnels to the new connection", "old_conn", old.id, "new_conn", a.cur.id, "tunnels", n)
	}
}

// runResumable carries local over a resumable tunnel whose first stream is
// open on rc, resuming it after every loss of its stream.
// id is nil when the open was sent without waiting for the answer: the
// session takes the ID from the server's Open frame.
func (a *Agent) runResumable(local net.Conn, rc *relayConn, stream grpc.ClientStream, cancel context.CancelFunc, id []byte) {
	m := a.cfg.Metrics
	var tunnelID atomic.Pointer[[]byte]
	if id != nil {
		tunnelID.Store(&id)
	}
	o := resume.Options{Limit: a.cfg.ResumeBuffer, OnBuffered: func(d int) { m.Buffered.Add(float64(d)) }}
	if id == nil {
		o.OnOpen = func(id []byte) { tunnelID.CompareAndSwap(nil, &id) }
	}
	sess := resume.New(local, o)
	t := &tunnel{rc: rc, move: make(chan struct{})}
	a.mu.Lock()
	a.live[t] = struct{}{}
	mv := t.move
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.live, t)
		a.mu.Unlock()
	}()
	m.ActiveTunnels.Inc()
	defer m.ActiveTunnels.Dec()
	gen, _ := sess.Takeover()
	sess.Start()
	from := uint64(0)
	result := "ok"
	for {
		err := sess.Attach(stream, gen, from, mv, nil, true, cancel)
		cancel()
		a.release(rc)
		if err == nil {
			break
		}
		var ab *resume.Aborted
		if errors.As(err, &ab) {
			result = "aborted"
			a.cfg.Log.Warn("tunnel aborted", "conn", rc.id, "reason", ab.Reason, "by_server", ab.ByPeer)
			break
		}
		idp := tunnelID.Load()
		if idp == nil || len(*idp) == 0 {
			// The server never confirmed the tunnel (its upstream may be
			// down): nothing to resume.
			result = "open_failed"
			reason := message(err)
			a.cfg.Log.Warn("tunnel refused", "conn", rc.id, "error", reason)
			sess.Abort("the relay did not open the tunnel: "+reason, false)
			break
		}
		if !errors.Is(err, resume.ErrDetached) && a.ctx.Err() == nil {
			a.cfg.Log.Info("tunnel lost its stream; resuming", "conn", rc.id, "error", message(err))
		}
		var rerr error
		rc, stream, cancel, mv, gen, from, rerr = a.resumeTunnel(t, sess, *idp)
		if rerr != nil {
			result = "resume_failed"
			reason := message(rerr)
			a.cfg.Log.Warn("tunnel closed: it could not be resumed", "reason", reason)
			sess.Abort("could not resume: "+reason, false)
			break
		}
	}
	m.Tunnels.WithLabelValues(result).Inc()
}

var errAgentClosed = errors.New("the agent is stopping")

// permanent reports whether a refused resume is final.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}

// resumeTunnel re-attaches t on the current connection, retrying until the
// resume window ends or the server refuses for good.
func (a *Agent) resumeTunnel(t *tunnel, sess *resume.Session, id []byte) (*relayConn, grpc.ClientStream, context.CancelFunc, chan struct{}, uint64, uint64, error) {
	deadline := time.Now().Add(a.cfg.ResumeWindow)
	retry := a.backoff()
	m := a.cfg.Metrics
	for {
		if a.ctx.Err() != nil {
			return nil, nil, nil, nil, 0, 0, errAgentClosed
		}
		if !time.Now().Before(deadline) {
			m.Resumes.WithLabelValues("window_expired").Inc()
			return nil, nil, nil, nil, 0, 0, fmt.Errorf("no resume within the %s resume window", a.cfg.ResumeWindow)
		}
		select {
		case <-sess.Done():
			return nil, nil, nil, nil, 0, 0, errors.New("the local connection ended")
		default:
		}
		rc, mv := a.attachTo(t)
		ctx, cancel := context.WithCancel(a.ctx)
		stopTimer := time.AfterFunc(time.Until(deadline), cancel)
		// Moved while waiting for this connection: try the newer one.
		go func() {
			select {
			case <-mv:
				cancel()
			case <-ctx.Done():
			}
		}()
		stream, err := rc.cc.NewStream(ctx, &frame.TunnelStreamDesc, frame.TunnelMethod, grpc.WaitForReady(true))
		var gen uint64
		var reply frame.Frame
		if err == nil {
			var delivered uint64
			gen, delivered = sess.Takeover()
			err = stream.SendMsg(&frame.Frame{Kind: frame.KindResume, ID: id, Offset: delivered})
			if err != nil {
				err = recvErr(stream, err)
			}
		}
		if err == nil {
			err = stream.RecvMsg(&reply)
			if err == nil && reply.Kind != frame.KindResume {
				err = status.Errorf(codes.InvalidArgument, "the server answered resume with a %s frame", reply.Kind)
			}
		}
		if err == nil {
			if cerr := sess.CheckPeerOffset(reply.Offset); cerr != nil {
				err = status.Errorf(codes.InvalidArgument, "the server resumes at a bad offset: %v", cerr)
			}
		}
		if err == nil && stopTimer.Stop() {
			m.Resumes.WithLabelValues("ok").Inc()
			a.cfg.Log.Info("tunnel resumed", "conn", rc.id, "server_offset", reply.Offset)
			return rc, stream, cancel, mv, gen, reply.Offset, nil
		}
		stopTimer.Stop()
		cancel()
		a.release(rc)
		if err == nil {
			continue // the window ended just now
		}
		if permanent(err) {
			m.Resumes.WithLabelValues("refused").Inc()
			return nil, nil, nil, nil, 0, 0, err
		}
		a.cfg.Log.Debug("tunnel resume failed; retrying", "conn", rc.id, "error", message(err))
		select {
		case <-a.ctx.Done():
		case <-time.After(min(retry.Step(), time.Until(deadline))):
		}
	}
}
