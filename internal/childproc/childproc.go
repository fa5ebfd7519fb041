// Package childproc starts the processes tests and the sim run beside them
// (weftd, etcd, containerd, iperf3, tcpdump) tied to the life of the
// process that starts them: the kernel kills each (SIGKILL) when that
// process dies, however it dies — a panic, the test timeout, kill -9 — so
// that no daemon outlives the test binary that owned it.
package childproc

import (
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
)

// Proc is a started child; Wait reaps it.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd with a parent-death signal (PR_SET_PDEATHSIG, SIGKILL),
// keeping whatever else cmd.SysProcAttr asks for (Setpgid, say).
//
// The kernel sends that signal when the thread that forked the child
// exits, not the process (prctl(2)), and the Go runtime retires a thread
// when a goroutine locked to it ends (as netdev does with a thread left in
// another namespace). So the fork happens on a goroutine locked to its
// thread, and that goroutine stays locked until it has reaped the child:
// the forking thread lives exactly as long as the child needs it to.
// Callers must not call cmd.Wait themselves; use Wait or Done.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return p, nil
}

// Pid is the child's process ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the child to exit and returns what cmd.Wait returned.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}
