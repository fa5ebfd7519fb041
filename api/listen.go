package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultSocket is where weftd serves the API unless configured otherwise.
const DefaultSocket = "/run/weft/weftd.sock"

// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
const maxSocketPath = 107

// tmpSeq keeps concurrent Listens of one process off each other's
// temporary names.
var tmpSeq atomic.Uint64

// ErrAlreadyRunning is returned by Listen when another process answers on
// the socket.
var ErrAlreadyRunning = errors.New("weftd already running")

// Listen opens the API socket at path: it creates the parent directory
// (0755), removes a stale socket left by a weftd that died (one nobody
// answers on), and refuses if another weftd answers there. The socket is
// root-only (0600) from the moment it appears at path. Closing the
// listener removes the socket, unless another process has replaced it.
func Listen(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("api socket %s: path longer than %d bytes", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("api socket %s: create directory: %w", path, err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}

	// Bind under a private name, chmod, then link into place: a socket
	// bound at path directly would be connectable with the umask's mode
	// until the chmod, and link (unlike rename) fails if a concurrently
	// started weftd got there first.
	tmp := filepath.Join(dir, fmt.Sprintf(".%d.%d.sock.tmp", os.Getpid(), tmpSeq.Add(1)))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket %s: listen: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	defer os.Remove(tmp)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket %s: chmod: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		ln.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("api socket %s: %w (the socket appeared while starting)", path, ErrAlreadyRunning)
		}
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	return &unixListener{UnixListener: ln, path: path, fi: fi}, nil
}

// removeStale removes a socket at path that no process answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("api socket %s: exists and is not a socket; remove it or choose another --socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w on %s: stop it first, or give this one another --socket", ErrAlreadyRunning, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api socket %s: probe existing socket: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// unixListener removes its socket file on Close if the file is still the
// one it created.
type unixListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}
