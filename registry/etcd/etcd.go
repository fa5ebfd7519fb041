// Package etcd is the registry backend for clusters of many machines,
// kept in etcd (v3 API; tested against etcd 3.4 and newer).
//
// Key layout, under /weft/<cluster>/:
//
//	nodes/<name>     the node's lease as JSON, attached to an etcd lease with
//	                 the lease's TTL: when renewals stop, etcd deletes the key
//	                 and every watcher sees the DELETE
//	claims/<name>    {"subnet", "aliveUntil"}: the node's subnet claim, with
//	                 no etcd lease, so it outlives the node key
//	subnets/<cidr>   the name of the node claiming that subnet
//
// A claim is made by a transaction that succeeds only if neither the subnet
// key nor the node's claim key exists (CreateRevision = 0), so two nodes
// racing for a subnet cannot both win; the loser reads again and tries the
// next free one. claims/<name> and subnets/<cidr> always change together,
// in one transaction.
//
// Renewal is an etcd KeepAliveOnce plus a read that checks the node key
// still carries this client's etcd lease; it writes nothing, so renewals
// cost watchers nothing. The claim's aliveUntil is refreshed every quarter
// of ReclaimAfter, and a claim is reclaimed only once aliveUntil plus that
// quarter plus ReclaimAfter has passed, so a node is dead for at least
// ReclaimAfter before its subnet goes to another node.
//
// Expiry: List asks etcd for each lease's remaining TTL (whole seconds,
// rounded up); watch events carry the expiry written at Acquire (renewals
// send no events).
//
// Watch lists nodes/ (or takes the read of a List made less than 5 s
// before, as a starting node lists, then watches) and then watches it from
// the next revision, applying each event as a delta. After a
// disconnect the client resumes from the last revision seen; if that
// revision was compacted meanwhile, it lists again and sends the difference.
// If etcd is unreachable, calls fail with ErrUnavailable once their context
// (or Config.RequestTimeout) ends.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftnet/weft/registry"
)

// DefaultRequestTimeout bounds a call whose context has no deadline.
const DefaultRequestTimeout = 5 * time.Second

// maxTxnAttempts bounds the read-then-transact loops. Each failed attempt
// means another client changed the same keys in between, so only a very
// busy pool gets near it.
const maxTxnAttempts = 100

// Config configures a client of the registry in etcd.
type Config struct {
	// Endpoints of the etcd cluster, e.g. "http://10.0.0.1:2379".
	Endpoints []string
	// Cluster names the key prefix /weft/<Cluster>/, so clusters can share
	// one etcd. "" = "default".
	Cluster string
	// Client, if set, is used instead of dialling Endpoints, and is not
	// closed by Close.
	Client *clientv3.Client
	// DialTimeout: 0 = 5 s. Open does not wait for etcd: an unreachable
	// etcd shows up as failing calls (and a degraded Keeper), not as a
	// failure to start.
	DialTimeout time.Duration
	// RequestTimeout bounds calls whose context has no deadline.
	// 0 = DefaultRequestTimeout.
	RequestTimeout time.Duration

	registry.Options
}

// Registry is a client of the registry in etcd. It implements
// registry.Registry.
type Registry struct {
	cli       *clientv3.Client
	ownClient bool
	endpoints string
	prefix    string // /weft/<cluster>/

	subnets        registry.SubnetSource
	reclaimAfter   time.Duration
	claimRefresh   time.Duration
	requestTimeout time.Duration
	log            *slog.Logger

	mu     sync.Mutex
	held   map[string]*holding
	recent recentList // List's last read of nodes/, for the next Watch

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	watchers  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ registry.Registry = (*Registry)(nil)

// holding is a lease this client acquired.
type holding struct {
	id          clientv3.LeaseID
	lease       registry.Lease
	claimWrites time.Time // last write of the claim's aliveUntil
}

// claim is the value of claims/<name>.
type claim struct {
	Subnet     netip.Prefix `json:"subnet"`
	AliveUntil time.Time    `json:"aliveUntil"`
}

// Open makes a client. It does not wait for etcd to answer.
func Open(cfg Config) (*Registry, error) {
	cluster := cfg.Cluster
	if cluster == "" {
		cluster = "default"
	}
	if strings.Contains(cluster, "/") {
		return nil, fmt.Errorf("etcd registry: cluster name %q contains '/'", cluster)
	}
	r := &Registry{
		cli:            cfg.Client,
		endpoints:      strings.Join(cfg.Endpoints, ","),
		prefix:         "/weft/" + cluster + "/",
		subnets:        cfg.Subnets,
		reclaimAfter:   cfg.ReclaimAfterOrDefault(),
		requestTimeout: cfg.RequestTimeout,
		held:           make(map[string]*holding),
	}
	r.claimRefresh = r.reclaimAfter / 4
	if r.requestTimeout <= 0 {
		r.requestTimeout = DefaultRequestTimeout
	}
	if r.cli == nil {
		if len(cfg.Endpoints) == 0 {
			return nil, errors.New("etcd registry: no endpoints given")
		}
		dial := cfg.DialTimeout
		if dial <= 0 {
			dial = 5 * time.Second
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: dial,
			// Detect a silently dead etcd (host gone, no RST). etcd refuses
			// pings more often than every 5 s by default.
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 5 * time.Second,
			// The client would log every retry; failures reach our callers
			// and the Keeper's health instead.
			Logger: zap.NewNop(),
			// gRPC's default reconnect backoff grows to 2 minutes; a node
			// should be back in the registry within seconds of etcd.
			DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 5 * time.Second,
			})},
		})
		if err != nil {
			return nil, fmt.Errorf("etcd registry: client for %s: %w", r.endpoints, err)
		}
		r.cli, r.ownClient = cli, true
	} else if r.endpoints == "" {
		r.endpoints = strings.Join(r.cli.Endpoints(), ",")
	}
	r.log = cfg.LoggerOrDefault().With("registry", "etcd", "endpoints", r.endpoints, "prefix", r.prefix)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

func (r *Registry) nodeKey(node string) string      { return r.prefix + "nodes/" + node }
func (r *Registry) claimKey(node string) string     { return r.prefix + "claims/" + node }
func (r *Registry) subnetKey(p netip.Prefix) string { return r.prefix + "subnets/" + p.String() }
func (r *Registry) nodesPrefix() string             { return r.prefix + "nodes/" }
func (r *Registry) claimsPrefix() string            { return r.prefix + "claims/" }
func (r *Registry) subnetsPrefix() string           { return r.prefix + "subnets/" }
func (r *Registry) nodeOfKey(key []byte) string {
	return strings.TrimPrefix(string(key), r.nodesPrefix())
}
func (r *Registry) claimNodeOfKey(key []byte) string {
	return strings.TrimPrefix(string(key), r.claimsPrefix())
}

// call derives the context for one etcd request: the caller's, bounded by
// RequestTimeout if it has no deadline, and cut short by Close.
func (r *Registry) call(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.requestTimeout)
		stop := context.AfterFunc(r.ctx, cancel)
		return ctx, func() { stop(); cancel() }
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// fail wraps err with what was being done, and marks errors that mean
// "etcd did not answer" with ErrUnavailable.
func (r *Registry) fail(op string, err error) error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, registry.ErrClosed)
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: etcd at %s did not answer: %w: %w", op, r.endpoints, registry.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

func (r *Registry) checkOpen() error {
	if r.ctx.Err() != nil {
		return registry.ErrClosed
	}
	return nil
}

func (r *Registry) forget(node string, id clientv3.LeaseID) {
	r.mu.Lock()
	if h, ok := r.held[node]; ok && h.id == id {
		delete(r.held, node)
	}
	r.mu.Unlock()
}

func (r *Registry) holding(node string) (holding, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.held[node]
	if !ok {
		return holding{}, false
	}
	return *h, true
}

// revoke ends an etcd lease in the background: nothing waits on it, and if
// it fails the lease runs out by itself.
func (r *Registry) revoke(id clientv3.LeaseID) {
	if id == clientv3.NoLease {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.requestTimeout)
	defer cancel()
	_, _ = r.cli.Revoke(ctx, id)
}

// ttlSeconds converts a TTL to etcd's whole seconds, rounding up.
func ttlSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

func decodeLease(node string, b []byte) (registry.Lease, error) {
	var l registry.Lease
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("lease of %s: %w", node, err)
	}
	if l.Node != node || !l.Subnet.IsValid() {
		return l, fmt.Errorf("lease under key of %s names node %q, subnet %v", node, l.Node, l.Subnet)
	}
	return l, nil
}

func decodeClaim(node string, b []byte) (claim, error) {
	var c claim
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("claim of %s: %w", node, err)
	}
	if !c.Subnet.IsValid() {
		return c, fmt.Errorf("claim of %s: no valid subnet", node)
	}
	return c, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs get here
	}
	return string(b)
}

// Close implements registry.Registry.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.watchers.Wait()
		if r.ownClient {
			if err := r.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
				r.closeErr = fmt.Errorf("etcd registry: close client: %w", err)
			}
		}
	})
	return r.closeErr
}
