// Package etcdtest runs a real etcd server (the `etcd` binary on PATH) for
// tests: one member on 127.0.0.1, free ports, a temporary data directory,
// and controls to pause, kill and restart it.
package etcdtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/childproc"
	"github.com/weftnet/weft/internal/testenv"
)

// Binary is the etcd executable looked up on PATH.
const Binary = "etcd"

// Require returns the path of the etcd binary. If there is none it fails t
// under CI (CI set non-empty: `make deps` installs etcd-server, so a
// missing binary is a broken set-up) and skips t otherwise.
func Require(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath(Binary)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("etcd not found on PATH and CI=%q is set: run `make deps` (installs the etcd-server package)", os.Getenv("CI"))
	}
	t.Skipf("etcd not found on PATH (run `make deps` or apt-get install etcd-server): %v", err)
	return ""
}

// CurrentEnv names the environment variable holding the path of a current
// etcd (v3.5 or later), built from the Go module proxy by `make tools`
// (tools/etcd); Debian's etcd on PATH is 3.4.
const CurrentEnv = "WEFT_ETCD"

// RequireCurrent returns the path of the current etcd named by $WEFT_ETCD.
// If it is unset or not executable it fails t under CI (`make test`
// builds it and sets the variable, so a missing binary is a broken set-up)
// and skips t otherwise.
func RequireCurrent(t testing.TB) string {
	t.Helper()
	path := os.Getenv(CurrentEnv)
	err := errors.New("not set")
	if path != "" {
		var st os.FileInfo
		if st, err = os.Stat(path); err == nil && (st.IsDir() || st.Mode()&0o111 == 0) {
			err = errors.New("not an executable file")
		}
		if err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("$%s (%q): %v, and CI=%q is set: run the tests through `make test`, which builds etcd (tools/etcd) and sets it",
			CurrentEnv, path, err, os.Getenv("CI"))
	}
	t.Skipf("$%s (%q): %v (`make test` builds a current etcd and sets it)", CurrentEnv, path, err)
	return ""
}

// StartBinary is Start with the etcd binary at bin.
func StartBinary(t testing.TB, bin string) *Server {
	t.Helper()
	return start(t, bin, dataDir(t))
}

// Server is one running etcd member.
type Server struct {
	bin        string
	dir        string
	clientPort int
	peerPort   int
	logs       syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{} // closed when cmd has exited
}

// Start starts etcd (Require decides what happens without a binary),
// waits until it is healthy, and stops it when t ends; on failure the
// server's log is attached to t.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, Require(t), dataDir(t))
}

// StartOnDisk is Start with the data directory on the test's temporary
// directory (normally a disk) instead of /dev/shm, so that etcd's fsyncs
// cost what they cost in production. For benchmarks.
func StartOnDisk(t testing.TB) *Server {
	t.Helper()
	return start(t, Require(t), t.TempDir())
}

func start(t testing.TB, bin, dir string) *Server {
	t.Helper()
	s := &Server{bin: bin, dir: dir}
	var err error
	if s.clientPort, err = freePort(); err == nil {
		s.peerPort, err = freePort()
	}
	if err != nil {
		t.Fatalf("etcdtest: pick ports: %v", err)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("etcd log:\n%s", s.logs.String())
		}
	})
	if err := s.start(); err != nil {
		t.Fatalf("etcdtest: %v\nlog:\n%s", err, s.logs.String())
	}
	return s
}

// dataDir returns a fresh directory for etcd's data, removed when t ends.
// It prefers /dev/shm: etcd fsyncs every write, and on a small test machine
// the disk's fsync latency (not etcd) would otherwise decide how quickly
// leases are granted and revoked.
func dataDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "weft-etcdtest-"); err == nil {
			testenv.RecordPath(dir) // the next run removes it if this one is killed
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// Endpoint is the client URL, e.g. http://127.0.0.1:40123.
func (s *Server) Endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(s.clientPort) }

// Addr is the client address as host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.clientPort) }

// freePort asks the kernel for a free port. etcd cannot listen on port 0,
// so the port is released again before etcd binds it; another process
// could take it in between, which on a test machine is rare enough.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	const name = "weft-test"
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peerPort)
	cmd := exec.Command(s.bin,
		"--name", name,
		"--data-dir", s.dir,
		"--listen-client-urls", s.Endpoint(),
		"--advertise-client-urls", s.Endpoint(),
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", name+"="+peer,
		"--initial-cluster-state", "new",
		// A short election timeout makes start and restart quick, and
		// lowers etcd's minimum lease TTL (1.5 election timeouts) to 1 s.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap",
		"--log-level", "error",
	)
	cmd.Stdout, cmd.Stderr = &s.logs, &s.logs
	// Its own process group: a Ctrl-C of `go test` is not delivered to it
	// twice, and nothing else is ever signalled.
	// And a parent-death signal: a test binary that panics or times out
	// takes its etcd with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := childproc.Start(cmd)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, p.Done()
	s.mu.Unlock()
	return s.waitHealthy(p.Done())
}

// waitHealthy polls /health until etcd has a leader, up to 15 s.
func (s *Server) waitHealthy(done <-chan struct{}) error {
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		select {
		case <-done:
			return errors.New("etcd exited during start")
		default:
		}
		resp, err := client.Get(s.Endpoint() + "/health")
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body.Bytes(), []byte(`"true"`)) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not healthy after 15 s (last error: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signal sends sig to the server process (by PID).
func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return errors.New("etcd not running")
	}
	return cmd.Process.Signal(sig)
}

// Terminate asks etcd to stop (SIGTERM), as an init system does, and
// waits up to 30 s for it to exit. etcd shuts down gracefully: it may
// serve (and expire leases) for a few seconds first.
func (s *Server) Terminate() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("etcd not running")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return errors.New("etcd did not exit within 30 s of SIGTERM")
	}
	s.mu.Lock()
	s.cmd = nil
	s.mu.Unlock()
	return nil
}

// Pause stops the process (SIGSTOP): connections stay open and requests
// hang, as with a frozen or partitioned server.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

// Kill kills the process (SIGKILL, after SIGCONT in case it is paused) and
// waits for it to exit. It is safe to call when the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Restart starts the server again on the same data directory and ports
// (after Kill), and waits until it is healthy.
func (s *Server) Restart() error {
	s.Kill()
	return s.start()
}

// syncBuffer is a bytes.Buffer safe for the process's writers and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
