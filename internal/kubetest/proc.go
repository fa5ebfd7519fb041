package kubetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/childproc"
)

// proc is one component: a child in the control plane's namespace (nsenter
// execs it in place, so the PID is the component's), logging to a file.
type proc struct {
	name  string
	log   string
	ready time.Duration // how long it took to serve
	*childproc.Proc
}

// start runs bin with args inside the namespace, in a process group of its
// own (a Ctrl-C of go test is not delivered to it twice) and with a
// parent-death signal (childproc): it dies with the test binary.
func (cp *ControlPlane) start(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(cp.Dir, name+".log")}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + cp.NetnsPath(), "--", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.Proc, err = childproc.Start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cp.procs = append(cp.procs, p)
	return p, nil
}

// stop kills the component by PID and waits for it to be reaped. A test
// cluster has nothing to flush: SIGKILL spares the API server's graceful
// shutdown delay.
func (p *proc) stop() error {
	select {
	case <-p.Done():
		return nil
	default:
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("kill %s (pid %d): %w", p.name, p.Pid(), err)
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) not reaped 10 s after SIGKILL", p.name, p.Pid())
	}
}

// LogTails returns the last n lines of each component's log, for a failed
// test's output.
func (cp *ControlPlane) LogTails(n int) string {
	var b strings.Builder
	for _, p := range cp.procs {
		fmt.Fprintf(&b, "--- %s (%s), last %d lines:\n%s\n", p.name, p.log, n, tail(p.log, n))
	}
	return b.String()
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
