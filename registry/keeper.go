package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/registry/internal/backend"
)

// HealthState is how a Keeper's lease is doing.
type HealthState uint8

const (
	// HealthStarting: no lease acquired yet, and no attempt failed.
	HealthStarting HealthState = iota
	// HealthOK: the last acquire or renewal succeeded.
	HealthOK
	// HealthDegraded: the last attempt failed. The data plane keeps
	// forwarding with the last known state meanwhile.
	HealthDegraded
)

func (s HealthState) String() string {
	switch s {
	case HealthStarting:
		return "starting"
	case HealthOK:
		return "ok"
	case HealthDegraded:
		return "degraded"
	}
	return fmt.Sprintf("HealthState(%d)", uint8(s))
}

// MarshalText makes the state print as its name in `weft status` JSON.
func (s HealthState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Health is a Keeper's report for `weft status`.
type Health struct {
	State     HealthState `json:"state"`
	Since     time.Time   `json:"since"`               // when State began
	LastError string      `json:"lastError,omitempty"` // the latest failure while degraded
	Failures  int         `json:"failures,omitempty"`  // consecutive failed attempts
	// LastOKStart is when the last successful Acquire or Renew was sent:
	// the registry was healthy at some moment after it.
	LastOKStart time.Time `json:"lastOKStart,omitzero"`
	Lease       Lease     `json:"lease"` // last lease the registry returned; zero before the first
	// Err is the latest failure while degraded, for errors.Is.
	Err error `json:"-"`
}

// KeeperConfig configures a Keeper.
type KeeperConfig struct {
	// Request is what the keeper acquires, and acquires again whenever the
	// lease is lost. Request.TTL 0 = DefaultTTL.
	Request AcquireRequest
	// RenewEvery: 0 = TTL/3, so two renewals may fail before expiry.
	RenewEvery time.Duration
	// MinBackoff, MaxBackoff pace retries after a failure. 0 = 250 ms and
	// RenewEvery.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds each Acquire and Renew, so a hung store cannot hold
	// the keeper past a renewal; except the last Renew before the lease's
	// expiry, which may run until the expiry (see renewDeadline).
	// 0 = RenewEvery.
	CallTimeout time.Duration
	// ReleaseOnStop: release the lease (freeing the subnet) when Run's
	// context ends. Off by default: a daemon that restarts wants its subnet
	// back, and an expired lease keeps its claim.
	ReleaseOnStop bool
	// OnAcquire, if set, is called from Run after every successful Acquire:
	// the first, and each one after a lost lease. The subnet stays the same
	// unless the claim itself was lost (released or reclaimed elsewhere), so
	// the daemon compares it with the one it runs on.
	OnAcquire func(Lease)
	// Logger: nil = slog.Default().
	Logger *slog.Logger
}

// Keeper holds one node's lease: it acquires it, renews it every
// RenewEvery, acquires it again if it was lost, and backs off while the
// registry fails. It never tears anything down on failure; it reports
// (Health) and logs the change to degraded once and the recovery once.
type Keeper struct {
	reg      Registry
	cfg      KeeperConfig
	log      *slog.Logger
	acquired chan struct{}
	started  atomic.Bool
	poked    chan struct{}

	mu     sync.Mutex
	health Health
	have   bool
}

// NewKeeper validates cfg and returns a keeper; Run starts it.
func NewKeeper(reg Registry, cfg KeeperConfig) (*Keeper, error) {
	req, err := cfg.Request.Normalize()
	if err != nil {
		return nil, fmt.Errorf("lease keeper: %w", err)
	}
	cfg.Request = req
	if cfg.RenewEvery <= 0 {
		cfg.RenewEvery = req.TTL / 3
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = min(250*time.Millisecond, cfg.RenewEvery)
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = cfg.RenewEvery
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = cfg.RenewEvery
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Keeper{
		reg:      reg,
		cfg:      cfg,
		log:      log.With("node", req.Node),
		acquired: make(chan struct{}),
		poked:    make(chan struct{}, 1),
		health:   Health{State: HealthStarting, Since: time.Now()},
	}, nil
}

// Acquired is closed once the first Acquire has succeeded.
func (k *Keeper) Acquired() <-chan struct{} { return k.acquired }

// Lease returns the last lease the registry returned, and whether there
// is one. It stays available while the keeper is degraded: that is the
// state the data plane keeps running on.
func (k *Keeper) Lease() (Lease, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.health.Lease, k.have
}

// Health returns the keeper's current report.
func (k *Keeper) Health() Health {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.health
}

// Poke asks for a renewal now rather than at the next period, to learn
// whether the registry is healthy (Health().LastOKStart moves if it is).
// It is ignored while the keeper is backing off after a failure.
func (k *Keeper) Poke() {
	select {
	case k.poked <- struct{}{}:
	default:
	}
}

// Run keeps the lease until ctx ends, then (if ReleaseOnStop) releases it
// and returns nil. A keeper runs once: a second Run returns an error.
func (k *Keeper) Run(ctx context.Context) error {
	if k.started.Swap(true) {
		return fmt.Errorf("lease keeper for %s: Run called twice", k.cfg.Request.Node)
	}
	bo := backend.Backoff{Min: k.cfg.MinBackoff, Max: k.cfg.MaxBackoff}
	held := false
	for {
		var err error
		if !held {
			err = k.acquire(ctx)
			held = err == nil
		} else if err = k.renew(ctx); errors.Is(err, ErrLeaseLost) {
			// Peers have dropped (or are about to drop) this node; get back
			// in at once rather than after a backoff.
			k.log.Warn("registry lease lost; acquiring again", "err", err)
			err = k.acquire(ctx)
			held = err == nil
		}
		if ctx.Err() != nil {
			break
		}
		wait := k.cfg.RenewEvery
		poked := k.poked
		if err != nil {
			k.failed(err)
			wait = bo.Next()
			poked = nil // back off: a poke must not turn into a retry storm
		} else {
			bo.Reset()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			continue
		case <-poked:
			t.Stop()
			continue
		case <-ctx.Done():
			t.Stop()
		}
		break
	}
	if k.cfg.ReleaseOnStop && held {
		rctx, cancel := context.WithTimeout(context.Background(), k.cfg.CallTimeout)
		defer cancel()
		if err := k.reg.Release(rctx, k.cfg.Request.Node); err != nil {
			k.log.Warn("registry lease not released on stop; it will expire", "err", err)
		}
	}
	return nil
}

func (k *Keeper) acquire(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, k.cfg.CallTimeout)
	defer cancel()
	start := time.Now()
	l, err := k.reg.Acquire(cctx, k.cfg.Request)
	if err != nil {
		return err
	}
	first := k.succeeded(l, start)
	// The node's data plane is built on this subnet now: acquiring again
	// (after a lost lease) must give this one or fail, never another.
	k.cfg.Request.Subnet = l.Subnet
	if first {
		close(k.acquired)
	}
	if k.cfg.OnAcquire != nil {
		k.cfg.OnAcquire(l)
	}
	return nil
}

func (k *Keeper) renew(ctx context.Context) error {
	start := time.Now()
	cctx, cancel := context.WithDeadline(ctx, k.renewDeadline(start))
	defer cancel()
	l, err := k.reg.Renew(cctx, k.cfg.Request.Node)
	if err != nil {
		return err
	}
	k.succeeded(l, start)
	return nil
}

// renewDeadline is when a renewal started at now gives up: CallTimeout
// later, so that an outage shows as degraded health and the keeper tries
// again; but if that would leave no room before the lease's expiry for
// another attempt (CallTimeout after MinBackoff), the lease's expiry.
// A renewal slowed by a busy machine but landing in time keeps the lease,
// while one given up and retried starts its wait again: with the defaults
// (renewal every TTL/3, CallTimeout the same) a second attempt could never
// fit, and two renewals slowed past TTL/3 lapsed the lease of a node that
// was up (issue 16, the sim's 6 s leases). One that cannot land before
// the expiry is lost either way.
func (k *Keeper) renewDeadline(now time.Time) time.Time {
	d := now.Add(k.cfg.CallTimeout)
	if l, ok := k.Lease(); ok && l.Expiry.After(d) && l.Expiry.Sub(d) < k.cfg.MinBackoff+k.cfg.CallTimeout {
		d = l.Expiry
	}
	return d
}

// succeeded records a good lease; first reports whether it is the first.
func (k *Keeper) succeeded(l Lease, start time.Time) (first bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := &k.health
	if h.State == HealthDegraded {
		k.log.Info("registry lease recovered", "degradedFor", time.Since(h.Since).Round(time.Millisecond),
			"failures", h.Failures, "expiry", l.Expiry)
	}
	if h.State != HealthOK {
		h.State, h.Since = HealthOK, time.Now()
	}
	h.LastError, h.Err, h.Failures, h.Lease, h.LastOKStart = "", nil, 0, l, start
	first = !k.have
	k.have = true
	return first
}

func (k *Keeper) failed(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := &k.health
	if h.State != HealthDegraded {
		k.log.Warn("registry lease degraded; forwarding continues with the last known state",
			"err", err, "leaseExpiry", h.Lease.Expiry)
		h.State, h.Since = HealthDegraded, time.Now()
	}
	h.LastError, h.Err = err.Error(), err
	h.Failures++
}
