package kubecp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/childproc"
	"github.com/weftnet/weft/internal/procstat"
)

// Component is one process of the control plane: a child in its namespace
// (nsenter execs it in place, so PID is the component's), logging to Log.
type Component struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`
	// Ready is how long it took to serve.
	Ready time.Duration `json:"ready"`

	// done is closed once this process has reaped it; nil in a
	// ControlPlane decoded by another process (Stop polls /proc then).
	done <-chan struct{}
	wait func() error
}

// Done is closed when the component has exited; a nil channel (never
// ready) for a component this process did not start.
func (c *Component) Done() <-chan struct{} { return c.done }

// Wait returns how the component exited, once it has; nil for a
// component this process did not start.
func (c *Component) Wait() error {
	if c.wait == nil {
		return nil
	}
	return c.wait()
}

// start runs bin with args inside the namespace, in a process group of its
// own (a Ctrl-C of the caller is not delivered to it twice). Unless
// Options.Detach, with a parent-death signal (childproc): it dies with the
// process that started it.
func (cp *ControlPlane) start(name, bin string, args ...string) (*Component, error) {
	c := &Component{Name: name, Log: filepath.Join(cp.Dir, name+".log")}
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + cp.NetnsPath(), "--", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cp.opts.Detach {
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		done := make(chan struct{})
		var werr error
		go func() { werr = cmd.Wait(); close(done) }()
		c.done, c.wait = done, func() error { <-done; return werr }
	} else {
		p, err := childproc.Start(cmd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c.done, c.wait = p.Done(), p.Wait
	}
	c.PID = cmd.Process.Pid
	cp.Components = append(cp.Components, c)
	return c, nil
}

// stop kills the component by PID and waits until it is gone. A control
// plane it started has nothing to flush: SIGKILL spares the API server's
// graceful shutdown delay. A component this process did not start is
// killed only if its command line still names dir (the PID was not
// reused), and waited for through /proc (its parent, init, reaps it).
func (c *Component) stop(dir string) error {
	if c.done != nil {
		select {
		case <-c.done:
			return nil
		default:
		}
	} else if c.PID <= 0 || !Owns(c.PID, dir) {
		return nil
	}
	if err := syscall.Kill(c.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("kill %s (pid %d): %w", c.Name, c.PID, err)
	}
	deadline := time.After(10 * time.Second)
	for {
		if c.done != nil {
			select {
			case <-c.done:
				return nil
			case <-deadline:
				return fmt.Errorf("%s (pid %d) not reaped 10 s after SIGKILL", c.Name, c.PID)
			}
		}
		if !procstat.Alive(c.PID) {
			return nil
		}
		select {
		case <-deadline:
			return fmt.Errorf("%s (pid %d) still running 10 s after SIGKILL", c.Name, c.PID)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Owns reports whether process pid is a component of the control plane
// whose Dir is dir: an argument of its command line names a path inside
// dir (every component's does: data, certificates, kubeconfig). Callers
// use it to find components a crashed starter did not record.
func Owns(pid int, dir string) bool {
	if dir == "" || pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	for _, a := range bytes.Split(b, []byte{0}) {
		if _, v, ok := strings.Cut(string(a), "="); ok && strings.HasPrefix(v, prefix) {
			return true
		}
		if strings.HasPrefix(string(a), prefix) {
			return true
		}
	}
	return false
}

// LogTails returns the last n lines of each component's log, for an error
// report.
func (cp *ControlPlane) LogTails(n int) string {
	var b strings.Builder
	for _, c := range cp.Components {
		fmt.Fprintf(&b, "--- %s (%s), last %d lines:\n%s\n", c.Name, c.Log, n, LogTail(c.Log, n))
	}
	return b.String()
}

// StartTimes says how long each component took to serve.
func (cp *ControlPlane) StartTimes() string {
	var b strings.Builder
	for i, c := range cp.Components {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s ready in %.1f s", c.Name, c.Ready.Seconds())
	}
	return b.String()
}

// LogTail returns the last n lines of the file at path (a component's
// log), or the error that kept it from being read, in parentheses.
func LogTail(path string, n int) string {
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
