package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/registry"
)

// A watch keeps its own copy of the directory (every node file and claim
// it has read, with what identified the version it read) and reads a file
// again only when it has a reason to:
//
//   - the change log names the node (Acquire, Release, reclaim, a late
//     renewal: changes.go);
//   - the expiry the watch knows for a live lease has passed: the node has
//     most likely renewed since, and if it has not, the lease is Removed;
//   - every rescanEvery, the directory listings (names only) show a node
//     file or claim the watch does not know, lose one it knows, or hold a
//     lapsed lease's file again (files written by hand or by anything that
//     does not log its changes);
//   - the change log was replaced or cannot be read: then everything.
//
// Every write replaces a file (a new inode), so "changed since read" is an
// inode, size and mtime comparison, and most looks cost one stat(2); a
// renewal even tells its new expiry that way (renewedExpiry). Idle, a
// watch costs one open and fstat of the change log per poll, one stat of
// each live lease each time the expiry it knows passes (every 2/3 TTL or
// so) and a listing every rescanEvery: O(leases / TTL) stats per second,
// where reading the whole directory every poll was O(leases) reads and
// decodes per poll (issue 16; BenchmarkWatchIdle, BenchmarkReadEverything).
const rescanEvery = 10 * time.Second

// leaseWatch is one Watch's view of the directory.
type leaseWatch struct {
	r       *Registry
	files   map[string]nodeFile // by node name, as last read
	claims  map[string]claimFile
	idx     claimIndex
	changes changeReader
	// sent is what the consumer has been told: the live leases, with the
	// expiry last read (which says when to look at each again).
	sent       map[string]registry.Lease
	lastRescan time.Time
}

// nodeFile is a node file as last read.
type nodeFile struct {
	id  fileID
	rec record
	ok  bool // decoded; a bad file is logged once and lists nothing
}

// claimFile is a claim index entry as last read.
type claimFile struct {
	id   fileID
	node string // "" = unreadable: claimed for nobody
}

func (r *Registry) newLeaseWatch() *leaseWatch {
	return &leaseWatch{
		r:       r,
		files:   map[string]nodeFile{},
		claims:  map[string]claimFile{},
		changes: changeReader{path: r.changesPath},
	}
}

// readAll reads the whole directory (reusing what has not changed) and
// returns the live view.
func (w *leaseWatch) readAll(now time.Time) (map[string]registry.Lease, error) {
	w.changes.start()
	if err := w.rescan(true, now); err != nil {
		return nil, err
	}
	view := make(map[string]registry.Lease, len(w.files))
	for name := range w.files {
		if l, ok := w.lease(name, now); ok {
			view[name] = l
		}
	}
	w.lastRescan = now
	return view, nil
}

// rescan lists the node and claim directories and reads the files that
// are new or changed since; with every false, only new names, vanished
// names and files of leases not live at now (a live lease is re-read when
// its expiry passes) are looked at.
func (w *leaseWatch) rescan(every bool, now time.Time) error {
	if err := w.readClaims(every); err != nil {
		return err
	}
	entries, err := os.ReadDir(w.r.nodesDir)
	if err != nil {
		return fmt.Errorf("read registry directory: %w", err)
	}
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		node, ok := nodeOfFile(e)
		if !ok {
			continue
		}
		present[node] = true
		f, known := w.files[node]
		if every || !known || !f.ok || !f.rec.Live(now) {
			w.refresh(node, now, false)
		}
	}
	for node := range w.files {
		if !present[node] {
			delete(w.files, node)
		}
	}
	return nil
}

// nodeOfFile returns the node a directory entry of nodes/ is the file of.
func nodeOfFile(e fs.DirEntry) (string, bool) {
	name := e.Name()
	node, ok := strings.CutSuffix(name, ".json")
	if !ok || strings.HasPrefix(name, ".") || e.IsDir() {
		return "", false
	}
	return node, true
}

// refresh reads node's file again if it changed since it was last read.
// With renewal set (the lease's known expiry has passed: it was most
// likely renewed), a renewal is learnt from the stat alone (see
// renewedExpiry); any other look reads a changed file in full.
func (w *leaseWatch) refresh(node string, now time.Time, renewal bool) {
	path := w.r.path(node)
	fi, err := os.Stat(path)
	if err != nil {
		delete(w.files, node)
		return
	}
	if f, ok := w.files[node]; ok {
		id := idOf(fi)
		if f.id == id {
			return
		}
		if exp, ok := renewedExpiry(f, fi, now); ok && renewal {
			f.id, f.rec.Expiry = id, exp
			w.files[node] = f
			return
		}
	}
	rec, id, err := readNodeFile(node, path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		delete(w.files, node)
	case err != nil:
		w.r.warnOnce(err)
		w.files[node] = nodeFile{id: id}
	default:
		w.files[node] = nodeFile{id: id, rec: rec, ok: true}
	}
}

// renewedExpiry tells whether the file fi that replaced f is a renewal of
// it, and its new expiry. Renew gives the file the new expiry as its
// modification time (writeRenewal), which no other writer does: an mtime
// in the future, later than f's expiry, is a renewal by the holder f was
// read with; any change but the expiry comes through Acquire, which logs
// it, and a logged node's file is read in full (even if it was renewed
// again before the watch looked). So a renewal costs a watch one stat(2), not a
// read and a decode: with 5,000 leases renewed every 10 s that is 500
// files a second on every node (issue 16).
func renewedExpiry(f nodeFile, fi fs.FileInfo, now time.Time) (time.Time, bool) {
	mt := fi.ModTime()
	return mt, f.ok && mt.After(now) && mt.After(f.rec.Expiry)
}

// readNodeFile reads and decodes a node file, identifying the version it
// read by the open descriptor (not the path, which a writer may have
// renamed over meanwhile).
func readNodeFile(node, path string) (record, fileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return record{}, fileID{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return record{}, fileID{}, err
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		return record{}, fileID{}, fmt.Errorf("node file %s.json: %w", node, err)
	}
	rec, err := decode(node, b)
	return rec, idOf(fi), err
}

func idOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id
}

// readClaims brings the claim index up to date, reading only entries that
// changed (a stat of each); with every false, only new and vanished
// entries (a listing).
func (w *leaseWatch) readClaims(every bool) error {
	entries, err := os.ReadDir(w.r.claimsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read claim index: %w", err)
	}
	changed := w.idx.bySubnet == nil
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		if _, ok := parseClaimFileName(e.Name()); !ok || e.IsDir() {
			continue
		}
		present[e.Name()] = true
		c, known := w.claims[e.Name()]
		if known && !every {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // released meanwhile
		}
		if known && c.id == idOf(fi) {
			continue
		}
		changed = true
		b, err := os.ReadFile(filepath.Join(w.r.claimsDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			delete(w.claims, e.Name())
			continue
		}
		node := strings.TrimSpace(string(b))
		if err == nil {
			err = registry.ValidateNodeName(node)
		}
		if err != nil {
			w.r.warnOnce(fmt.Errorf("claim index entry %s: %w; the subnet stays claimed", e.Name(), err))
			node = ""
		}
		w.claims[e.Name()] = claimFile{id: idOf(fi), node: node}
	}
	for name := range w.claims {
		if !present[name] {
			delete(w.claims, name)
			changed = true
		}
	}
	if changed {
		w.idx = newClaimIndex()
		for name, c := range w.claims {
			p, _ := parseClaimFileName(name)
			w.r.addClaim(&w.idx, p, c.node)
		}
	}
	return nil
}

// lease returns node's lease if it is live and the claim index lets the
// node advertise its subnet.
func (w *leaseWatch) lease(node string, now time.Time) (registry.Lease, bool) {
	f, ok := w.files[node]
	if !ok || !f.ok || !f.rec.Live(now) {
		return registry.Lease{}, false
	}
	if !w.idx.owns(node, f.rec.Subnet) {
		w.r.warnNotOwned(node, f.rec.Subnet, w.idx)
		return registry.Lease{}, false
	}
	return f.rec.Lease, true
}

// Watch implements registry.Registry: one Snapshot, then what changed,
// looked at every poll interval.
func (r *Registry) Watch(ctx context.Context) (<-chan registry.Event, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w := r.newLeaseWatch()
	now := time.Now()
	view, err := w.readAll(now)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w.sent = view
	ch := make(chan registry.Event, 16)
	r.watchers.Add(1)
	go w.run(ctx, ch)
	return ch, nil
}

// watchLoop is the loop of every watch of a registry directory: send
// first, then whatever poll returns every poll interval, until ctx ends or
// r is closed; then close ch.
func watchLoop[E any](ctx context.Context, r *Registry, ch chan<- E, first E, poll func() []E) {
	defer r.watchers.Done()
	defer close(ch)
	send := func(ev E) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
		case <-r.closed:
		}
		return false
	}
	if !send(first) {
		return
	}
	tick := time.NewTicker(r.pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		case <-r.closed:
			return
		}
		for _, ev := range poll() {
			if !send(ev) {
				return
			}
		}
	}
}

func (w *leaseWatch) run(ctx context.Context, ch chan<- registry.Event) {
	failing := false
	watchLoop(ctx, w.r, ch, registry.SnapshotEvent(w.sent), func() []registry.Event {
		events, err := w.poll(time.Now())
		if err != nil {
			// Keep the last view: peers stay reachable while the directory
			// is unreadable, as they do while etcd is down.
			if !failing {
				w.r.log.Warn("watch: cannot read registry directory; keeping last view", "err", err)
				failing = true
			}
			return nil
		}
		if failing {
			w.r.log.Info("watch: registry directory readable again")
			failing = false
		}
		return events
	})
}

// poll looks at what may have changed and returns the events to send.
func (w *leaseWatch) poll(now time.Time) ([]registry.Event, error) {
	names, all := w.changes.poll()
	whole := all || now.Sub(w.lastRescan) >= rescanEvery
	if whole {
		if err := w.rescan(all, now); err != nil {
			return nil, err
		}
		w.lastRescan = now
	}
	if len(names) > 0 && !all {
		// A logged change may have moved a claim (a reclaim replaces an
		// index entry under the same name): look at every entry.
		if err := w.readClaims(true); err != nil {
			return nil, err
		}
	}
	for _, node := range names {
		w.refresh(node, now, false)
	}
	// Live leases whose known expiry has passed: most were renewed since.
	var expired []string
	for node, l := range w.sent {
		if !l.Live(now) {
			expired = append(expired, node)
			w.refresh(node, now, true)
		}
	}
	switch {
	case whole || len(names) > 0:
		// The claim index may have changed too: look at every node.
		return w.diffAll(now), nil
	case len(expired) > 0:
		return w.diff(expired, now), nil
	}
	return nil, nil
}

// diffAll compares every node's file with what was sent, makes it what
// was sent (expiries included), and returns the events.
func (w *leaseWatch) diffAll(now time.Time) []registry.Event {
	next := make(map[string]registry.Lease, len(w.sent))
	for node := range w.files {
		if l, ok := w.lease(node, now); ok {
			next[node] = l
		}
	}
	events := registry.Diff(w.sent, next)
	w.sent = next
	return events
}

// diff is diffAll for the nodes given only.
func (w *leaseWatch) diff(nodes []string, now time.Time) []registry.Event {
	prev := make(map[string]registry.Lease, len(nodes))
	next := make(map[string]registry.Lease, len(nodes))
	for _, node := range nodes {
		if l, ok := w.sent[node]; ok {
			prev[node] = l
		}
		if l, ok := w.lease(node, now); ok {
			next[node] = l
		}
	}
	events := registry.Diff(prev, next)
	for node := range prev {
		delete(w.sent, node)
	}
	for node, l := range next {
		w.sent[node] = l
	}
	return events
}
