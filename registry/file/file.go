// Package file is the registry backend for one machine: a directory that
// every weftd process of the machine (and of the simulation) shares.
//
// Layout:
//
//	DIR/lock              the claim lock (lock.go)
//	DIR/locks/NAME        node NAME's lock (lock.go)
//	DIR/nodes/NAME.json   the node's lease
//	DIR/subnets/A.B.C.D_N the claim index: the name of the node owning that subnet
//	DIR/changes           the change log: names of nodes whose file changed (changes.go)
//
// A node file is written to a temporary file and renamed over the old one,
// so readers never see half a record and need no lock. The claim (the
// index entry, see claims.go) outlives the lease's expiry: it gives the
// node its subnet back (see the registry package), even if its node file
// was damaged meanwhile. Both go away on Release, or when another node
// reclaims the subnet. A lease whose subnet the index gives to another
// node is not listed.
//
// # One subnet, one node
//
// Every claim is made under the claim lock: Acquire reads the index and
// every node file (a subnet an unindexed or damaged file names stays
// taken), picks the subnet, and creates its index entry with link(2),
// which fails rather than replace an entry that exists; the entry is
// fsynced (file and directory) before the node file is written, and the
// node file before Acquire returns. So two Acquires, in one process or in
// many, crashing or not, never hand out one subnet twice: the second one
// to take the lock sees the first one's entry on disk. Release and
// reclaim change the index under the same lock.
//
// # Renewals
//
// A renewal takes only its own node's lock (so that it never crosses an
// Acquire or Release of the same node), rewrites only its own file, and
// does not fsync: it moves an expiry, which after a crash of the machine
// means nothing (every holder died with it), and a file lost or torn by
// the crash is rewritten by its node's next Acquire while the claim,
// fsynced when it was made, keeps its subnet. So renewals never wait for
// other nodes nor for the disk (issue 16).
//
// Liveness is decided by comparing a lease's expiry with the clock, not by
// the file's presence, so one machine's clock is the only clock involved.
// Watch looks every poll interval (200 ms by default) at what may have
// changed (watch.go): a node that joins is seen within one poll, and one
// that stops renewing is Removed within one poll of its expiry.
package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/internal/backend"
)

// DefaultPollInterval is how often Watch looks for changes.
const DefaultPollInterval = 200 * time.Millisecond

// Config configures a client of one registry directory.
type Config struct {
	// Dir is the registry directory, created if missing. All clients of one
	// cluster on this machine use the same one.
	Dir string
	// PollInterval: how often Watch looks for changes. 0 = DefaultPollInterval.
	PollInterval time.Duration

	registry.Options
}

// Registry is a client of a registry directory. It implements
// registry.Registry.
type Registry struct {
	dir          string
	nodesDir     string
	claimsDir    string
	locksDir     string
	lockPath     string
	changesPath  string
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
	token  string
	ttl    time.Duration
	subnet netip.Prefix // a record naming another one was not written by this client
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
		dir:          cfg.Dir,
		nodesDir:     filepath.Join(cfg.Dir, "nodes"),
		claimsDir:    filepath.Join(cfg.Dir, "subnets"),
		locksDir:     filepath.Join(cfg.Dir, nodeLocksDir),
		lockPath:     filepath.Join(cfg.Dir, claimLockName),
		changesPath:  filepath.Join(cfg.Dir, changeLogName),
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
	for _, d := range []string{r.nodesDir, r.locksDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("file registry: create %s: %w", d, err)
		}
	}
	for _, p := range []string{r.lockPath, r.changesPath} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("file registry: create %s: %w", p, err)
		}
		f.Close()
	}
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
	unlock, err := r.lockClaims(ctx)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	defer unlock()
	unlockNode, err := r.lockNode(ctx, req.Node)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	defer unlockNode()

	recs, bad, err := r.readRecords()
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	idx, err := r.readClaims()
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	if err := r.indexLegacy(recs, bad, &idx); err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	now := time.Now()
	subnet, reclaimedFrom, err := r.claimFor(ctx, req.Node, req.Subnet, recs, bad, idx, now)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	if idx.byNode[req.Node] != subnet {
		if err := r.writeClaim(subnet, req.Node); err != nil {
			return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
		}
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
			Caps:      req.Caps,
		},
		Holder: backend.NewToken(),
	}
	if err := r.write(rec); err != nil {
		return registry.Lease{}, fmt.Errorf("acquire %s: %w", req.Node, err)
	}
	r.mu.Lock()
	r.held[req.Node] = holding{token: rec.Holder, ttl: req.TTL, subnet: subnet}
	r.mu.Unlock()
	r.logAndTrim(req.Node, reclaimedFrom)
	return rec.Lease, nil
}

// claimFor returns the subnet node may use: its claim in the index, else
// the first subnet of the pool nobody claims, else the subnet of the claim
// that has been dead longest, if that is longer than reclaimAfter (its file
// and index entry are removed). With want valid it is want or an
// ErrSubnetConflict. While an unreadable node file's subnet is unknown, no
// new subnet is handed out: it may be that one. Must hold the directory
// lock; reclaimedFrom names the node whose subnet was reclaimed, if any.
func (r *Registry) claimFor(ctx context.Context, node string, want netip.Prefix, recs map[string]record, bad map[string]badFile, idx claimIndex, now time.Time) (p netip.Prefix, reclaimedFrom string, err error) {
	if own, ok := idx.byNode[node]; ok {
		if want.IsValid() && own != want {
			return netip.Prefix{}, "", fmt.Errorf("the registry says %s claims %s, but it serves %s: %w", node, own, want, registry.ErrSubnetConflict)
		}
		return own, "", nil
	}
	claimed := make(map[netip.Prefix]string, len(recs)+len(idx.bySubnet))
	for p, owner := range idx.bySubnet {
		claimed[p] = owner
	}
	for _, name := range slices.Sorted(maps.Keys(recs)) {
		if _, ok := claimed[recs[name].Subnet]; !ok {
			claimed[recs[name].Subnet] = name
		}
	}
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		if p := bad[name].subnet; p.IsValid() {
			if _, ok := claimed[p]; !ok {
				claimed[p] = name
			}
		}
	}
	if unknown := unknownClaims(bad, idx); len(unknown) > 0 {
		return netip.Prefix{}, "", fmt.Errorf("node files %s are unreadable and their subnets unknown; no subnet is given to a new node until they are fixed or removed: %w",
			strings.Join(unknown, ", "), registry.ErrSubnetConflict)
	}
	if want.IsValid() {
		for p, owner := range claimed {
			if p.Overlaps(want) {
				return netip.Prefix{}, "", fmt.Errorf("%s serves %s, which %q claims: %w", node, want, owner, registry.ErrSubnetConflict)
			}
		}
		return want, "", nil
	}
	taken := make(map[netip.Prefix]bool, len(claimed))
	for p := range claimed {
		taken[p] = true
	}
	p, ok, err := backend.FirstFree(r.subnets, taken)
	if err != nil || ok {
		return p, "", err
	}
	var victim *record
	for _, name := range slices.Sorted(maps.Keys(recs)) {
		rec := recs[name]
		if name == node || !idx.owns(name, rec.Subnet) {
			continue // (node's own lock is held: it cannot be its own victim)
		}
		if rec.Expiry.Add(r.reclaimAfter).Before(now) && (victim == nil || rec.Expiry.Before(victim.Expiry)) {
			victim = &rec
		}
	}
	if victim == nil {
		return netip.Prefix{}, "", fmt.Errorf("all %d subnets are claimed (claims of dead nodes are kept for %v): %w",
			r.subnets.Count(), r.reclaimAfter, registry.ErrPoolExhausted)
	}
	if err := r.reclaim(ctx, *victim); err != nil {
		return netip.Prefix{}, "", fmt.Errorf("reclaim %s from %s: %w", victim.Subnet, victim.Node, err)
	}
	r.log.Info("reclaimed subnet of a long-dead node", "subnet", victim.Subnet,
		"from", victim.Node, "expired", victim.Expiry, "to", node)
	return victim.Subnet, victim.Node, nil
}

// reclaim removes a long-dead node's file and claim, under its node lock
// (a renewal of it would fail anyway: its lease expired long ago). Must
// hold the claim lock.
func (r *Registry) reclaim(ctx context.Context, victim record) error {
	unlock, err := r.lockNode(ctx, victim.Node)
	if err != nil {
		return err
	}
	defer unlock()
	if err := r.remove(victim.Node); err != nil {
		return err
	}
	return r.removeClaim(victim.Subnet, victim.Node)
}

// logAndTrim appends the nodes changed under the claim lock to the change
// log (and trims it). The change itself is done and durable by then, so a
// failure (a full disk) is logged once, not returned: watchers then find
// a new or vanished node at their next rescan (watch.go), but may miss a
// change to a live node's lease until it is acquired again.
func (r *Registry) logAndTrim(nodes ...string) {
	nodes = slices.DeleteFunc(nodes, func(n string) bool { return n == "" })
	err := r.logChanges(nodes...)
	if err == nil {
		err = r.trimChangeLog()
	}
	if err != nil {
		r.warnOnce(err)
	}
}

// releaseClaims removes node's claims from the index: the one the index
// gives it and subnet (its record's), each only if the index names node.
// Must hold the directory lock.
func (r *Registry) releaseClaims(node string, subnet netip.Prefix) error {
	idx, err := r.readClaims()
	if err != nil {
		return err
	}
	for _, p := range []netip.Prefix{idx.byNode[node], subnet} {
		if p.IsValid() {
			if err := r.removeClaim(p, node); err != nil {
				return err
			}
		}
	}
	return nil
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
	// Only this node's lock: see the package comment.
	unlock, err := r.lockNode(ctx, node)
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
	case errors.Is(err, errCorrupt):
		// Acquire rewrites it from the claim index.
		lost = "in an unreadable node file (" + err.Error() + ")"
	case err != nil:
		return registry.Lease{}, fmt.Errorf("renew %s: %w", node, err)
	case rec.Holder != h.token:
		lost = "acquired by another client"
	case rec.Subnet != h.subnet:
		lost = fmt.Sprintf("rewritten with subnet %s, not the %s this client acquired", rec.Subnet, h.subnet)
	case !rec.Live(now):
		lost = "expired at " + rec.Expiry.Format(time.RFC3339Nano)
	}
	if lost != "" {
		r.forget(node, h.token)
		return registry.Lease{}, fmt.Errorf("renew %s: lease %s: %w", node, lost, registry.ErrLeaseLost)
	}
	was := rec.Expiry
	rec.Expiry = now.Add(h.ttl)
	if err := r.writeRenewal(rec); err != nil {
		return registry.Lease{}, fmt.Errorf("renew %s: %w", node, err)
	}
	// A watcher that read the file at or after the old expiry has told its
	// consumer the lease is gone, and will not read it again unprompted:
	// tell it the lease is back. (It can only have, if the new file landed
	// after the old expiry; the second is slack for the clock.)
	if !time.Now().Add(lateRenewalSlack).Before(was) {
		if err := r.logChanges(node); err != nil {
			r.warnOnce(err)
		}
	}
	return rec.Lease, nil
}

// lateRenewalSlack: a renewal landing this close to the old expiry is
// logged as a change (see Renew).
const lateRenewalSlack = time.Second

// Release implements registry.Registry.
func (r *Registry) Release(ctx context.Context, node string) error {
	if err := registry.ValidateNodeName(node); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	unlock, err := r.lockClaims(ctx)
	if err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	defer unlock()
	unlockNode, err := r.lockNode(ctx, node)
	if err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	defer unlockNode()

	r.mu.Lock()
	h := r.held[node]
	r.mu.Unlock()
	rec, err := r.read(node)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No lease; a claim may remain in the index.
		if err := r.releaseClaims(node, netip.Prefix{}); err != nil {
			return fmt.Errorf("release %s: %w", node, err)
		}
		r.forget(node, h.token)
		r.logAndTrim(node)
		return nil
	case errors.Is(err, errCorrupt):
		// Nobody can renew an unreadable lease: end it with its claim.
	case err != nil:
		return fmt.Errorf("release %s: %w", node, err)
	case rec.Holder != h.token && rec.Live(time.Now()):
		return fmt.Errorf("release %s: live lease held by another client: %w", node, registry.ErrLeaseLost)
	}
	if err := r.remove(node); err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	if err := r.releaseClaims(node, rec.Subnet); err != nil {
		return fmt.Errorf("release %s: %w", node, err)
	}
	r.forget(node, h.token)
	r.logAndTrim(node)
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
	live, err := r.liveView(time.Now())
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	out := make([]registry.Lease, 0, len(live))
	for _, l := range live {
		out = append(out, l)
	}
	registry.SortLeases(out)
	return out, nil
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

// liveView returns the live leases whose subnet the claim index lets their
// node advertise (a forged or stale file naming another node's subnet is
// left out and logged once).
func (r *Registry) liveView(now time.Time) (map[string]registry.Lease, error) {
	recs, _, err := r.readRecords()
	if err != nil {
		return nil, err
	}
	idx, err := r.readClaims()
	if err != nil {
		return nil, err
	}
	live := make(map[string]registry.Lease, len(recs))
	for name, rec := range recs {
		if !rec.Live(now) {
			continue
		}
		if !idx.owns(name, rec.Subnet) {
			r.warnNotOwned(name, rec.Subnet, idx)
			continue
		}
		live[name] = rec.Lease
	}
	return live, nil
}

// warnNotOwned logs (once) a live lease left out because the claim index
// gives its subnet to another node, or the node another subnet.
func (r *Registry) warnNotOwned(node string, subnet netip.Prefix, idx claimIndex) {
	r.warnOnce(fmt.Errorf("node file %s.json: subnet %s is not its claim (the claim index gives %s to %q, and %q %s); not listed",
		node, subnet, subnet, idx.bySubnet[subnet], node, idx.byNode[node]))
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
		return record{}, fmt.Errorf("node file %s.json: %w: %w", node, errCorrupt, err)
	}
	if rec.Node != node {
		return record{}, fmt.Errorf("node file %s.json: %w: names node %q", node, errCorrupt, rec.Node)
	}
	if !rec.Subnet.IsValid() {
		return record{}, fmt.Errorf("node file %s.json: %w: no valid subnet", node, errCorrupt)
	}
	return rec, nil
}

// readRecords returns every record in the directory, and the node files
// that cannot be decoded (logged once each). A bad file cannot stop the
// cluster: its node rewrites it on its next acquire, and the claim index
// keeps its subnet claimed meanwhile.
func (r *Registry) readRecords() (map[string]record, map[string]badFile, error) {
	entries, err := os.ReadDir(r.nodesDir)
	if err != nil {
		return nil, nil, fmt.Errorf("read registry directory: %w", err)
	}
	recs := make(map[string]record, len(entries))
	bad := map[string]badFile{}
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
		if registry.ValidateNodeName(node) == nil {
			bad[node] = badFile{err: err, subnet: salvageSubnet(b)}
		}
	}
	return recs, bad, nil
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
	b, err := encode(rec)
	if err != nil {
		return err
	}
	if err := writeFileSynced(r.nodesDir, rec.Node+".json", b); err != nil {
		return fmt.Errorf("write node record: %w", err)
	}
	return nil
}

// writeRenewal replaces rec's file without fsync (see the package
// comment: a renewal is worth nothing after a crash), with the new expiry
// as its modification time: a watch that knew the file before learns the
// renewal from a stat(2) alone (watch.go).
func (r *Registry) writeRenewal(rec record) error {
	b, err := encode(rec)
	if err != nil {
		return err
	}
	if err := writeFile(r.nodesDir, rec.Node+".json", b, false, rec.Expiry); err != nil {
		return fmt.Errorf("write node record: %w", err)
	}
	return nil
}

func encode(rec record) ([]byte, error) {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode node record: %w", err)
	}
	return append(b, '\n'), nil
}

func (r *Registry) remove(node string) error {
	if err := os.Remove(r.path(node)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove node record: %w", err)
	}
	return r.syncDir()
}

func (r *Registry) syncDir() error { return syncDir(r.nodesDir) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync registry directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync registry directory: %w", err)
	}
	return nil
}
