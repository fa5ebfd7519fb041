package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/internal/backend"
)

// Acquire implements registry.Registry.
func (r *Registry) Acquire(ctx context.Context, req registry.AcquireRequest) (registry.Lease, error) {
	req, err := req.Normalize()
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire: %w", err)
	}
	op := "acquire " + req.Node
	if err := r.checkOpen(); err != nil {
		return registry.Lease{}, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()

	start := time.Now()
	grant, err := r.cli.Grant(ctx, ttlSeconds(req.TTL))
	if err != nil {
		return registry.Lease{}, r.fail(op+": grant etcd lease", err)
	}
	lease := registry.Lease{
		Node:      req.Node,
		Underlay:  req.Underlay,
		RouterMAC: req.RouterMAC,
		VNI:       req.VNI,
		Port:      req.Port,
		Foreign:   req.Foreign,
		Caps:      req.Caps,
		Subnet:    req.Subnet, // wanted, if valid; claimAndPut decides
		// The server may raise the TTL to its minimum; go by what it granted.
		Expiry: start.Add(time.Duration(grant.TTL) * time.Second),
	}
	replaced, err := r.claimAndPut(ctx, grant.ID, &lease)
	if err != nil {
		go r.revoke(grant.ID)
		return registry.Lease{}, r.fail(op, err)
	}
	r.mu.Lock()
	prev := r.held[req.Node]
	r.held[req.Node] = &holding{id: grant.ID, lease: lease, claimWrites: time.Now()}
	r.mu.Unlock()
	// The replaced holder (another client, or this one before) must learn
	// at its next Renew that the node is no longer its.
	if replaced != clientv3.NoLease && replaced != grant.ID {
		go r.revoke(replaced)
	}
	if prev != nil && prev.id != replaced && prev.id != grant.ID {
		go r.revoke(prev.id)
	}
	return lease, nil
}

// claimAndPut finds the subnet for lease.Node (its claim, a free one, or a
// reclaimed one), sets lease.Subnet, and writes the node key under etcd
// lease id, all in one transaction; it retries while other clients win the
// race. It returns the etcd lease of the node key it replaced, if any.
func (r *Registry) claimAndPut(ctx context.Context, id clientv3.LeaseID, lease *registry.Lease) (replaced clientv3.LeaseID, err error) {
	node := lease.Node
	want := lease.Subnet
	for range maxTxnAttempts {
		read, err := r.cli.Txn(ctx).Then(
			clientv3.OpGet(r.claimKey(node)),
			clientv3.OpGet(r.nodeKey(node)),
			clientv3.OpGet(r.subnetsPrefix(), clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return 0, fmt.Errorf("read claims: %w", err)
		}
		claimKVs := read.Responses[0].GetResponseRange().Kvs
		nodeKVs := read.Responses[1].GetResponseRange().Kvs
		subnetKVs := read.Responses[2].GetResponseRange().Kvs
		replaced = clientv3.NoLease
		if len(nodeKVs) > 0 {
			replaced = clientv3.LeaseID(nodeKVs[0].Lease)
		}

		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		if len(claimKVs) > 0 {
			c, err := decodeClaim(node, claimKVs[0].Value)
			if err != nil {
				return 0, err
			}
			if want.IsValid() && c.Subnet != want {
				return 0, fmt.Errorf("the registry says %s claims %s, but it serves %s: %w", node, c.Subnet, want, registry.ErrSubnetConflict)
			}
			lease.Subnet = c.Subnet
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.claimKey(node)), "=", claimKVs[0].ModRevision))
		} else if want.IsValid() {
			for _, kv := range subnetKVs {
				p, err := netip.ParsePrefix(string(kv.Key[len(r.subnetsPrefix()):]))
				if err == nil && p.Overlaps(want) {
					return 0, fmt.Errorf("%s serves %s, which %s claims: %w", node, want, kv.Value, registry.ErrSubnetConflict)
				}
			}
			cmps = append(cmps,
				clientv3.Compare(clientv3.CreateRevision(r.subnetKey(want)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(r.claimKey(node)), "=", 0))
			ops = append(ops, clientv3.OpPut(r.subnetKey(want), node))
		} else {
			claimed := make(map[netip.Prefix]bool, len(subnetKVs))
			for _, kv := range subnetKVs {
				p, err := netip.ParsePrefix(string(kv.Key[len(r.subnetsPrefix()):]))
				if err == nil {
					claimed[p] = true
				}
			}
			p, ok, err := backend.FirstFree(r.subnets, claimed)
			if err != nil {
				return 0, err
			}
			if ok {
				lease.Subnet = p
				cmps = append(cmps,
					clientv3.Compare(clientv3.CreateRevision(r.subnetKey(p)), "=", 0),
					clientv3.Compare(clientv3.CreateRevision(r.claimKey(node)), "=", 0))
				ops = append(ops, clientv3.OpPut(r.subnetKey(p), node))
			} else {
				rc, rops, p, err := r.reclaim(ctx, node, subnetKVs)
				if err != nil {
					return 0, err
				}
				lease.Subnet = p
				cmps, ops = append(cmps, rc...), append(ops, rops...)
			}
		}
		ops = append(ops,
			clientv3.OpPut(r.claimKey(node), mustJSON(claim{Subnet: lease.Subnet, AliveUntil: lease.Expiry})),
			clientv3.OpPut(r.nodeKey(node), mustJSON(lease), clientv3.WithLease(id)))
		resp, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("claim %v: %w", lease.Subnet, err)
		}
		if resp.Succeeded {
			return replaced, nil
		}
		// Another client changed a key we read: read again.
	}
	return 0, fmt.Errorf("gave up after %d conflicting attempts", maxTxnAttempts)
}

// reclaim picks the subnet of the claim dead longest, if it has been dead
// longer than reclaimAfter, and returns the compares and operations that
// move it to node. ErrPoolExhausted if there is none.
func (r *Registry) reclaim(ctx context.Context, node string, subnetKVs []*mvccpb.KeyValue) ([]clientv3.Cmp, []clientv3.Op, netip.Prefix, error) {
	read, err := r.cli.Txn(ctx).Then(
		clientv3.OpGet(r.claimsPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(r.nodesPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, nil, netip.Prefix{}, fmt.Errorf("read claims for reclaim: %w", err)
	}
	live := make(map[string]bool)
	for _, kv := range read.Responses[1].GetResponseRange().Kvs {
		live[r.nodeOfKey(kv.Key)] = true
	}
	subnetRev := make(map[netip.Prefix]int64, len(subnetKVs))
	for _, kv := range subnetKVs {
		if p, err := netip.ParsePrefix(string(kv.Key[len(r.subnetsPrefix()):])); err == nil {
			subnetRev[p] = kv.ModRevision
		}
	}
	now := time.Now()
	var victim string
	var victimKV *mvccpb.KeyValue
	var victimClaim claim
	for _, kv := range read.Responses[0].GetResponseRange().Kvs {
		name := r.claimNodeOfKey(kv.Key)
		c, err := decodeClaim(name, kv.Value)
		if err != nil || live[name] || subnetRev[c.Subnet] == 0 {
			continue
		}
		// aliveUntil may be up to claimRefresh behind the real end of the
		// lease (renewals refresh it only that often).
		deadSince := c.AliveUntil.Add(r.claimRefresh)
		if deadSince.Add(r.reclaimAfter).Before(now) && (victimKV == nil || c.AliveUntil.Before(victimClaim.AliveUntil)) {
			victim, victimKV, victimClaim = name, kv, c
		}
	}
	if victimKV == nil {
		return nil, nil, netip.Prefix{}, fmt.Errorf("all %d subnets are claimed (claims of dead nodes are kept for %v): %w",
			r.subnets.Count(), r.reclaimAfter, registry.ErrPoolExhausted)
	}
	p := victimClaim.Subnet
	r.log.Info("reclaiming subnet of a long-dead node", "subnet", p, "from", victim,
		"aliveUntil", victimClaim.AliveUntil, "to", node)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(r.claimKey(victim)), "=", victimKV.ModRevision),
		clientv3.Compare(clientv3.CreateRevision(r.nodeKey(victim)), "=", 0),
		clientv3.Compare(clientv3.ModRevision(r.subnetKey(p)), "=", subnetRev[p]),
		clientv3.Compare(clientv3.CreateRevision(r.claimKey(node)), "=", 0),
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(r.claimKey(victim)),
		clientv3.OpPut(r.subnetKey(p), node),
	}
	return cmps, ops, p, nil
}

// Renew implements registry.Registry.
func (r *Registry) Renew(ctx context.Context, node string) (registry.Lease, error) {
	op := "renew " + node
	if err := r.checkOpen(); err != nil {
		return registry.Lease{}, fmt.Errorf("%s: %w", op, err)
	}
	h, ok := r.holding(node)
	if !ok {
		return registry.Lease{}, fmt.Errorf("%s: not acquired by this client: %w", op, registry.ErrLeaseLost)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()

	// The node key must still carry our etcd lease: if it expired it is
	// gone, and if another client acquired the node it carries theirs.
	mine := clientv3.Compare(clientv3.LeaseValue(r.nodeKey(node)), "=", h.id)
	check, err := r.cli.Txn(ctx).If(mine).Commit()
	if err != nil {
		return registry.Lease{}, r.fail(op, err)
	}
	if !check.Succeeded {
		r.forget(node, h.id)
		return registry.Lease{}, fmt.Errorf("%s: node key expired, released or acquired by another client: %w", op, registry.ErrLeaseLost)
	}
	start := time.Now()
	ka, err := r.cli.KeepAliveOnce(ctx, h.id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.forget(node, h.id)
		return registry.Lease{}, fmt.Errorf("%s: etcd lease expired: %w", op, registry.ErrLeaseLost)
	}
	if err != nil {
		return registry.Lease{}, r.fail(op, err)
	}
	l := h.lease
	l.Expiry = start.Add(time.Duration(ka.TTL) * time.Second)
	if time.Since(h.claimWrites) >= r.claimRefresh {
		put := clientv3.OpPut(r.claimKey(node), mustJSON(claim{Subnet: l.Subnet, AliveUntil: l.Expiry}))
		if _, err := r.cli.Txn(ctx).If(mine).Then(put).Commit(); err != nil {
			return registry.Lease{}, r.fail(op+": refresh claim", err)
		}
	}
	r.mu.Lock()
	if cur, ok := r.held[node]; ok && cur.id == h.id {
		cur.lease = l
		if time.Since(h.claimWrites) >= r.claimRefresh {
			cur.claimWrites = start
		}
	}
	r.mu.Unlock()
	return l, nil
}

// Release implements registry.Registry.
func (r *Registry) Release(ctx context.Context, node string) error {
	if err := registry.ValidateNodeName(node); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	op := "release " + node
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	h, held := r.holding(node)

	done := false
	for range maxTxnAttempts {
		read, err := r.cli.Txn(ctx).Then(
			clientv3.OpGet(r.claimKey(node)),
			clientv3.OpGet(r.nodeKey(node)),
		).Commit()
		if err != nil {
			return r.fail(op, err)
		}
		claimKVs := read.Responses[0].GetResponseRange().Kvs
		nodeKVs := read.Responses[1].GetResponseRange().Kvs
		if len(nodeKVs) > 0 && (!held || clientv3.LeaseID(nodeKVs[0].Lease) != h.id) {
			return fmt.Errorf("%s: live lease held by another client: %w", op, registry.ErrLeaseLost)
		}
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		if len(nodeKVs) > 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(r.nodeKey(node)), "=", h.id))
			ops = append(ops, clientv3.OpDelete(r.nodeKey(node)))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(r.nodeKey(node)), "=", 0))
		}
		if len(claimKVs) > 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.claimKey(node)), "=", claimKVs[0].ModRevision))
			ops = append(ops, clientv3.OpDelete(r.claimKey(node)))
			if c, err := decodeClaim(node, claimKVs[0].Value); err == nil {
				// Free the subnet only if it is still this node's.
				sk := r.subnetKey(c.Subnet)
				ops = append(ops, clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Value(sk), "=", node)},
					[]clientv3.Op{clientv3.OpDelete(sk)}, nil))
			}
		}
		if len(ops) == 0 {
			done = true // nothing claimed
			break
		}
		resp, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return r.fail(op, err)
		}
		if done = resp.Succeeded; done {
			break
		}
	}
	if !done {
		return fmt.Errorf("%s: gave up after %d conflicting attempts", op, maxTxnAttempts)
	}
	if held {
		r.forget(node, h.id)
		go r.revoke(h.id)
	}
	return nil
}

// List implements registry.Registry. Each lease's Expiry is its etcd
// lease's remaining TTL from now, rounded up to the second: one TimeToLive
// per node, asked listTTLConcurrency at a time (one after another, 5,000
// nodes took 5,000 round trips: issue 16).
func (r *Registry) List(ctx context.Context) ([]registry.Lease, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	read := time.Now()
	live, rev, err := r.list(ctx)
	if err != nil {
		return nil, r.fail("list", err)
	}
	leases := make(map[string]registry.Lease, len(live))
	for name, l := range live {
		leases[name] = l.lease
	}
	r.mu.Lock()
	if rev >= r.recent.rev {
		r.recent = recentList{at: read, rev: rev, leases: leases}
	}
	r.mu.Unlock()
	var (
		mu   sync.Mutex
		out  = make([]registry.Lease, 0, len(live))
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, listTTLConcurrency)
	)
	for name, l := range live {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := time.Now()
			ttl, err := r.cli.TimeToLive(ctx, l.id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, r.fail("list: lease TTL of "+name, err))
			case ttl.TTL >= 0: // < 0: expired since the read
				// etcd truncates the remaining TTL to whole seconds.
				l.lease.Expiry = start.Add(time.Duration(ttl.TTL+1) * time.Second)
				out = append(out, l.lease)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	registry.SortLeases(out)
	return out, nil
}

// listTTLConcurrency bounds List's TimeToLive requests in flight.
const listTTLConcurrency = 32

type listed struct {
	lease registry.Lease
	id    clientv3.LeaseID
}

// list reads every node key, returning the leases and the revision read at.
// Undecodable values are logged and skipped.
func (r *Registry) list(ctx context.Context) (map[string]listed, int64, error) {
	resp, err := r.cli.Get(ctx, r.nodesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]listed, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name := r.nodeOfKey(kv.Key)
		l, err := decodeLease(name, kv.Value)
		if err != nil {
			r.log.Warn("skipping undecodable node key", "key", string(kv.Key), "err", err)
			continue
		}
		out[name] = listed{lease: l, id: clientv3.LeaseID(kv.Lease)}
	}
	return out, resp.Header.Revision, nil
}
