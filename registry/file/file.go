// Package file is the registry backend for one machine: a directory that
// every weftd process of the machine (and of the simulation) shares.
//
// Layout:
//
//	DIR/lock              flock(2)ed around every change
//	DIR/nodes/NAME.json   the node's lease, which is also its subnet claim
//
// A node file is written to a temporary file, fsynced and renamed over the
// old one (and the directory fsynced), so readers never see half a record
// and need no lock. The file outlives the lease's expiry: it is the claim
// that gives the node its subnet back (see the registry package). It goes
// away on Release, or when another node reclaims the subnet.
//
// Liveness is decided by comparing a lease's expiry with the clock, not by
// the file's presence, so one machine's clock is the only clock involved.
// Watch polls the directory (every 200 ms by default) and diffs: a node that
// joins is seen within one poll, and one that stops renewing is Removed
// within one poll of its expiry.
package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/internal/backend"
)

// DefaultPollInterval is how often Watch re-reads the directory.
const DefaultPollInterval = 200 * time.Millisecond

// Config configures a client of one registry directory.
type Config struct {
	// Dir is the registry directory, created if missing. All clients of one
	// cluster on this machine use the same one.
	Dir string
	// PollInterval: how often Watch re-reads Dir. 0 = DefaultPollInterval.
	PollInterval time.Duration

	registry.Options
}

// Registry is a client of a registry directory. It implements
// registry.Registry.
type Registry struct {
	nodesDir     string
	lockPath     string
	pollInterval time.Duration
	subnets      registry.SubnetSource
	reclaimAfter time.Duration
	log          *slog.Logger

	mu   sync.Mutex
	held map[string]holding // leases this client acquired, by node
	// warned holds the corrupt-record messages already logged, so a bad
	// file costs one log line, not one per poll.
	warned map[string]bool

	closed    chan struct{}
	closeOnce sync.Once
	watchers  sync.WaitGroup
}

var _ registry.Registry = (*Registry)(nil)

// holding is what this client needs to renew a lease it acquired: the token
// written into the record (so a record another client wrote over is
// recognised) and the TTL asked for.
type holding struct {
	token string
	ttl   time.Duration
}

// record is a node file: the lease plus the token of the client holding it.
type record struct {
	registry.Lease
	Holder string `json:"holder"`
}

// Open makes a client of the registry directory cfg.Dir, creating it if
// needed.
func Open(cfg Config) (*Registry, error) {
	if cfg.Dir == "" {
		return nil, errors.New("file registry: no directory given")
	}
	r := &Registry{
		nodesDir:     filepath.Join(cfg.Dir, "nodes"),
		lockPath:     filepath.Join(cfg.Dir, "lock"),
		pollInterval: cfg.PollInterval,
		subnets:      cfg.Subnets,
		reclaimAfter: cfg.ReclaimAfterOrDefault(),
		log:          cfg.LoggerOrDefault().With("registry", "file", "dir", cfg.Dir),
		held:         make(map[string]holding),
		warned:       make(map[string]bool),
		closed:       make(chan struct{}),
	}
	if r.pollInterval <= 0 {
		r.pollInterval = DefaultPollInterval
	}
	if err := os.MkdirAll(r.nodesDir, 0o755); err != nil {
		return nil, fmt.Errorf("file registry: create %s: %w", r.nodesDir, err)
	}
	f, err := os.OpenFile(r.lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file registry: create lock file: %w", err)
	}
	f.Close()
	return r, nil
}

// Acquire implements registry.Registry.
func (r *Registry) Acquire(ctx context.Context, req registry.AcquireRequest) (registry.Lease, error) {
	req, err := req.Normalize()
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	unlock, err := r.lock(ctx)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	defer unlock()

	recs, err := r.readAll()
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	now := time.Now()
	subnet, err := r.claimFor(req.Node, recs, now)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	rec := record{
		Lease: registry.Lease{
			Node:      req.Node,
			Underlay:  req.Underlay,
			Subnet:    subnet,
			RouterMAC: req.RouterMAC,
			VNI:       req.VNI,
			Port:      req.Port,
			Expiry:    now.Add(req.TTL),
			Foreign:   req.Foreign,
		},
		Holder: backend.NewToken(),
	}
	if err := r.write(rec); err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	r.mu.Lock()
	r.held[req.Node] = holding{token: rec.Holder, ttl: req.TTL}
	r.mu.Unlock()
	return rec.Lease, nil
}

// claimFor returns the subnet node may use: its own claim, else the first
// never-claimed subnet of the pool, else the subnet of the claim that has
// been dead longest, if that is longer than reclaimAfter (its file is
// removed). Must hold the directory lock.
func (r *Registry) claimFor(node string, recs map[string]record, now time.Time) (netip.Prefix, error) {
	if own, ok := recs[node]; ok {
		return own.Subnet, nil
	}
	claimed := make(map[netip.Prefix]bool, len(recs))
	for _, rec := range recs {
		claimed[rec.Subnet] = true
	}
	p, ok, err := backend.FirstFree(r.subnets, claimed)
	if err != nil || ok {
		return p, err
	}
	var victim *record
	for _, rec := range recs {
		if rec.Expiry.Add(r.reclaimAfter).Before(now) && (victim == nil || rec.Expiry.Before(victim.Expiry)) {
			victim = &rec
		}
	}
	if victim == nil {
		return netip.Prefix{}, fmt.Errorf("all %d subnets are claimed (claims of dead nodes are kept for %v): %w",
			r.subnets.Count(), r.reclaimAfter, registry.ErrPoolExhausted)
	}
	if err := r.remove(victim.Node); err != nil {
		return netip.Prefix{}, fmt.Errorf("reclaim %s from %s: %w", victim.Subnet, victim.Node, err)
	}
	r.log.Info("reclaimed subnet of a long-dead node", "subnet", victim.Subnet,
		"from", victim.Node, "expired", victim.Expiry, "to", node)
	return victim.Subnet, nil
}

// Renew implements registry.Registry.
func (r *Registry) Renew(ctx context.Context, node string) (registry.Lease, error) {
	if err := r.checkOpen(); err != nil {
		return registry.Lease{}, fmt.Errorf("renew %s: %w", node, err)
	}
	r.mu.Lock()
	h, ok := r.held[node]
	r.mu.Unlock()
	if !ok {
		return registry.Lease{}, fmt.Errorf("renew %s: not acquired by this client: %w", node, registry.ErrLeaseLost)
	}
	unlock, err := r.lock(ctx)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("renew %s: %w", node, err)
	}
	defer unlock()

	rec, err := r.read(node)
	now := time.Now()
	var lost string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		lost = "released"
	case err != nil:
		return registry.Lease{}, fmt.Errorf("renew %s: %w", node, err)
	case rec.Holder != h.token:
		lost = "acquired by another client"
	case !rec.Live(now):
		lost = "expired at " + rec.Expiry.Format(time.RFC3339Nano)
	}
	if lost != "" {
		r.forget(node, h.token)
		return registry.Lease{}, fmt.Errorf("renew %s: lease %s: %w", node, lost, registry.ErrLeaseLost)
	}
	rec.Expiry = now.Add(h.ttl)
	if err := r.write(rec); err != nil {
		return registry.Lease{}, fmt.Errorf("renew %s: %w", node, err)
	}
	return rec.Lease, nil
}

// Release implements registry.Registry.
func (r *Registry) Release(ctx context.Context, node string) error {
	if err := registry.ValidateNodeName(node); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	unlock, err := r.lock(ctx)
	if err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	defer unlock()

	r.mu.Lock()
	h := r.held[node]
	r.mu.Unlock()
	rec, err := r.read(node)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.forget(node, h.token)
		return nil
	case err != nil:
		return fmt.Errorf("release %s: %w", node, err)
	case rec.Holder != h.token && rec.Live(time.Now()):
		return fmt.Errorf("release %s: live lease held by another client: %w", node, registry.ErrLeaseLost)
	}
	if err := r.remove(node); err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	r.forget(node, h.token)
	return nil
}

// List implements registry.Registry.
func (r *Registry) List(ctx context.Context) ([]registry.Lease, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	recs, err := r.readAll()
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	live := liveLeases(recs, time.Now())
	out := make([]registry.Lease, 0, len(live))
	for _, l := range live {
		out = append(out, l)
	}
	registry.SortLeases(out)
	return out, nil
}

// Watch implements registry.Registry: one Snapshot, then the differences
// between successive polls of the directory.
func (r *Registry) Watch(ctx context.Context) (<-chan registry.Event, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	recs, err := r.readAll()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	ch := make(chan registry.Event, 16)
	r.watchers.Add(1)
	go r.watch(ctx, ch, liveLeases(recs, time.Now()))
	return ch, nil
}

func (r *Registry) watch(ctx context.Context, ch chan<- registry.Event, prev map[string]registry.Lease) {
	defer r.watchers.Done()
	defer close(ch)
	send := func(ev registry.Event) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
		case <-r.closed:
		}
		return false
	}
	if !send(registry.SnapshotEvent(prev)) {
		return
	}
	tick := time.NewTicker(r.pollInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		case <-r.closed:
			return
		}
		recs, err := r.readAll()
		if err != nil {
			// Keep the last view: peers stay reachable while the directory
			// is unreadable, as they do while etcd is down.
			if !failing {
				r.log.Warn("watch: cannot read registry directory; keeping last view", "err", err)
				failing = true
			}
			continue
		}
		if failing {
			r.log.Info("watch: registry directory readable again")
			failing = false
		}
		next := liveLeases(recs, time.Now())
		for _, ev := range registry.Diff(prev, next) {
			if !send(ev) {
				return
			}
		}
		prev = next
	}
}

// Close implements registry.Registry.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	r.watchers.Wait()
	return nil
}

func (r *Registry) checkOpen() error {
	select {
	case <-r.closed:
		return registry.ErrClosed
	default:
		return nil
	}
}

// forget drops this client's hold on node if it is still the one with token.
func (r *Registry) forget(node, token string) {
	r.mu.Lock()
	if h, ok := r.held[node]; ok && h.token == token {
		delete(r.held, node)
	}
	r.mu.Unlock()
}

func liveLeases(recs map[string]record, now time.Time) map[string]registry.Lease {
	live := make(map[string]registry.Lease, len(recs))
	for name, rec := range recs {
		if rec.Live(now) {
			live[name] = rec.Lease
		}
	}
	return live
}

// lock takes the directory's exclusive flock. flock(2) cannot be
// interrupted by a context, so it is polled without blocking instead.
func (r *Registry) lock(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(r.lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the descriptor drops the flock.
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", r.lockPath, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", r.lockPath, ctx.Err())
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

func (r *Registry) path(node string) string {
	return filepath.Join(r.nodesDir, node+".json")
}

// read returns node's record; the error wraps fs.ErrNotExist if there is
// none.
func (r *Registry) read(node string) (record, error) {
	b, err := os.ReadFile(r.path(node))
	if err != nil {
		return record{}, err
	}
	return decode(node, b)
}

func decode(node string, b []byte) (record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, fmt.Errorf("node file %s.json: %w", node, err)
	}
	if rec.Node != node {
		return record{}, fmt.Errorf("node file %s.json: names node %q", node, rec.Node)
	}
	if !rec.Subnet.IsValid() {
		return record{}, fmt.Errorf("node file %s.json: no valid subnet", node)
	}
	return rec, nil
}

// readAll returns every record in the directory. A file that cannot be
// decoded is logged once and skipped, so one bad file cannot stop the
// cluster; its node writes a good one on its next acquire.
func (r *Registry) readAll() (map[string]record, error) {
	entries, err := os.ReadDir(r.nodesDir)
	if err != nil {
		return nil, fmt.Errorf("read registry directory: %w", err)
	}
	recs := make(map[string]record, len(entries))
	for _, e := range entries {
		name := e.Name()
		node, ok := strings.CutSuffix(name, ".json")
		if !ok || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.nodesDir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // released between ReadDir and here
		}
		if err == nil {
			var rec record
			if rec, err = decode(node, b); err == nil {
				recs[node] = rec
				continue
			}
		}
		r.warnOnce(err)
	}
	return recs, nil
}

func (r *Registry) warnOnce(err error) {
	msg := err.Error()
	r.mu.Lock()
	seen := r.warned[msg]
	r.warned[msg] = true
	r.mu.Unlock()
	if !seen {
		r.log.Warn("skipping unreadable node record", "err", err)
	}
}

// write stores rec durably: temp file, fsync, rename, fsync directory.
func (r *Registry) write(rec record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node record: %w", err)
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(r.nodesDir, "."+rec.Node+".tmp-*")
	if err != nil {
		return fmt.Errorf("write node record: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write node record: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write node record: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write node record: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write node record: %w", err)
	}
	if err := os.Rename(tmp.Name(), r.path(rec.Node)); err != nil {
		return fmt.Errorf("write node record: %w", err)
	}
	return r.syncDir()
}

func (r *Registry) remove(node string) error {
	if err := os.Remove(r.path(node)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove node record: %w", err)
	}
	return r.syncDir()
}

func (r *Registry) syncDir() error {
	d, err := os.Open(r.nodesDir)
	if err != nil {
		return fmt.Errorf("fsync registry directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync registry directory: %w", err)
	}
	return nil
}
