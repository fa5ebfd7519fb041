// Package registry is the cluster's shared state: one lease per node saying
// where the node is on the underlay, which pod subnet it owns and how to
// reach its router, plus a watch over those leases.
//
// Two backends implement [Registry] and pass one conformance suite
// (registry/registrytest): registry/file, a directory shared by the weftd
// processes of one machine (the default, and the simulation's), and
// registry/etcd for clusters of many machines. [Keeper] keeps one node's
// lease alive over either of them.
//
// # Subnet claims
//
// A subnet belongs to a node name, not to a lease. When a lease expires the
// node disappears from [Registry.List] and watchers see [Removed], but its
// subnet stays claimed for it: the same name gets the same subnet back from
// [Registry.Acquire], whichever client asks and however long the node was
// away. A claim ends only by [Registry.Release] (graceful shutdown), or when
// the pool has no never-claimed subnet left and the claim's lease has been
// expired for longer than [Options.ReclaimAfter] (default 24 h): only then
// may another node take it over. So a node that reboots keeps its pods'
// addresses, and a pool that fills up with long-dead nodes still drains.
//
// # Leases and clients
//
// A lease is held by the client (the [Registry] value) that acquired it.
// Renew and Release act for that holder only: if the lease expired, or
// another client acquired the same node name since (a restarted daemon, a
// duplicate node), they fail with an error wrapping [ErrLeaseLost], and the
// [Keeper] acquires again.
//
// # Watch
//
// [Registry.Watch] first sends exactly one [Snapshot] event holding every
// live lease, then [Added], [Changed] and [Removed] events in the order they
// happened. A lease that expires is [Removed]. A renewal that only moves the
// expiry sends nothing: watchers build peer tables, which do not depend on
// it.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/weftnet/weft/packet"
)

// DefaultTTL is the lease lifetime when [AcquireRequest.TTL] is zero. The
// [Keeper] renews every TTL/3, so two renewals may fail before the lease
// lapses.
const DefaultTTL = 30 * time.Second

// DefaultReclaimAfter is how long a claim outlives its expired lease before
// another node may take the subnet over, when [Options.ReclaimAfter] is zero.
const DefaultReclaimAfter = 24 * time.Hour

// MaxNodeNameLen bounds node names: a DNS name fits, and so does a file name.
const MaxNodeNameLen = 253

// Errors callers branch on. Backends wrap them with context; test with
// errors.Is.
var (
	// ErrPoolExhausted: every subnet of the pool is claimed by another node.
	ErrPoolExhausted = errors.New("subnet pool exhausted")
	// ErrLeaseLost: the lease expired, was released, or was acquired by
	// another client since; acquire again.
	ErrLeaseLost = errors.New("lease lost")
	// ErrUnavailable: the backing store did not answer (etcd down or
	// unreachable). The operation may be retried.
	ErrUnavailable = errors.New("registry store unavailable")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("registry client closed")
	// ErrSubnetConflict: AcquireRequest.Subnet is not the node's claim, or
	// is claimed by another node. The node must not be moved to another
	// subnet under its running pods; a person must look.
	ErrSubnetConflict = errors.New("subnet conflicts with the registry's claims")
	// ErrForbidden: a store that authorizes its clients (the Kubernetes
	// API server) refused this client's credentials the operation. Not
	// retried: a person must grant the right or use other credentials.
	ErrForbidden = errors.New("forbidden")
)

// Lease is one node's entry in the registry. It is a value: copy it freely.
type Lease struct {
	Node      string       `json:"node"`
	Underlay  netip.Addr   `json:"underlay"`  // where peers send VXLAN
	Subnet    netip.Prefix `json:"subnet"`    // the node's pod subnet
	RouterMAC packet.MAC   `json:"routerMAC"` // inner destination MAC for frames to this node
	VNI       uint32       `json:"vni"`
	Port      uint16       `json:"port,omitempty"` // VXLAN UDP port; 0 = the cluster default
	Expiry    time.Time    `json:"expiry"`
	// Foreign marks a node that runs no weftd (a kernel VXLAN node),
	// registered by an operator with a ForeignTTL lease (foreign.go).
	Foreign bool `json:"foreign,omitempty"`
	// Caps are the data-path features the node's weftd takes from its
	// peers. Absent (0) in the leases of older weftds and of foreign
	// nodes: peers then send them nothing but plain VXLAN. Decoders ignore
	// unknown fields, so older weftds read leases that carry it.
	Caps Caps `json:"caps,omitempty"`
}

// Caps is a set of capabilities a node advertises in its lease.
type Caps uint32

// CapPartialCsum: the node takes VXLAN with weft's partial-checksum flag
// (overlay.FlagPartialCsum) and writes such frames to its pods as
// CHECKSUM_PARTIAL, so a sender need not compute their inner checksums.
const CapPartialCsum Caps = 1 << 0

// Has reports whether every capability of c is in cs.
func (cs Caps) Has(c Caps) bool { return cs&c == c }

// SameAs reports whether l and o describe the same node the same way,
// ignoring Expiry (which every renewal moves).
func (l Lease) SameAs(o Lease) bool {
	l.Expiry, o.Expiry = time.Time{}, time.Time{}
	return l == o
}

// Live reports whether l has not expired at now.
func (l Lease) Live(now time.Time) bool { return now.Before(l.Expiry) }

// AcquireRequest describes the node asking for a lease.
type AcquireRequest struct {
	Node      string
	Underlay  netip.Addr
	RouterMAC packet.MAC
	VNI       uint32
	Port      uint16
	TTL       time.Duration // 0 = DefaultTTL; backends may round up (etcd: whole seconds, server minimum)
	Foreign   bool          // see Lease.Foreign
	Caps      Caps          // see Lease.Caps
	// Subnet, if valid, is the subnet the node already serves: Acquire
	// gives it exactly that one (claiming it if the node has no claim and
	// it is free) or fails with ErrSubnetConflict, so that a lost or
	// forged claim never makes a node advertise a subnet it does not serve.
	Subnet netip.Prefix
}

// Normalize validates r and fills in defaults.
func (r AcquireRequest) Normalize() (AcquireRequest, error) {
	if err := ValidateNodeName(r.Node); err != nil {
		return r, err
	}
	if !r.Underlay.IsValid() || r.Underlay.IsUnspecified() {
		return r, fmt.Errorf("node %s: underlay address %v is not a usable address", r.Node, r.Underlay)
	}
	if r.Subnet.IsValid() && (!r.Subnet.Addr().Is4() || r.Subnet != r.Subnet.Masked()) {
		return r, fmt.Errorf("node %s: subnet %v is not a masked IPv4 prefix", r.Node, r.Subnet)
	}
	switch {
	case r.TTL < 0:
		return r, fmt.Errorf("node %s: negative TTL %v", r.Node, r.TTL)
	case r.TTL == 0:
		r.TTL = DefaultTTL
	}
	return r, nil
}

// ValidateNodeName accepts what Kubernetes accepts as a node name (DNS
// labels: letters, digits, '-', '.') plus '_', so a name is also a safe file
// name and etcd key segment.
func ValidateNodeName(name string) error {
	if name == "" {
		return errors.New("empty node name")
	}
	if len(name) > MaxNodeNameLen {
		return fmt.Errorf("node name %.20q...: longer than %d bytes", name, MaxNodeNameLen)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("node name %q: must start with a letter or digit", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_'
		if !ok {
			return fmt.Errorf("node name %q: byte %d (%q) not in [A-Za-z0-9._-]", name, i, c)
		}
	}
	return nil
}

// SubnetSource is the pool of node subnets, in the order they are handed
// out. ipam.SubnetPool satisfies it. Every client of one registry must use
// the same pool.
type SubnetSource interface {
	Count() int
	Nth(i int) (netip.Prefix, error)
}

// Options are the settings every backend shares.
type Options struct {
	// Subnets is the pool Acquire allocates from. Required for Acquire;
	// List, Watch, Renew and Release work without it.
	Subnets SubnetSource
	// ReclaimAfter: how long a claim outlives its expired lease before
	// another node may take the subnet over (only once the pool has no
	// never-claimed subnet left). 0 = DefaultReclaimAfter.
	ReclaimAfter time.Duration
	// Logger receives the backend's rare events (skipped corrupt records,
	// watch reconnects). nil = slog.Default().
	Logger *slog.Logger
}

// ReclaimAfterOrDefault returns ReclaimAfter, or DefaultReclaimAfter if unset.
func (o Options) ReclaimAfterOrDefault() time.Duration {
	if o.ReclaimAfter <= 0 {
		return DefaultReclaimAfter
	}
	return o.ReclaimAfter
}

// LoggerOrDefault returns Logger, or slog.Default() if unset.
func (o Options) LoggerOrDefault() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// EventType says what happened to a lease.
type EventType uint8

const (
	// Snapshot is the first event of every watch: Event.Leases holds every
	// live lease (possibly none).
	Snapshot EventType = iota + 1
	// Added: a node got a live lease (new, or back after expiry).
	Added
	// Changed: a live lease changed something other than its expiry.
	Changed
	// Removed: a lease expired or was released. Event.Lease is its last
	// known state.
	Removed
)

func (t EventType) String() string {
	switch t {
	case Snapshot:
		return "snapshot"
	case Added:
		return "added"
	case Changed:
		return "changed"
	case Removed:
		return "removed"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one message of a watch.
type Event struct {
	Type   EventType
	Lease  Lease   // Added, Changed, Removed
	Leases []Lease // Snapshot only, sorted by node name
}

// Registry is one client of the cluster's shared lease store. All methods
// are safe for concurrent use.
type Registry interface {
	// Acquire gives req.Node a live lease on its claimed subnet, claiming a
	// free one first if the node has none. It replaces any lease the node
	// already has (from this or another client), which makes the other
	// holder's Renew fail with ErrLeaseLost. Errors: ErrPoolExhausted,
	// ErrUnavailable, validation errors.
	Acquire(ctx context.Context, req AcquireRequest) (Lease, error)
	// Renew extends the lease this client acquired for node by its TTL.
	// ErrLeaseLost if it expired, was released, was taken over, or was never
	// acquired through this client.
	Renew(ctx context.Context, node string) (Lease, error)
	// Release ends node's lease and frees its subnet. Releasing a node with
	// no claim is not an error; releasing a live lease another client holds
	// is (ErrLeaseLost), and changes nothing.
	Release(ctx context.Context, node string) error
	// List returns the live leases, sorted by node name.
	List(ctx context.Context) ([]Lease, error)
	// Watch sends a Snapshot, then changes, until ctx ends or the client is
	// closed; then it closes the channel. The backend keeps retrying a
	// broken connection, and catches up once it is back.
	Watch(ctx context.Context) (<-chan Event, error)
	// Close ends every watch of this client and releases its resources. It
	// does not release leases: they expire unless another client renews.
	Close() error
}
