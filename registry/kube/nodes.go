package kube

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
)

// The annotations weftd writes on its own Node (through nodes/status):
// what a peer needs to send it VXLAN. A Node is a peer when it has an IPv4
// podCIDR and at least AnnotationUnderlay and AnnotationRouterMAC.
const (
	annotationPrefix     = "weftnet.io/"
	AnnotationUnderlay   = annotationPrefix + "underlay"   // IPv4 address peers send VXLAN to
	AnnotationRouterMAC  = annotationPrefix + "router-mac" // inner destination MAC
	AnnotationVNI        = annotationPrefix + "vni"        // decimal
	AnnotationPort       = annotationPrefix + "port"       // VXLAN UDP port, decimal; absent = the cluster default
	AnnotationForeign    = annotationPrefix + "foreign"    // "true": a kernel VXLAN node added by `weft node add`
	AnnotationCaps       = annotationPrefix + "caps"       // registry.Caps, decimal; absent = none
	AnnotationHolder     = annotationPrefix + "holder"     // the registry client that wrote them
	ConditionReason      = "WeftIsUp"                      // NetworkUnavailable=False's reason
	readYourWriteTimeout = 5 * time.Second
)

var leaseAnnotations = []string{AnnotationUnderlay, AnnotationRouterMAC, AnnotationVNI, AnnotationPort, AnnotationForeign, AnnotationCaps, AnnotationHolder}

// nodeSource is the Node informer behind List and Watch: every Node, trimmed
// to its name, podCIDRs and weft's annotations, turned into a lease or a
// reason why it is not a peer.
type nodeSource struct {
	inf    cache.SharedIndexInformer
	synced cache.InformerSynced
	hub    *hub[registry.Lease]

	mu       sync.Mutex
	notPeers map[string]string // node name -> why it is not a peer
}

// nodeInformer starts the Node informer on first use.
func (r *Registry) nodeInformer() *nodeSource {
	r.nodesOnce.Do(func() {
		s := &nodeSource{
			inf:      coreinformers.NewNodeInformer(r.cli, 0, cache.Indexers{}),
			hub:      newHub(registry.Lease.SameAs),
			notPeers: map[string]string{},
		}
		s.synced = r.runInformer(s.inf, "nodes", trimNode, func(obj any) { s.update(r, obj) }, s.remove)
		r.nodes = s
	})
	return r.nodes
}

func (s *nodeSource) update(r *Registry, obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	l, why := r.leaseOf(n)
	s.mu.Lock()
	if why == "" {
		delete(s.notPeers, n.Name)
	} else {
		s.notPeers[n.Name] = why
	}
	s.mu.Unlock()
	if why == "" {
		s.hub.set(n.Name, l)
	} else {
		s.hub.del(n.Name)
	}
}

func (s *nodeSource) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	s.mu.Lock()
	delete(s.notPeers, n.Name)
	s.mu.Unlock()
	s.hub.del(n.Name)
}

// NotPeers lists the Nodes that are not peers and why (no podCIDR, no
// weft annotations, a bad annotation), sorted by name. It implements
// registry.NotPeerLister.
func (r *Registry) NotPeers() []registry.NotPeer {
	s := r.nodeInformer()
	s.mu.Lock()
	out := make([]registry.NotPeer, 0, len(s.notPeers))
	for name, why := range s.notPeers {
		out = append(out, registry.NotPeer{Node: name, Why: why})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b registry.NotPeer) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// podCIDR is the Node's IPv4 pod subnet: the IPv4 one of spec.podCIDRs
// (dual-stack clusters list one per family), or spec.podCIDR.
func podCIDR(n *corev1.Node) (netip.Prefix, string) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return netip.Prefix{}, "no spec.podCIDR (the cluster allocates them with kube-controller-manager --allocate-node-cidrs)"
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("spec.podCIDR %q: %v", c, err)
		}
		if p.Addr().Is4() {
			if p != p.Masked() {
				return netip.Prefix{}, fmt.Sprintf("spec.podCIDR %s is not a masked prefix", c)
			}
			return p, ""
		}
	}
	return netip.Prefix{}, fmt.Sprintf("no IPv4 prefix in spec.podCIDRs %v (weft is IPv4 only)", cidrs)
}

// leaseOf turns a Node into its lease, or says why it is not a peer.
func (r *Registry) leaseOf(n *corev1.Node) (registry.Lease, string) {
	subnet, why := podCIDR(n)
	if why != "" {
		return registry.Lease{}, why
	}
	if r.cluster.IsValid() && (!r.cluster.Contains(subnet.Addr()) || subnet.Bits() < r.cluster.Bits()) {
		return registry.Lease{}, fmt.Sprintf("spec.podCIDR %s is outside weft's cluster CIDR %s", subnet, r.cluster)
	}
	a := n.Annotations
	if a[AnnotationUnderlay] == "" && a[AnnotationRouterMAC] == "" {
		return registry.Lease{}, "no " + annotationPrefix + " annotations: weftd has not run on it"
	}
	l := registry.Lease{Node: n.Name, Subnet: subnet, Foreign: a[AnnotationForeign] == "true"}
	var err error
	if l.Underlay, err = netip.ParseAddr(a[AnnotationUnderlay]); err != nil || !l.Underlay.Is4() {
		return registry.Lease{}, fmt.Sprintf("annotation %s %q is not an IPv4 address", AnnotationUnderlay, a[AnnotationUnderlay])
	}
	if l.RouterMAC, err = packet.ParseMAC(a[AnnotationRouterMAC]); err != nil {
		return registry.Lease{}, fmt.Sprintf("annotation %s: %v", AnnotationRouterMAC, err)
	}
	if s := a[AnnotationVNI]; s != "" {
		v, err := strconv.ParseUint(s, 10, 24)
		if err != nil {
			return registry.Lease{}, fmt.Sprintf("annotation %s %q is not a VNI", AnnotationVNI, s)
		}
		l.VNI = uint32(v)
	}
	if s := a[AnnotationPort]; s != "" {
		v, err := strconv.ParseUint(s, 10, 16)
		if err != nil || v == 0 {
			return registry.Lease{}, fmt.Sprintf("annotation %s %q is not a UDP port", AnnotationPort, s)
		}
		l.Port = uint16(v)
	}
	if s := a[AnnotationCaps]; s != "" {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return registry.Lease{}, fmt.Sprintf("annotation %s %q is not a capability set", AnnotationCaps, s)
		}
		l.Caps = registry.Caps(v)
	}
	return l, ""
}

// annotationsFor is what Acquire writes for req: every lease annotation,
// nil (delete) for the ones req leaves unset.
func (r *Registry) annotationsFor(req registry.AcquireRequest) map[string]*string {
	str := func(s string) *string { return &s }
	m := map[string]*string{
		AnnotationUnderlay:  str(req.Underlay.String()),
		AnnotationRouterMAC: str(req.RouterMAC.String()),
		AnnotationVNI:       str(strconv.FormatUint(uint64(req.VNI), 10)),
		AnnotationPort:      nil,
		AnnotationForeign:   nil,
		AnnotationCaps:      nil,
		AnnotationHolder:    str(r.holder),
	}
	if req.Caps != 0 {
		m[AnnotationCaps] = str(strconv.FormatUint(uint64(req.Caps), 10))
	}
	if req.Port != 0 {
		m[AnnotationPort] = str(strconv.Itoa(int(req.Port)))
	}
	if req.Foreign {
		m[AnnotationForeign] = str("true")
	}
	return m
}

// patchAnnotations sets (or, for nil values, removes) annotations on the
// Node through nodes/status, the subresource node agents may write. A
// non-empty resourceVersion makes it fail with a Conflict if the Node
// changed since.
func (r *Registry) patchAnnotations(ctx context.Context, node, resourceVersion string, ann map[string]*string) (*corev1.Node, error) {
	meta := map[string]any{"annotations": ann}
	if resourceVersion != "" {
		meta["resourceVersion"] = resourceVersion
	}
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return nil, err
	}
	return r.cli.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager}, "status")
}

func sameAnnotations(have map[string]string, want map[string]*string) bool {
	for k, v := range want {
		got, ok := have[k]
		if (v == nil) != !ok || v != nil && *v != got {
			return false
		}
	}
	return true
}

// Acquire implements registry.Registry. The subnet is the Node's
// spec.podCIDR: Acquire waits (bounded by ctx, or PodCIDRWait if ctx has
// no deadline; logged once) for the Node to exist and have one, fails
// with ErrSubnetConflict if req.Subnet is set and differs from it, and
// otherwise writes weft's annotations on the Node (one PATCH of
// nodes/status, skipped when they are already as wanted). It then waits
// (briefly) for its informer to see them, so a List or Watch after it
// includes the lease.
func (r *Registry) Acquire(ctx context.Context, req registry.AcquireRequest) (registry.Lease, error) {
	req, err := req.Normalize()
	if err != nil {
		return registry.Lease{}, fmt.Errorf("acquire: %w", err)
	}
	op := "acquire " + req.Node
	if err := r.checkOpen(); err != nil {
		return registry.Lease{}, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := r.callWithin(ctx, r.podCIDRWait)
	defer cancel()
	n, subnet, err := r.waitPodCIDR(ctx, req.Node)
	if err != nil {
		return registry.Lease{}, fmt.Errorf("%s: %w", op, err)
	}
	if r.cluster.IsValid() && (!r.cluster.Contains(subnet.Addr()) || subnet.Bits() < r.cluster.Bits()) {
		return registry.Lease{}, fmt.Errorf("%s: spec.podCIDR %s is outside weftd's cluster CIDR %s: give weftd the cluster's --cluster-cidr",
			op, subnet, r.cluster)
	}
	if req.Subnet.IsValid() && req.Subnet != subnet {
		return registry.Lease{}, fmt.Errorf("%s: the Node's spec.podCIDR is %s, but this node serves %s: %w",
			op, subnet, req.Subnet, registry.ErrSubnetConflict)
	}
	want := r.annotationsFor(req)
	if !sameAnnotations(n.Annotations, want) {
		cctx, ccancel := r.call(ctx)
		n, err = r.patchAnnotations(cctx, req.Node, "", want)
		ccancel()
		if err != nil {
			return registry.Lease{}, r.fail(op+": patch nodes/status", err)
		}
	}
	l, why := r.leaseOf(n)
	if why != "" {
		return registry.Lease{}, fmt.Errorf("%s: the Node after the patch: %s", op, why)
	}
	r.mu.Lock()
	r.held[req.Node] = l
	r.mu.Unlock()
	// Read your write: the informer has the lease before Acquire returns
	// (unless it is slow; then List and Watch catch up by themselves).
	s := r.nodeInformer()
	s.hub.waitFor(ctx, readYourWriteTimeout, func(view map[string]registry.Lease) bool {
		v, ok := view[req.Node]
		return ok && v.SameAs(l)
	})
	return l, nil
}

// waitPodCIDR gets the Node until it exists with an IPv4 podCIDR.
func (r *Registry) waitPodCIDR(ctx context.Context, node string) (*corev1.Node, netip.Prefix, error) {
	logged := false
	start := time.Now()
	for {
		cctx, cancel := r.call(ctx)
		n, err := r.cli.CoreV1().Nodes().Get(cctx, node, metav1.GetOptions{})
		cancel()
		var why string
		switch {
		case apierrors.IsNotFound(err):
			why = "no Node object of that name (is the kubelet registered, and --node-name its name?)"
		case err != nil:
			if ctx.Err() == nil && isUnavailable(err) {
				why = err.Error()
				break
			}
			return nil, netip.Prefix{}, r.fail("get node", err)
		default:
			var p netip.Prefix
			if p, why = podCIDR(n); why == "" {
				if logged {
					r.log.Info("node has its podCIDR", "node", node, "podCIDR", p, "waited", time.Since(start).Round(time.Millisecond))
				}
				return n, p, nil
			}
		}
		if !logged {
			r.log.Warn("waiting for the node's spec.podCIDR", "node", node, "why", why)
			logged = true
		}
		t := time.NewTimer(time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, netip.Prefix{}, fmt.Errorf("no podCIDR after %v: %s: %w", time.Since(start).Round(time.Second), why, registry.ErrUnavailable)
		}
	}
}

// Renew implements registry.Registry. A kube lease does not expire (see
// the package doc): Renew checks, with one GET of the Node (served from
// the API server's watch cache), that the Node still exists and still
// carries the annotations this client wrote. If another client wrote them
// since, or they were removed or changed, or the Node is gone, it fails
// with ErrLeaseLost and the Keeper acquires again. Its success is what the
// Keeper reports as the registry's health.
func (r *Registry) Renew(ctx context.Context, node string) (registry.Lease, error) {
	op := "renew " + node
	if err := r.checkOpen(); err != nil {
		return registry.Lease{}, fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	held, ok := r.held[node]
	r.mu.Unlock()
	if !ok {
		return registry.Lease{}, fmt.Errorf("%s: not acquired through this client: %w", op, registry.ErrLeaseLost)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	n, err := r.cli.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{ResourceVersion: "0"})
	lost := func(why string) (registry.Lease, error) {
		r.forget(node, held)
		return registry.Lease{}, fmt.Errorf("%s: %s: %w", op, why, registry.ErrLeaseLost)
	}
	switch {
	case apierrors.IsNotFound(err):
		return lost("the Node is gone")
	case err != nil:
		return registry.Lease{}, r.fail(op, err)
	}
	if h := n.Annotations[AnnotationHolder]; h != r.holder {
		return lost(fmt.Sprintf("annotations written by another client (holder %q)", h))
	}
	l, why := r.leaseOf(n)
	switch {
	case why != "":
		return lost(why)
	case !l.SameAs(held):
		return lost(fmt.Sprintf("the Node now says %+v", l))
	}
	return l, nil
}

func (r *Registry) forget(node string, l registry.Lease) {
	r.mu.Lock()
	if h, ok := r.held[node]; ok && h.SameAs(l) {
		delete(r.held, node)
	}
	r.mu.Unlock()
}

// Release implements registry.Registry: it removes weft's annotations from
// the Node (peers drop it), if this client wrote them. The subnet stays the
// Node's: kube-controller-manager owns spec.podCIDR, not weft.
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
	for range 5 {
		n, err := r.cli.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			r.mu.Lock()
			delete(r.held, node)
			r.mu.Unlock()
			return nil
		case err != nil:
			return r.fail(op, err)
		}
		h, has := n.Annotations[AnnotationHolder]
		if _, under := n.Annotations[AnnotationUnderlay]; !has && !under {
			r.mu.Lock()
			delete(r.held, node)
			r.mu.Unlock()
			return nil
		}
		if h != r.holder {
			return fmt.Errorf("%s: annotations written by another client (holder %q): %w", op, h, registry.ErrLeaseLost)
		}
		remove := make(map[string]*string, len(leaseAnnotations))
		for _, k := range leaseAnnotations {
			remove[k] = nil
		}
		_, err = r.patchAnnotations(ctx, node, n.ResourceVersion, remove)
		if apierrors.IsConflict(err) {
			continue // the Node changed under us: read it again
		}
		if err != nil {
			return r.fail(op+": patch nodes/status", err)
		}
		r.mu.Lock()
		delete(r.held, node)
		r.mu.Unlock()
		r.nodeInformer().hub.waitFor(ctx, readYourWriteTimeout, func(view map[string]registry.Lease) bool {
			_, ok := view[node]
			return !ok
		})
		return nil
	}
	return fmt.Errorf("%s: the Node kept changing under 5 attempts", op)
}

// List implements registry.Registry: the peers in the Node informer's
// cache, once it has synced (waiting for that within ctx). While the API
// server is unreachable it answers from the last known state.
func (r *Registry) List(ctx context.Context) ([]registry.Lease, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	s := r.nodeInformer()
	ctx, cancel := r.call(ctx)
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced) {
		return nil, r.fail("list: Node informer not synced", ctx.Err())
	}
	leases := s.hub.values()
	registry.SortLeases(leases)
	return leases, nil
}

// Watch implements registry.Registry. The Snapshot is sent once the Node
// informer has synced: the initial list of a 5,000-node cluster is one
// event, not 5,000. Then each batch of changes the consumer has not taken
// yet is sent as Removed, Changed and Added events (registry.Diff order),
// coalesced per node.
func (r *Registry) Watch(ctx context.Context) (<-chan registry.Event, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	s := r.nodeInformer()
	// Unbuffered: what the consumer has not taken stays coalesced in the
	// hub rather than queued stale in a channel buffer.
	ch := make(chan registry.Event)
	r.watchers.Add(1)
	go func() {
		defer r.watchers.Done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(r.ctx, cancel)()
		follow(ctx, s.hub, []cache.InformerSynced{s.synced}, registry.SnapshotEvent, registry.Diff, ch)
	}()
	return ch, nil
}

// NetworkReady sets the Node's NetworkUnavailable condition to False, as
// flannel and Calico do once their agent runs: the node lifecycle
// controller then lifts the node.kubernetes.io/network-unavailable taint
// that cloud providers put on new nodes.
func (r *Registry) NetworkReady(ctx context.Context, node string) error {
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("network ready %s: %w", node, err)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: ConditionReason, Message: "weftd is running on this node",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	// A strategic merge patch: conditions merge by type, so the kubelet's
	// own conditions stay.
	if _, err := r.cli.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager}, "status"); err != nil {
		return r.fail("network ready "+node+": patch nodes/status", err)
	}
	return nil
}

// runInformer starts inf with its transform and one handler (update for
// adds and changes, remove for deletions and tombstones), and returns when
// that handler has seen the initial list.
func (r *Registry) runInformer(inf cache.SharedIndexInformer, resource string, transform cache.TransformFunc,
	update, remove func(obj any)) cache.InformerSynced {
	if err := inf.SetTransform(transform); err != nil {
		panic(err) // only fails on a started informer
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: remove,
	})
	if err != nil {
		panic(err) // only fails on a stopped informer
	}
	r.watchErrors(inf, resource)
	go inf.RunWithContext(r.ctx)
	return reg.HasSynced
}

// watchErrors logs an informer's watch failures (the reflector retries by
// itself), at most once a minute per resource.
func (r *Registry) watchErrors(inf cache.SharedIndexInformer, resource string) {
	var mu sync.Mutex
	var last time.Time
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		mu.Lock()
		defer mu.Unlock()
		if r.ctx.Err() != nil || time.Since(last) < time.Minute {
			return
		}
		last = time.Now()
		r.log.Warn("watch broken; retrying, forwarding with the last known state", "resource", resource, "err", err)
	})
}
