package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

var (
	// ErrExhausted is wrapped by the error Allocate returns when the
	// subnet has no free pod address.
	ErrExhausted = errors.New("subnet exhausted")
	// ErrSubnetMismatch is wrapped by the error Open returns when the
	// directory holds the allocations of another subnet.
	ErrSubnetMismatch = errors.New("state directory belongs to another subnet")
	// ErrClosed is returned by every method of a closed Allocator.
	ErrClosed = errors.New("ipam allocator closed")
)

type exhaustedError struct {
	subnet         netip.Prefix
	used, capacity int
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("%s exhausted: %d of %d in use", e.subnet, e.used, e.capacity)
}

func (e *exhaustedError) Unwrap() error { return ErrExhausted }

// Allocation is one pod interface's address.
type Allocation struct {
	Key
	Addr    netip.Addr
	Prefix  netip.Prefix // Addr with the node subnet's length, e.g. 10.244.1.5/24
	Gateway netip.Addr   // the subnet's .1
	Since   time.Time    // when the address was first handed out
	// Display only: who the pod is. Empty when the caller gave no Meta.
	PodNamespace string
	PodName      string
}

// Allocator hands out the pod addresses of one node subnet and keeps them
// in a state directory. It is safe for concurrent use by goroutines, and by
// processes sharing the directory: every method holds a mutex and a flock
// on the directory's lock file for its whole duration.
//
// The Allocator caches what the directory holds. A generation counter in
// the lock file, bumped before every change, tells it under the lock
// whether another process changed anything since, and then it re-reads
// the directory. Files edited by hand behind its back are seen at the next
// Open or GC; a claim still never overwrites an existing file.
//
// A method waits for as long as another process holds the lock. The lock
// file is never removed: a process that locked a deleted one would exclude
// nobody.
type Allocator struct {
	dir    string
	subnet netip.Prefix
	pods   podRange
	now    func() time.Time

	mu       sync.Mutex
	closed   bool
	lockFile *os.File
	dirFile  *os.File // for fsync of the directory
	gen      uint64   // generation the cache reflects
	stale    bool     // a change failed half-way: re-read before trusting the cache
	st       *diskState
}

// Open opens the state directory dir of subnet, creating it (mode 0700) if
// missing. A directory that belongs to another subnet is an error wrapping
// ErrSubnetMismatch. Files that do not parse stay reserved (see Leaked)
// until GC removes them.
// DirSubnet returns the subnet whose addresses the state directory dir
// holds; ok is false if it holds none yet (or does not exist). A node that
// restarts asks the registry for this subnet: its pods are on it.
func DirSubnet(dir string) (subnet netip.Prefix, ok bool, err error) {
	return readSubnetFile(dir)
}

func Open(dir string, subnet netip.Prefix) (*Allocator, error) {
	if err := checkNodeSubnet(subnet); err != nil {
		return nil, err
	}
	if err := makeDir(dir); err != nil {
		return nil, fmt.Errorf("create ipam state: %w", err)
	}
	a := &Allocator{dir: dir, subnet: subnet, pods: podRangeOf(subnet), now: time.Now}
	var err error
	if a.dirFile, err = os.Open(dir); err != nil {
		return nil, fmt.Errorf("open ipam state: %w", err)
	}
	if a.lockFile, err = os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		a.dirFile.Close()
		return nil, fmt.Errorf("open ipam lock: %w", err)
	}
	if err := a.open(); err != nil {
		a.lockFile.Close()
		a.dirFile.Close()
		return nil, err
	}
	return a, nil
}

func (a *Allocator) open() error {
	if err := flock(a.lockFile, lockEx); err != nil {
		return fmt.Errorf("lock ipam state %s: %w", a.dir, err)
	}
	defer flock(a.lockFile, lockUn)
	have, claimed, err := readSubnetFile(a.dir)
	if err != nil {
		return err
	}
	if claimed && have != a.subnet {
		return fmt.Errorf("ipam state %s holds allocations of %s, not %s: %w", a.dir, have, a.subnet, ErrSubnetMismatch)
	}
	if err := a.reload(); err != nil {
		return err
	}
	if !claimed {
		// Claimed only once the directory is known to hold nothing foreign.
		if err := writeReplace(a.dir, subnetName, []byte(a.subnet.String()+"\n")); err != nil {
			return err
		}
		if err := a.dirFile.Sync(); err != nil {
			return fmt.Errorf("sync ipam state: %w", err)
		}
	}
	return nil
}

// lock serializes against goroutines (mu) and processes (flock) and brings
// the cache up to date. On error nothing is held.
func (a *Allocator) lock() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return ErrClosed
	}
	if err := flock(a.lockFile, lockEx); err != nil {
		a.mu.Unlock()
		return fmt.Errorf("lock ipam state %s: %w", a.dir, err)
	}
	if err := a.refresh(); err != nil {
		a.unlock()
		return err
	}
	return nil
}

func (a *Allocator) unlock() {
	// An unlock can only fail on a bad fd; closing it (Close) unlocks too.
	_ = flock(a.lockFile, lockUn)
	a.mu.Unlock()
}

// refresh re-reads the directory if anyone changed it since the cache was
// filled. Must hold the lock.
func (a *Allocator) refresh() error {
	gen, err := readGen(a.lockFile)
	if err != nil {
		return err
	}
	if gen == a.gen && !a.stale {
		return nil
	}
	return a.reload()
}

// reload reads the whole directory. Must hold the lock.
func (a *Allocator) reload() error {
	gen, err := readGen(a.lockFile)
	if err != nil {
		return err
	}
	st, err := loadState(a.dir, a.pods)
	if err != nil {
		return err
	}
	a.st, a.gen, a.stale = st, gen, false
	return nil
}

// beginChange announces a change to other processes before any file is
// touched, so a process that dies half-way still makes them re-read.
// Must hold the lock.
func (a *Allocator) beginChange() error {
	if err := writeGen(a.lockFile, a.gen+1); err != nil {
		return err
	}
	a.gen++
	return nil
}

func (a *Allocator) used() int { return len(a.st.byAddr) + len(a.st.leaked) }

func (a *Allocator) taken(addr netip.Addr) bool {
	_, ok := a.st.byAddr[addr]
	_, leaked := a.st.leaked[addr]
	return ok || leaked
}

func (a *Allocator) exhausted() error {
	return &exhaustedError{subnet: a.subnet, used: a.used(), capacity: a.pods.capacity()}
}

// Allocate returns the address of key, allocating the next free one after
// the address handed out last if key has none. The allocation is durable
// (file and directory fsynced) before Allocate returns. Asking again for a
// key returns its address unchanged, meta included. A full subnet is an
// error wrapping ErrExhausted.
func (a *Allocator) Allocate(key Key, meta Meta) (Allocation, error) {
	if err := key.check(); err != nil {
		return Allocation{}, err
	}
	if err := meta.check(); err != nil {
		return Allocation{}, fmt.Errorf("key %s: %w", key, err)
	}
	if err := a.lock(); err != nil {
		return Allocation{}, err
	}
	defer a.unlock()
	if addr, ok := a.st.byKey[key]; ok {
		return a.allocation(a.st.byAddr[addr]), nil
	}
	if a.used() >= a.pods.capacity() {
		return Allocation{}, a.exhausted()
	}
	if err := a.beginChange(); err != nil {
		return Allocation{}, err
	}
	v := a.st.cursor
	for range a.pods.capacity() {
		v = a.pods.next(v)
		addr := u32ToAddr(v)
		if a.taken(addr) {
			continue
		}
		r := &record{
			Version:      recordVersion,
			Addr:         addr,
			PodID:        key.PodID,
			IfName:       key.IfName,
			Since:        a.now().UTC().Round(0),
			PodNamespace: meta.PodNamespace,
			PodName:      meta.PodName,
		}
		err := a.claim(r)
		if errors.Is(err, fs.ErrExist) {
			// A file the cache did not know: only a hand edit can do this,
			// since every writer bumps the generation. Believe the disk.
			if err := a.reload(); err != nil {
				return Allocation{}, err
			}
			if got, ok := a.st.byKey[key]; ok {
				return a.allocation(a.st.byAddr[got]), nil
			}
			continue
		}
		if err != nil {
			a.stale = true
			return Allocation{}, fmt.Errorf("allocate %s for %s: %w", addr, key, err)
		}
		a.st.byAddr[addr] = r
		a.st.byKey[key] = addr
		a.st.cursor = v
		return a.allocation(r), nil
	}
	return Allocation{}, a.exhausted()
}

// claim makes r durable: its own file, then the cursor, then one directory
// fsync that covers both names.
func (a *Allocator) claim(r *record) error {
	data, err := encodeRecord(r)
	if err != nil {
		return err
	}
	path := filepath.Join(a.dir, r.Addr.String())
	if err := claimFile(path, data); err != nil {
		return err
	}
	err = writeReplace(a.dir, cursorName, []byte(r.Addr.String()+"\n"))
	if err == nil {
		err = a.dirFile.Sync()
	}
	if err != nil {
		// Not handed out, so not kept; if even the removal fails the
		// record is whole and belongs to key, which a retry then gets.
		_ = os.Remove(path)
		return err
	}
	return nil
}

// Get returns the allocation of key. If the directory cannot be read it
// answers from what it read last.
func (a *Allocator) Get(key Key) (Allocation, bool) {
	if !a.lockCached() {
		return Allocation{}, false
	}
	defer a.unlock()
	addr, ok := a.st.byKey[key]
	if !ok {
		return Allocation{}, false
	}
	return a.allocation(a.st.byAddr[addr]), true
}

// lockCached is lock for the methods that answer without an error: a
// failed refresh leaves them the cached view. It returns false, holding
// nothing, only when the Allocator is closed or the flock fails.
func (a *Allocator) lockCached() bool {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return false
	}
	if err := flock(a.lockFile, lockEx); err != nil {
		a.mu.Unlock()
		return false
	}
	_ = a.refresh()
	return true
}

// Release frees the address of key. Releasing a key that has no address is
// not an error, so a repeated teardown is harmless. The freed address is
// handed out again only after the rest of the subnet has had its turn.
func (a *Allocator) Release(key Key) error {
	if err := a.lock(); err != nil {
		return err
	}
	defer a.unlock()
	addr, ok := a.st.byKey[key]
	if !ok {
		return nil
	}
	if err := a.beginChange(); err != nil {
		return err
	}
	if err := a.remove(addr); err != nil {
		a.stale = true
		return fmt.Errorf("release %s of %s: %w", addr, key, err)
	}
	if err := a.dirFile.Sync(); err != nil {
		a.stale = true
		return fmt.Errorf("release %s of %s: sync: %w", addr, key, err)
	}
	return nil
}

// remove deletes the file of addr and forgets it. Must hold the lock.
func (a *Allocator) remove(addr netip.Addr) error {
	err := os.Remove(filepath.Join(a.dir, addr.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if r, ok := a.st.byAddr[addr]; ok {
		delete(a.st.byKey, r.key())
		delete(a.st.byAddr, addr)
	}
	delete(a.st.leaked, addr)
	return nil
}

// GC frees every allocation whose owner live says is gone, and every
// leaked (unreadable) file; it re-reads the whole directory first. Freed
// leaked files appear in freed with an empty Key. live is called with the
// Allocator locked and must not call it. On an error GC still frees what
// it can and returns them all, joined.
func (a *Allocator) GC(live func(podID, ifname string) bool) (freed []Allocation, err error) {
	if err := a.lock(); err != nil {
		return nil, err
	}
	defer a.unlock()
	if err := a.reload(); err != nil {
		return nil, err
	}
	var victims []Allocation
	for _, r := range a.st.byAddr {
		if !live(r.PodID, r.IfName) {
			victims = append(victims, a.allocation(r))
		}
	}
	for addr := range a.st.leaked {
		victims = append(victims, a.leakedAllocation(addr))
	}
	if len(victims) == 0 {
		return nil, nil
	}
	slices.SortFunc(victims, func(x, y Allocation) int { return x.Addr.Compare(y.Addr) })
	if err := a.beginChange(); err != nil {
		return nil, err
	}
	var errs []error
	for _, v := range victims {
		if err := a.remove(v.Addr); err != nil {
			errs = append(errs, fmt.Errorf("gc %s: %w", v.Addr, err))
			continue
		}
		freed = append(freed, v)
	}
	if err := a.dirFile.Sync(); err != nil {
		errs = append(errs, fmt.Errorf("gc: sync: %w", err))
	}
	if len(errs) > 0 {
		a.stale = true
	}
	return freed, errors.Join(errs...)
}

// List returns every readable allocation in address order.
func (a *Allocator) List() ([]Allocation, error) {
	if err := a.lock(); err != nil {
		return nil, err
	}
	defer a.unlock()
	out := make([]Allocation, 0, len(a.st.byAddr))
	for _, r := range a.st.byAddr {
		out = append(out, a.allocation(r))
	}
	slices.SortFunc(out, func(x, y Allocation) int { return x.Addr.Compare(y.Addr) })
	return out, nil
}

// Leaked returns, in order, the addresses held by files that do not parse
// (a claim whose writer crashed, or damage). They stay reserved until GC.
func (a *Allocator) Leaked() []netip.Addr {
	if !a.lockCached() {
		return nil
	}
	defer a.unlock()
	out := make([]netip.Addr, 0, len(a.st.leaked))
	for addr := range a.st.leaked {
		out = append(out, addr)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Stats returns how many pod addresses are in use (leaked ones included)
// and how many are free; used+free is the subnet's pod capacity. A closed
// Allocator reports 0, 0.
func (a *Allocator) Stats() (used, free int) {
	if !a.lockCached() {
		return 0, 0
	}
	defer a.unlock()
	used = a.used()
	return used, max(a.pods.capacity()-used, 0)
}

// Subnet returns the node subnet the Allocator hands addresses out of.
func (a *Allocator) Subnet() netip.Prefix { return a.subnet }

// Close releases the Allocator's files. Allocations stay on disk. Closing
// twice is harmless.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	return errors.Join(a.lockFile.Close(), a.dirFile.Close())
}

func (a *Allocator) allocation(r *record) Allocation {
	return Allocation{
		Key:          r.key(),
		Addr:         r.Addr,
		Prefix:       netip.PrefixFrom(r.Addr, a.subnet.Bits()),
		Gateway:      Gateway(a.subnet),
		Since:        r.Since,
		PodNamespace: r.PodNamespace,
		PodName:      r.PodName,
	}
}

func (a *Allocator) leakedAllocation(addr netip.Addr) Allocation {
	return Allocation{Addr: addr, Prefix: netip.PrefixFrom(addr, a.subnet.Bits()), Gateway: Gateway(a.subnet)}
}
