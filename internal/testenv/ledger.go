package testenv

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A test binary killed before its cleanup runs (a panic, the 20-minute
// timeout, kill -9) leaves behind what it made: namespaces with their
// TAPs and veths, temporary directories (on /dev/shm too), and the odd
// process that escaped the parent-death signal (containerd's shims
// re-parent themselves). The ledger lets the next run remove exactly
// that and nothing else.
//
// Each test process that makes a name with UniqueName, or records a path
// with RecordPath, appends it to its own ledger file in LedgerDir, which
// it holds flock'ed for as long as it lives. The kernel drops the lock
// when the process dies, however it dies. So a ledger file whose lock can
// be taken belongs to a process that is gone, and everything it lists was
// made by a test that can no longer clean up: SweepStale removes it. A
// ledger still locked is a test running now (in this package, another
// package of the same go test, or another checkout) and is never touched;
// nor is anything a ledger does not name.

// LedgerDir holds the ledgers: on /run, cleared at boot along with the
// namespaces they describe.
const LedgerDir = "/run/weft-test"

// netnsDir is where iproute2 (and netdev) keep named namespaces.
const netnsDir = "/run/netns"

var ledger struct {
	once sync.Once
	f    *os.File // nil: no ledger (not root, or /run not writable)
	path string
	mu   sync.Mutex
}

// record appends "kind value" to this process's ledger, creating and
// locking it on first use. Without a ledger (not root) it does nothing:
// such a process cannot make namespaces either.
func record(kind, value string) {
	ledger.once.Do(openLedger)
	if ledger.f == nil {
		return
	}
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	// One write per line, O_APPEND: a sweeper reads whole lines only.
	ledger.f.WriteString(kind + " " + value + "\n")
}

func openLedger() {
	if os.Geteuid() != 0 {
		return
	}
	if err := os.MkdirAll(LedgerDir, 0o700); err != nil {
		return
	}
	var b [4]byte
	rand.Read(b[:])
	id := strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
	// Created and locked under a name the sweeper ignores, then renamed:
	// a sweeper never sees an unlocked ledger of a live process.
	tmp := filepath.Join(LedgerDir, "new-"+id)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(tmp)
		return
	}
	path := filepath.Join(LedgerDir, "run-"+id+".names")
	if err := os.Rename(tmp, path); err != nil {
		f.Close()
		os.Remove(tmp)
		return
	}
	// The first line says who: for a human reading a stale ledger.
	fmt.Fprintf(f, "# pid %d %s started %s\n", os.Getpid(), strings.Join(os.Args, " "), time.Now().UTC().Format(time.RFC3339))
	ledger.f, ledger.path = f, path
}

// RecordPath notes a directory (or file) a test made outside t.TempDir's
// care, or one a killed test would leave (t.TempDir's own, when a test
// hands it to a daemon): after a crash the next run kills the processes
// whose command lines name it, unmounts what is mounted below it and
// removes it. Record only paths the test created itself, with a unique
// name.
func RecordPath(path string) {
	if abs, err := filepath.Abs(path); err == nil && filepath.Dir(abs) != abs {
		record("path", abs)
	}
}

var sweepOnce sync.Once

// SweepStale removes, once per process, what test processes that died
// without cleaning up left behind (see LedgerDir), and reports each thing
// it removed with logf. It only acts as root.
func SweepStale(logf func(format string, args ...any)) {
	sweepOnce.Do(func() { Sweep(logf) })
}

// Sweep is SweepStale without the once: tests of the sweep call it.
func Sweep(logf func(format string, args ...any)) {
	if os.Geteuid() != 0 {
		return
	}
	ents, err := os.ReadDir(LedgerDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "run-") || !strings.HasSuffix(name, ".names") {
			continue
		}
		path := filepath.Join(LedgerDir, name)
		if path == ledger.path {
			continue
		}
		sweepLedger(path, logf)
	}
}

// sweepLedger removes what the ledger at path names if its owner is gone.
func sweepLedger(path string, logf func(format string, args ...any)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return // its process is alive (EWOULDBLOCK): not ours to touch
	}
	var names, paths []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		kind, value, ok := strings.Cut(sc.Text(), " ")
		switch {
		case !ok || value == "":
		case kind == "name":
			names = append(names, value)
		case kind == "path":
			paths = append(paths, value)
		}
	}
	for _, ns := range staleNamespaces(names) {
		if err := deleteNetns(ns); err != nil {
			logf("testenv: stale namespace %s (from %s): %v", ns, filepath.Base(path), err)
			continue
		}
		logf("testenv: deleted namespace %s left by a test process that died (%s)", ns, filepath.Base(path))
	}
	for _, p := range paths {
		for _, pid := range procsNaming(p) {
			syscall.Kill(pid, syscall.SIGKILL)
			logf("testenv: killed pid %d, left running with %s by a test process that died", pid, p)
		}
		unmountBelow(p)
		if _, err := os.Lstat(p); err == nil {
			if err := os.RemoveAll(p); err != nil {
				logf("testenv: stale %s: %v", p, err)
				continue
			}
			logf("testenv: removed %s left by a test process that died", p)
		}
	}
	os.Remove(path)
}

// staleNamespaces lists the namespaces named n or n-* for a recorded n
// (the sim names its namespaces NAME-u, NAME-n1, NAME-n1-p1).
func staleNamespaces(recorded []string) []string {
	ents, err := os.ReadDir(netnsDir)
	if err != nil || len(recorded) == 0 {
		return nil
	}
	var out []string
	for _, e := range ents {
		for _, n := range recorded {
			if e.Name() == n || strings.HasPrefix(e.Name(), n+"-") {
				out = append(out, e.Name())
				break
			}
		}
	}
	// Children (NAME-n1-p1) before parents, as the sim deletes them.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// deleteNetns removes a named namespace as `ip netns delete` does: detach
// the bind mount that keeps it, then remove the mount point. The kernel
// destroys the namespace, and the TAPs and veths in it, once nothing else
// holds it.
func deleteNetns(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// procsNaming lists the processes with an argument that is p or lies
// below it.
func procsNaming(p string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if a := string(arg); a == p || strings.HasPrefix(a, p+"/") || strings.Contains(a, "="+p+"/") {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// unmountBelow detaches every mount at or below p, deepest first, so that
// removing p never reaches into a mounted file system.
func unmountBelow(p string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mnts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == p || strings.HasPrefix(f[4], p+"/")) {
			mnts = append(mnts, f[4])
		}
	}
	slices.SortFunc(mnts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mnts {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}
