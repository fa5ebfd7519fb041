package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Names of the bookkeeping files in a state directory. Every other file is
// named by the address it allocates.
const (
	lockName   = "lock"             // flock target; bytes 0..7: generation
	subnetName = "subnet"           // the subnet the directory belongs to
	cursorName = "last_reserved_ip" // the address handed out last
	tmpSuffix  = ".tmp"
)

const (
	lockEx = unix.LOCK_EX
	lockUn = unix.LOCK_UN
)

// flock takes or drops the advisory lock that serializes processes sharing
// a state directory. flock locks belong to the open file description, so two
// Allocators in one process exclude each other too.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// readGen returns the generation counter kept in the lock file. Every
// process bumps it, under the lock, before it changes anything in the
// directory, so an unchanged counter proves a cached view is current. It
// is not fsynced: it only has to be coherent between live processes, and
// after a reboot no process has a cache.
func readGen(f *os.File) (uint64, error) {
	var b [8]byte
	n, err := f.ReadAt(b[:], 0)
	if n < len(b) {
		if err == io.EOF || err == nil {
			return 0, nil // fresh lock file
		}
		return 0, fmt.Errorf("read generation: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func writeGen(f *os.File, gen uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], gen)
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("write generation: %w", err)
	}
	return nil
}

// writeReplace replaces dir/name with data through a synced temporary file
// and a rename, so a reader sees the old content or the new, never a mix.
// The rename is durable once the caller syncs the directory.
func writeReplace(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}

// claimFile creates the file of one address with O_EXCL, the atomic claim,
// and makes its content durable. On failure it removes what it created;
// fs.ErrExist means another process owns the address.
func claimFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// One write: a crash leaves an empty file or a whole record (short of
	// a torn write, which parseRecord catches by the missing newline).
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// readLimited reads at most maxRecordSize+1 bytes of a file, enough for
// parseRecord to tell an oversized file from a good one.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxRecordSize+1))
}

// makeDir creates dir (mode 0700) if it is missing and makes its entry in
// the parent durable, so a power loss cannot take the directory, and every
// allocation in it, away. Missing grandparents are created but not synced.
func makeDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	parent, err := os.Open(filepath.Dir(filepath.Clean(dir)))
	if err != nil {
		return err
	}
	defer parent.Close()
	return parent.Sync()
}

// readSubnetFile returns the subnet dir belongs to; ok is false when the
// directory has not been claimed yet. Must hold the lock.
func readSubnetFile(dir string) (subnet netip.Prefix, ok bool, err error) {
	data, err := readLimited(filepath.Join(dir, subnetName))
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Prefix{}, false, nil
	}
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("read %s: %w", subnetName, err)
	}
	subnet, err = netip.ParsePrefix(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("ipam state %s: %s file is damaged (%q): fix or remove it by hand", dir, subnetName, data)
	}
	return subnet, true, nil
}

// diskState is everything the directory says, as read in one pass.
type diskState struct {
	byAddr map[netip.Addr]*record
	byKey  map[Key]netip.Addr
	leaked map[netip.Addr]error
	cursor uint32 // 0: none recorded
}

// loadState reads every allocation file of dir. A file that does not parse
// is leaked: its address stays reserved until GC, since it may be the
// remnant of a claim whose writer crashed. A file outside the subnet's pod
// range, or written by a newer weft, is an error: the directory is not
// ours to interpret. Must hold the lock.
func loadState(dir string, pods podRange) (*diskState, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read ipam state: %w", err)
	}
	var addrs []netip.Addr
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue // bookkeeping or temporary file
		}
		if !pods.contains(a) || e.IsDir() {
			return nil, fmt.Errorf("ipam state %s: unexpected entry %q: not a pod address of this subnet", dir, e.Name())
		}
		addrs = append(addrs, a)
	}
	// Address order, so which of two files claiming one key wins does not
	// depend on how the directory lists them.
	slices.SortFunc(addrs, netip.Addr.Compare)

	st := &diskState{
		byAddr: make(map[netip.Addr]*record, len(addrs)),
		byKey:  make(map[Key]netip.Addr, len(addrs)),
		leaked: make(map[netip.Addr]error),
	}
	for _, a := range addrs {
		data, err := readLimited(filepath.Join(dir, a.String()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by hand between listing and reading
		}
		if err != nil {
			return nil, fmt.Errorf("read allocation %s: %w", a, err)
		}
		r, err := parseRecord(data)
		switch {
		case errors.Is(err, errNewerRecord):
			return nil, fmt.Errorf("ipam state %s: allocation %s: %w", dir, a, err)
		case err != nil:
			st.leaked[a] = err
		case r.Addr != a:
			st.leaked[a] = fmt.Errorf("file %s holds a record for %s", a, r.Addr)
		default:
			if prev, dup := st.byKey[r.key()]; dup {
				st.leaked[a] = fmt.Errorf("key %s already holds %s", r.key(), prev)
				continue
			}
			st.byAddr[a] = &r
			st.byKey[r.key()] = a
		}
	}
	if data, err := readLimited(filepath.Join(dir, cursorName)); err == nil {
		if a, err := netip.ParseAddr(strings.TrimSpace(string(data))); err == nil && pods.contains(a) {
			st.cursor = addrToU32(a)
		}
	}
	return st, nil
}
