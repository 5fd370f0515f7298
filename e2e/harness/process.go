package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Proc is a started command whose stdout and stderr go to a log file.
type Proc struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error

	stopOnce sync.Once
}

// StartProc starts bin with args; its output goes to logDir/name.log, and
// each stdout line is also given to onLine when it is not nil. The process
// gets its own process group, so a Ctrl-C in the terminal reaches only the
// caller, which stops it with Stop.
func StartProc(name, logDir, bin string, args []string, onLine func(string)) (*Proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Stderr = logFile
	var pw *io.PipeWriter
	if onLine != nil {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		cmd.Stdout = io.MultiWriter(logFile, pw)
		go func() {
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				onLine(sc.Text())
			}
			_, _ = io.Copy(io.Discard, pr)
		}()
	} else {
		cmd.Stdout = logFile
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if pw != nil {
			pw.Close()
		}
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM, waits up to grace, then kills the process group. It
// returns the process's exit error when it did not end cleanly on SIGTERM.
func (p *Proc) Stop(grace time.Duration) error {
	var err error
	p.stopOnce.Do(func() {
		if ok, _ := p.Exited(); ok {
			err = p.err
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			err = p.err
		case <-t.C:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			err = errors.New(p.Name + " did not stop within " + grace.String() + " of SIGTERM and was killed")
		}
	})
	return err
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }
