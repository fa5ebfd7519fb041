package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/policy"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/service"
)

// Services: the node watches the registry's object store, compiles the
// Services, EndpointSlices and published pods it holds into the switch's
// service frontends (package service) and hands them over with
// SetServices. A burst of changes is one compilation: events are gathered
// for coalesceDelay after the first before compiling. Node leases matter
// too (a backend on a node without a live lease is not ready), so the
// set of live nodes is polled and a change recompiles.

const (
	// coalesceDelay gathers a burst of object events (an apply of many
	// documents, a node publishing its pods) into one compilation.
	coalesceDelay = 50 * time.Millisecond
	// leaseCheckEvery is how often the live node set is compared with the
	// one of the last compilation.
	leaseCheckEvery = time.Second
)

// serviceState is the node's service control plane.
type serviceState struct {
	store registry.ObjectStore
	cidrs service.CIDRs

	mu      sync.Mutex // guards view, synced, live, warned; serialises compilations
	applyMu sync.Mutex // serialises applies (cluster IP allocation)
	view    registry.ObjectView
	synced  bool // view holds a snapshot
	live    []string
	// warned holds the problems already logged, so a bad object costs one
	// log line per change, not one per compilation.
	warned map[string]bool

	result atomic.Pointer[service.Result]
	pods   *podPublisher
}

// loadServices sets up the service state and, before any pod traffic
// flows, compiles the Services the store holds now: a restarted weftd must
// not answer its pods' packets to a cluster IP with "unreachable" (or reset
// established flows) while its watch is still starting. If the store does
// not answer, the watch compiles when it does.
func (n *Node) loadServices(ctx context.Context) {
	if n.cfg.Objects == nil {
		n.log.Info("registry has no object store: no Services, no pod metadata")
		return
	}
	n.svc = &serviceState{
		store:  n.cfg.Objects,
		cidrs:  service.CIDRs{Service: n.cfg.ServiceCIDR, Cluster: n.cfg.ClusterCIDR},
		view:   registry.ObjectView{},
		warned: map[string]bool{},
	}
	if !n.cfg.KubePods {
		n.svc.pods = newPodPublisher(n)
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	objs, err := n.svc.store.List(lctx)
	if err != nil {
		n.log.Warn("object store list failed; services arrive with the watch", "err", err)
		return
	}
	n.svc.mu.Lock()
	n.svc.view.Apply(registry.ObjectEvent{Type: registry.ObjectSnapshot, Objects: objs})
	n.svc.synced = true
	n.svc.mu.Unlock()
	n.compileServices()
}

// startServices starts the object watch with its compiler, and the pod
// publisher (after the ports are restored: it unpublishes the pods this
// node does not run).
func (n *Node) startServices() {
	if n.svc == nil {
		return
	}
	n.wg.Add(1)
	go n.watchObjects()
	if n.svc.pods != nil {
		n.wg.Add(1)
		go n.svc.pods.run()
	}
}

// watchObjects follows the object store and recompiles on change.
func (n *Node) watchObjects() {
	defer n.wg.Done()
	backoff := 250 * time.Millisecond
	for n.ctx.Err() == nil {
		ch, err := n.svc.store.Watch(n.ctx)
		if err != nil {
			n.log.Warn("object watch failed; services stay as compiled last", "err", err, "retry_in", backoff)
			if !sleepCtx(n.ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		n.followObjects(ch)
	}
}

// followObjects applies events until the watch ends, compiling once per
// burst and whenever the live node set changes.
func (n *Node) followObjects(ch <-chan registry.ObjectEvent) {
	tick := time.NewTicker(leaseCheckEvery)
	defer tick.Stop()
	var flush <-chan time.Time
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			n.svc.mu.Lock()
			n.svc.view.Apply(ev)
			if ev.Type == registry.ObjectSnapshot {
				n.svc.synced = true
			}
			n.svc.mu.Unlock()
			if flush == nil {
				flush = time.After(coalesceDelay)
			}
		case <-flush:
			flush = nil
			n.compileServices()
			n.svc.pods.kick()
		case <-tick.C:
			if !slices.Equal(n.liveNodeNames(), n.svc.lastLive()) {
				n.compileServices()
			}
		}
	}
}

func (s *serviceState) lastLive() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// compileServices compiles the current view and installs it.
func (n *Node) compileServices() {
	s := n.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced {
		return
	}
	n.policySetObjects(s.view.Sorted())
	live := n.liveNodeNames()
	liveSet := make(map[string]bool, len(live))
	for _, name := range live {
		liveSet[name] = true
	}
	liveSet[n.cfg.NodeName] = true
	res := service.Compile(service.Input{
		Node: n.cfg.NodeName, CIDRs: s.cidrs, Objects: s.view.Sorted(),
		LiveNode: func(node string) bool { return liveSet[node] },
	})
	s.live = live
	seen := map[string]bool{}
	for _, p := range res.Problems {
		msg := p.Error()
		seen[msg] = true
		if !s.warned[msg] {
			n.log.Warn("skipping a stored object weft cannot serve", "err", p)
		}
	}
	s.warned = seen
	if err := n.sw.SetServices(res.Specs); err != nil {
		// Compile emits only what the switch takes; if it still refuses,
		// the last good set stays in force.
		n.log.Error("switch refused the compiled services; keeping the previous set", "err", err)
		return
	}
	n.setNodePorts(res.Specs)
	prev := s.result.Swap(&res)
	if prev == nil || len(prev.Specs) != len(res.Specs) {
		n.log.Info("services compiled", "services", len(res.Services), "frontends", len(res.Specs), "problems", len(res.Problems))
	}
}

// Services implements api.ObjectService: the Services as last compiled,
// with this node's new-flow counts.
func (n *Node) Services(ctx context.Context) ([]api.ServiceInfo, error) {
	if n.svc == nil {
		return nil, fmt.Errorf("registry %s has no object store: %w", n.cfg.RegistryBackend, api.ErrNotImplemented)
	}
	res := n.svc.result.Load()
	if res == nil {
		return nil, fmt.Errorf("services not compiled yet (waiting for the object store): %w", api.ErrNotReady)
	}
	flows := map[string]uint64{}
	for _, st := range n.sw.ServiceStats() {
		ns, _, _ := strings.Cut(st.Name, ":")
		flows[ns] += st.NewFlows
	}
	out := make([]api.ServiceInfo, 0, len(res.Services))
	for _, s := range res.Services {
		ports := make([]api.ServicePort, len(s.Ports))
		for i, p := range s.Ports {
			ports[i] = api.ServicePort{Name: p.Name, Port: uint16(p.Port), Protocol: string(p.Protocol), TargetPort: p.TargetPort.String()}
			if ports[i].Protocol == "" {
				ports[i].Protocol = "TCP"
			}
		}
		out = append(out, api.ServiceInfo{
			Namespace: s.Namespace, Name: s.Name, ClusterIP: s.ClusterIP, Ports: ports,
			Ready: s.Ready, Total: s.Total, Source: s.Source, Skipped: s.Skipped,
			NewFlows: flows[s.Namespace+"/"+s.Name],
		})
	}
	return out, nil
}

// Apply implements api.ObjectService: the documents are decoded strictly,
// Services and EndpointSlices checked against the stored set (cluster IPs
// and node ports allocated), Pods merged with what their node published;
// then every object is stored, or none if any is refused. Applies through
// one weftd are serialised; two weftds allocating a cluster IP at the same
// instant could pick the same one (the later compilation then skips one
// Service, logged).
//
// With the Kubernetes API as the store (Config.KubePods), the API server
// owns all of that: it validates, defaults and allocates cluster IPs and
// node ports itself (an allocation here would fight its allocator, and a
// cluster IP outside its --service-cluster-ip-range is refused), and Pods
// are the kubelet's, not published by nodes. Apply then checks policies
// only and hands the documents to the store as written.
func (n *Node) Apply(ctx context.Context, req api.ApplyRequest) ([]api.ApplyResult, error) {
	s, objs, err := n.objectRequest(req)
	if err != nil {
		return nil, err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	stored, err := s.store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply: read the object store: %w", err)
	}
	if !n.cfg.KubePods {
		objs, err = service.CheckApply(stored, objs, s.cidrs)
		if err != nil {
			return nil, api.BadRequest("documents", err.Error())
		}
	}
	if err := policy.ValidateObjects(objs); err != nil {
		return nil, api.BadRequest("documents", err.Error())
	}
	byKey := make(map[string]objects.Object, len(stored))
	for _, o := range stored {
		byKey[o.Key()] = o
	}
	for i, o := range objs {
		if o.Pod != nil && !n.cfg.KubePods {
			if old, ok := byKey[o.Key()]; ok && old.Pod != nil {
				objs[i] = applyPodMeta(old, o)
			}
		}
		if err := registry.CheckObjectKey(o.Key()); err != nil {
			return nil, api.BadRequest("documents", fmt.Sprintf("%s: %v", o, err))
		}
	}
	out := make([]api.ApplyResult, 0, len(objs))
	for _, o := range objs {
		r := applyResult(o, api.ActionCreated)
		if _, ok := byKey[o.Key()]; ok {
			r.Action = api.ActionConfigured
		}
		if !req.DryRun {
			changed, err := s.store.Put(ctx, o)
			if err != nil {
				return out, fmt.Errorf("apply %s (after %d stored): %w", o, len(out), storeError(err))
			}
			if !changed {
				r.Action = api.ActionUnchanged
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// DeleteObjects implements api.ObjectService.
func (n *Node) DeleteObjects(ctx context.Context, req api.ApplyRequest) ([]api.ApplyResult, error) {
	s, objs, err := n.objectRequest(req)
	if err != nil {
		return nil, err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	out := make([]api.ApplyResult, 0, len(objs))
	for _, o := range objs {
		r := applyResult(o, api.ActionDeleted)
		if err := registry.CheckObjectKey(o.Key()); err != nil {
			return out, api.BadRequest("documents", fmt.Sprintf("%s: %v", o, err))
		}
		if req.DryRun {
			out = append(out, r)
			continue
		}
		existed, err := s.store.Delete(ctx, o.Key())
		if err != nil {
			return out, fmt.Errorf("delete %s: %w", o, storeError(err))
		}
		if !existed {
			r.Action = api.ActionNotFound
		}
		out = append(out, r)
	}
	return out, nil
}

func (n *Node) objectRequest(req api.ApplyRequest) (*serviceState, []objects.Object, error) {
	if n.svc == nil {
		return nil, nil, fmt.Errorf("registry %s has no object store: %w", n.cfg.RegistryBackend, api.ErrNotImplemented)
	}
	objs, err := objects.Decode(strings.NewReader(req.Documents))
	if err != nil {
		return nil, nil, api.BadRequest("documents", err.Error())
	}
	return n.svc, objs, nil
}

func applyResult(o objects.Object, action string) api.ApplyResult {
	m := o.Meta()
	r := api.ApplyResult{Kind: string(o.Kind), Namespace: m.Namespace, Name: m.Name, Action: action}
	if o.Service != nil {
		r.ClusterIP = o.Service.Spec.ClusterIP
	}
	return r
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// storeError gives an object store's error the API answer it deserves: a
// refusal of weftd's own credentials (registry.ErrForbidden, the API
// server's RBAC) is a 403 that the caller can act on, not a 500.
func storeError(err error) error {
	if errors.Is(err, registry.ErrForbidden) {
		return forbiddenError{err}
	}
	return err
}

// forbiddenError is a store's refusal that also matches api.ErrForbidden.
type forbiddenError struct{ error }

func (e forbiddenError) Unwrap() []error { return []error{e.error, api.ErrForbidden} }
