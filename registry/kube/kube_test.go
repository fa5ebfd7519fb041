package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	ktesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/registrytest"
)

var cluster = netip.MustParsePrefix("10.244.0.0/16")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t testing.TB, cs *fake.Clientset) *Registry {
	t.Helper()
	r, err := Open(Config{Client: cs, ClusterCIDR: cluster, Options: registry.Options{Logger: quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func node(name, podCIDR string, ann map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	return n
}

func weftAnnotations(underlay, mac string) map[string]string {
	return map[string]string{AnnotationUnderlay: underlay, AnnotationRouterMAC: mac, AnnotationVNI: "1", AnnotationHolder: "someone"}
}

// withNodeAllocator makes the fake act like a cluster whose kubelets
// register Nodes and whose kube-controller-manager gives each a podCIDR
// from pool, in the order they are first asked for: a GET of a Node that
// does not exist creates it. It is how the conformance suite's arbitrary
// node names get Nodes here.
func withNodeAllocator(cs *fake.Clientset, pool registry.SubnetSource) {
	var mu sync.Mutex
	next := 0
	cs.PrependReactor("get", "nodes", func(a ktesting.Action) (bool, runtime.Object, error) {
		name := a.(ktesting.GetAction).GetName()
		mu.Lock()
		defer mu.Unlock()
		_, err := cs.Tracker().Get(corev1.SchemeGroupVersion.WithResource("nodes"), "", name)
		if !apierrors.IsNotFound(err) || next >= pool.Count() {
			return false, nil, nil
		}
		p, _ := pool.Nth(next)
		next++
		if err := cs.Tracker().Create(corev1.SchemeGroupVersion.WithResource("nodes"), node(name, p.String(), nil), ""); err != nil {
			return true, nil, err
		}
		return false, nil, nil // the tracker answers with the new Node
	})
}

// TestConformance runs the registry suite where its semantics apply. The
// cases left out rely on what the kube backend does differently on
// purpose: weft does not allocate subnets (the cluster does, and keeps a
// Node's podCIDR for the Node's life) and leases do not expire.
func TestConformance(t *testing.T) {
	registrytest.RunExcept(t, func(t *testing.T, p registrytest.Params) func(*testing.T) registry.Registry {
		cs := fake.NewClientset()
		withNodeAllocator(cs, p.Subnets)
		return func(t *testing.T) registry.Registry {
			r, err := Open(Config{Client: cs, Options: registry.Options{Logger: quiet()}})
			if err != nil {
				t.Fatal(err)
			}
			waitWatching(t, cs, "nodes", func() { r.List(ctx(t)) })
			return r
		}
	}, map[string]string{
		"AcquireFresh":                   "it checks the lease expires within the TTL; kube leases have no expiry (zero); TestLeasesFromNodes covers Acquire and List",
		"SameNodeKeepsSubnetAfterExpiry": "leases do not expire (a Node with weft's annotations is live)",
		"PoolExhausted":                  "kube-controller-manager allocates podCIDRs; Acquire waits for one",
		"ReclaimAfterGrace":              "kube-controller-manager owns subnet reuse (a deleted Node's podCIDR)",
		"RenewExtends":                   "leases do not expire: Renew checks the Node, the expiry stays zero",
		"RenewLost":                      "its last part waits for an expiry; TestRenewLost covers the rest",
		"ExpiryRemoves":                  "leases do not expire",
		"ReleaseFreesSubnet":             "Release removes the annotations; the podCIDR stays the Node's",
		"WatchEvents":                    "its watcher (another client) must see the writer's Acquire in its first snapshot; an informer follows other clients' writes within milliseconds, not at once; TestLeasesFromNodes and TestCoalesced cover the events",
		"ConcurrentClients":              "List reads this client's informer cache, which follows other clients' writes within milliseconds rather than at once; TestConcurrentConverges checks convergence instead",
		"PinnedSubnetNeverMoves":         "after Release the subnet is not free for another node; TestAcquire covers pinning",
		"RacingNodesGetDistinctSubnets":  "the subnets come from the test's fake podCIDR allocator (kube-controller-manager's job in a cluster), and its closing List reads this client's informer cache, which lags other clients' Acquires by milliseconds (failed once in CI: 24 of 25 leases); TestConcurrentConverges checks List against Acquire by convergence",
	})
}

// waitWatching runs start (which starts an informer) and waits until the
// fake has one more watch of resource. The fake's watch does not replay
// from the list's resourceVersion as the API server does, so a write
// between an informer's list and its watch would be lost to it: clients
// of the conformance suite, which write from several at once, must be
// watching before they are used.
func waitWatching(t *testing.T, cs *fake.Clientset, resource string, start func()) {
	t.Helper()
	resources := []string{resource}
	if resource == "" {
		resources = []string{"namespaces", "pods", "services", "endpointslices", "networkpolicies"}
	}
	count := func(resource string) int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "watch" && a.GetResource().Resource == resource {
				n++
			}
		}
		return n
	}
	before := map[string]int{}
	for _, r := range resources {
		before[r] = count(r)
	}
	watching := func() bool {
		for _, r := range resources {
			if count(r) <= before[r] {
				return false
			}
		}
		return true
	}
	start()
	for deadline := time.Now().Add(5 * time.Second); !watching(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no watch of %s within 5s", resource)
		}
	}
	time.Sleep(10 * time.Millisecond) // the action is recorded just before the watcher is
}

func TestObjectConformance(t *testing.T) {
	registrytest.RunObjectsExcept(t, func(t *testing.T) func(*testing.T) (registry.ObjectStore, io.Closer) {
		cs := fake.NewClientset()
		return func(t *testing.T) (registry.ObjectStore, io.Closer) {
			r, err := Open(Config{Client: cs, Options: registry.Options{Logger: quiet()}})
			if err != nil {
				t.Fatal(err)
			}
			waitWatching(t, cs, "", func() { r.Objects().List(ctx(t)) })
			return r.Objects(), r
		}
	}, map[string]string{
		"ManyChangesConverge":   "it takes one List after other clients' writes as the truth to converge on; this client's List may lag their last writes by milliseconds (seen under -race); TestConcurrentConverges polls instead",
		"WatchSeesOtherClients": "its watch (another client) must hold the other's Put in its first snapshot; an informer follows other clients' writes within milliseconds, not at once; TestObjectWatch covers the events",
	})
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func recv(t *testing.T, ch <-chan registry.Event) registry.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event in 5s")
	}
	panic("unreachable")
}

func request(name string, i int) registry.AcquireRequest {
	return registry.AcquireRequest{Node: name, Underlay: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
		RouterMAC: packet.MAC{0x0a, 0xfe, 0, 0, 0, byte(i)}, VNI: 1, Port: 4789}
}

func TestLeasesFromNodes(t *testing.T) {
	cs := fake.NewClientset(
		node("no-annotations", "10.244.1.0/24", nil),
		node("no-podcidr", "", weftAnnotations("192.0.2.2", "0a:fe:00:00:00:02")),
		node("peer", "10.244.3.0/24", weftAnnotations("192.0.2.3", "0a:fe:00:00:00:03")),
		node("outside", "10.99.0.0/24", weftAnnotations("192.0.2.4", "0a:fe:00:00:00:04")),
		node("bad-mac", "10.244.5.0/24", weftAnnotations("192.0.2.5", "zz")),
		node("v6-only", "fd00::/64", weftAnnotations("192.0.2.6", "0a:fe:00:00:00:06")),
	)
	r := open(t, cs)
	ch, err := r.Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	ev := recv(t, ch)
	if ev.Type != registry.Snapshot || len(ev.Leases) != 1 {
		t.Fatalf("first event %v %+v, want a snapshot of the one peer", ev.Type, ev.Leases)
	}
	want := registry.Lease{Node: "peer", Underlay: netip.MustParseAddr("192.0.2.3"), Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		RouterMAC: packet.MAC{0x0a, 0xfe, 0, 0, 0, 3}, VNI: 1}
	if !ev.Leases[0].SameAs(want) || !ev.Leases[0].Expiry.IsZero() {
		t.Errorf("lease %+v, want %+v with no expiry", ev.Leases[0], want)
	}
	notPeers := map[string]string{}
	for _, np := range r.NotPeers() {
		notPeers[np.Node] = np.Why
	}
	for name, want := range map[string]string{
		"no-annotations": "no weftnet.io/ annotations: weftd has not run on it",
		"no-podcidr":     "no spec.podCIDR (the cluster allocates them with kube-controller-manager --allocate-node-cidrs)",
		"outside":        "spec.podCIDR 10.99.0.0/24 is outside weft's cluster CIDR 10.244.0.0/16",
		"bad-mac":        `annotation weftnet.io/router-mac: `,
		"v6-only":        "no IPv4 prefix in spec.podCIDRs [fd00::/64] (weft is IPv4 only)",
	} {
		got, ok := notPeers[name]
		if !ok || len(got) < len(want) || got[:len(want)] != want {
			t.Errorf("NotPeers[%s] = %q, want %q...", name, got, want)
		}
	}
	if len(notPeers) != 5 {
		t.Errorf("NotPeers has %d nodes, want 5: %v", len(notPeers), notPeers)
	}

	// weftd comes up on no-annotations: one PATCH of nodes/status.
	req := request("no-annotations", 1)
	l, err := r.Acquire(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.1.0/24") {
		t.Errorf("Acquire gave %v, want the podCIDR", l.Subnet)
	}
	if ev := recv(t, ch); ev.Type != registry.Added || !ev.Lease.SameAs(l) {
		t.Errorf("event %v %+v, want Added %+v", ev.Type, ev.Lease, l)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx(t), "no-annotations", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Annotations[AnnotationUnderlay] != "192.0.2.1" || n.Annotations[AnnotationRouterMAC] != "0a:fe:00:00:00:01" ||
		n.Annotations[AnnotationPort] != "4789" || n.Annotations[AnnotationHolder] == "" {
		t.Errorf("annotations after Acquire: %v", n.Annotations)
	}
	patches := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" && a.GetResource().Resource == "nodes" {
			if a.GetSubresource() != "status" {
				t.Errorf("patched nodes/%s, want nodes/status", a.GetSubresource())
			}
			patches++
		}
	}
	// Acquiring again with the same request writes nothing.
	if _, err := r.Acquire(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	again := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" {
			again++
		}
	}
	if patches != 1 || again != 1 {
		t.Errorf("%d patches for the first Acquire, %d after the second; want 1 and 1", patches, again)
	}

	// A kubelet heartbeat (status only) changes nothing weft keeps: no
	// event. The podCIDR assigned to no-podcidr makes it a peer.
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx(t), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	np, _ := cs.CoreV1().Nodes().Get(ctx(t), "no-podcidr", metav1.GetOptions{})
	np.Spec.PodCIDR, np.Spec.PodCIDRs = "10.244.2.0/24", []string{"10.244.2.0/24"}
	if _, err := cs.CoreV1().Nodes().Update(ctx(t), np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, ch); ev.Type != registry.Added || ev.Lease.Node != "no-podcidr" || ev.Lease.Subnet.String() != "10.244.2.0/24" {
		t.Errorf("event %v %+v, want no-podcidr Added on 10.244.2.0/24 (and nothing for the heartbeat)", ev.Type, ev.Lease)
	}
	// Annotations removed by hand: Removed, and the node is explained.
	pn, _ := cs.CoreV1().Nodes().Get(ctx(t), "peer", metav1.GetOptions{})
	pn.Annotations = nil
	if _, err := cs.CoreV1().Nodes().Update(ctx(t), pn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, ch); ev.Type != registry.Removed || ev.Lease.Node != "peer" {
		t.Errorf("event %v %+v, want peer Removed", ev.Type, ev.Lease)
	}
	// A deleted Node is Removed.
	if err := cs.CoreV1().Nodes().Delete(ctx(t), "no-podcidr", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, ch); ev.Type != registry.Removed || ev.Lease.Node != "no-podcidr" {
		t.Errorf("event %v %+v, want no-podcidr Removed", ev.Type, ev.Lease)
	}
	leases, err := r.List(ctx(t))
	if err != nil || len(leases) != 1 || leases[0].Node != "no-annotations" {
		t.Errorf("List = %+v, %v; want just no-annotations", leases, err)
	}
}

// TestTombstone: a Node deleted while the watch was down reaches the
// handler as a DeletedFinalStateUnknown.
func TestTombstone(t *testing.T) {
	r := open(t, fake.NewClientset(node("a", "10.244.1.0/24", weftAnnotations("192.0.2.1", "0a:fe:00:00:00:01"))))
	s := r.nodeInformer()
	if _, err := r.List(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.hub.get("a"); !ok {
		t.Fatal("node a not a peer")
	}
	s.remove(cache.DeletedFinalStateUnknown{Key: "a", Obj: node("a", "10.244.1.0/24", nil)})
	if _, ok := s.hub.get("a"); ok {
		t.Error("a tombstone did not remove the peer")
	}
	s.remove(cache.DeletedFinalStateUnknown{Key: "x", Obj: "not a node"}) // ignored, no panic
}

func TestAcquire(t *testing.T) {
	cs := fake.NewClientset(node("late", "", nil), node("a", "10.244.7.0/24", nil), node("far", "10.1.0.0/24", nil))
	r := open(t, cs)

	// The podCIDR arrives while Acquire waits.
	go func() {
		time.Sleep(300 * time.Millisecond)
		n := node("late", "10.244.9.0/24", nil)
		cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
	}()
	l, err := r.Acquire(ctx(t), request("late", 1))
	if err != nil || l.Subnet.String() != "10.244.9.0/24" {
		t.Fatalf("Acquire(late) = %+v, %v; want 10.244.9.0/24 once assigned", l, err)
	}

	tests := []struct {
		name string
		req  func() registry.AcquireRequest
		want error
		msg  string
	}{
		{"pinned to the podCIDR", func() registry.AcquireRequest {
			q := request("a", 2)
			q.Subnet = netip.MustParsePrefix("10.244.7.0/24")
			return q
		}, nil, ""},
		{"pinned elsewhere", func() registry.AcquireRequest {
			q := request("a", 2)
			q.Subnet = netip.MustParsePrefix("10.244.8.0/24")
			return q
		}, registry.ErrSubnetConflict, "spec.podCIDR is 10.244.7.0/24, but this node serves 10.244.8.0/24"},
		{"outside the cluster CIDR", func() registry.AcquireRequest { return request("far", 3) }, nil, "outside weftd's cluster CIDR"},
		{"bad name", func() registry.AcquireRequest { return request("a/b", 4) }, nil, "not in [A-Za-z0-9._-]"},
	}
	for _, tc := range tests {
		_, err := r.Acquire(ctx(t), tc.req())
		switch {
		case tc.want == nil && tc.msg == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		case tc.msg != "" && (err == nil || !contains(err.Error(), tc.msg)):
			t.Errorf("%s: err = %v, want one saying %q", tc.name, err, tc.msg)
		}
	}

	// No Node at all, and a short deadline: a clear error, retryable.
	c, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err = r.Acquire(c, request("nowhere", 5))
	if !errors.Is(err, registry.ErrUnavailable) || !contains(err.Error(), "no Node object of that name") {
		t.Errorf("Acquire of a missing Node: %v", err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestRenewLost: renewals and releases act for the client that wrote the
// annotations only.
func TestRenewLost(t *testing.T) {
	cs := fake.NewClientset(node("n", "10.244.1.0/24", nil))
	c1, c2 := open(t, cs), open(t, cs)
	if _, err := c1.Renew(ctx(t), "n"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew before Acquire: %v, want ErrLeaseLost", err)
	}
	l, err := c1.Acquire(ctx(t), request("n", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c1.Renew(ctx(t), "n"); err != nil || !got.SameAs(l) {
		t.Fatalf("Renew = %+v, %v; want %+v", got, err, l)
	}
	if _, err := c2.Acquire(ctx(t), request("n", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Renew(ctx(t), "n"); !errors.Is(err, registry.ErrLeaseLost) || !contains(err.Error(), "another client") {
		t.Errorf("Renew after another client acquired: %v, want ErrLeaseLost", err)
	}
	if err := c1.Release(ctx(t), "n"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Release of another client's lease: %v, want ErrLeaseLost", err)
	}
	if err := c2.Release(ctx(t), "n"); err != nil {
		t.Fatal(err)
	}
	n, _ := cs.CoreV1().Nodes().Get(ctx(t), "n", metav1.GetOptions{})
	for _, k := range leaseAnnotations {
		if _, ok := n.Annotations[k]; ok {
			t.Errorf("annotation %s left after Release", k)
		}
	}
	if n.Spec.PodCIDR != "10.244.1.0/24" {
		t.Errorf("Release touched the podCIDR: %q", n.Spec.PodCIDR)
	}
	if err := c2.Release(ctx(t), "n"); err != nil {
		t.Errorf("second Release: %v", err)
	}
	// The Node deleted under a held lease: lost.
	if _, err := c1.Acquire(ctx(t), request("n", 1)); err != nil {
		t.Fatal(err)
	}
	cs.CoreV1().Nodes().Delete(ctx(t), "n", metav1.DeleteOptions{})
	if _, err := c1.Renew(ctx(t), "n"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew of a deleted Node: %v, want ErrLeaseLost", err)
	}
}

func TestNetworkReady(t *testing.T) {
	n := node("n", "10.244.1.0/24", nil)
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"}}
	cs := fake.NewClientset(n)
	r := open(t, cs)
	if err := r.NetworkReady(ctx(t), "n"); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.CoreV1().Nodes().Get(ctx(t), "n", metav1.GetOptions{})
	conds := map[corev1.NodeConditionType]corev1.NodeCondition{}
	for _, c := range got.Status.Conditions {
		conds[c.Type] = c
	}
	if c := conds[corev1.NodeNetworkUnavailable]; c.Status != corev1.ConditionFalse || c.Reason != ConditionReason {
		t.Errorf("NetworkUnavailable = %+v, want False/%s", c, ConditionReason)
	}
	if c := conds[corev1.NodeReady]; c.Status != corev1.ConditionTrue {
		t.Errorf("the kubelet's Ready condition was lost: %+v", got.Status.Conditions)
	}
}

// TestSnapshotIsOneEvent: the initial list of a 5,000-node cluster is one
// Snapshot, not 5,000 events (node/ rebuilds its peers per event).
func TestSnapshotIsOneEvent(t *testing.T) {
	const nodes = 5000
	objs := make([]runtime.Object, 0, nodes)
	for i := range nodes {
		objs = append(objs, node(fmt.Sprintf("n%04d", i), fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256),
			weftAnnotations(fmt.Sprintf("192.168.%d.%d", i/256, i%256), fmt.Sprintf("0a:fe:00:00:%02x:%02x", i/256, i%256))))
	}
	cs := fake.NewClientset(objs...)
	r, err := Open(Config{Client: cs, Options: registry.Options{Logger: quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ch, err := r.Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	ev := recv(t, ch)
	if ev.Type != registry.Snapshot || len(ev.Leases) != nodes {
		t.Fatalf("first event %v with %d leases, want a snapshot of %d", ev.Type, len(ev.Leases), nodes)
	}
	select {
	case ev := <-ch:
		t.Errorf("event after the snapshot with nothing changed: %v %+v", ev.Type, ev.Lease)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestCoalesced: changes a consumer has not taken yet are folded per node.
func TestCoalesced(t *testing.T) {
	cs := fake.NewClientset(node("a", "10.244.1.0/24", weftAnnotations("192.0.2.1", "0a:fe:00:00:00:01")))
	r := open(t, cs)
	ch, err := r.Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch) // snapshot
	// The consumer does not read while the underlay moves ten times.
	for i := range 10 {
		n := node("a", "10.244.1.0/24", weftAnnotations(fmt.Sprintf("192.0.2.%d", 10+i), "0a:fe:00:00:00:01"))
		if _, err := cs.CoreV1().Nodes().Update(ctx(t), n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	last := netip.MustParseAddr("192.0.2.19")
	deadline := time.After(5 * time.Second)
	events := 0
	for {
		select {
		case ev := <-ch:
			events++
			if ev.Type != registry.Changed {
				t.Fatalf("event %v, want Changed", ev.Type)
			}
			if ev.Lease.Underlay == last {
				if events == 10 {
					t.Errorf("10 events for 10 unread changes: not coalesced")
				}
				t.Logf("%d events for 10 updates", events)
				return
			}
		case <-deadline:
			t.Fatalf("never saw the last underlay %v", last)
		}
	}
}

// TestConcurrentConverges: clients acquire, renew and release their nodes
// at once; an observer's watch and List converge on what the API server
// holds, and no two peers share a subnet.
func TestConcurrentConverges(t *testing.T) {
	cs := fake.NewClientset()
	withNodeAllocator(cs, registrytest.Subnets(8))
	obs := open(t, cs)
	waitWatching(t, cs, "nodes", func() { obs.List(ctx(t)) })
	ch, err := obs.Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	view := registry.LeaseMap(recv(t, ch).Leases)
	var wg sync.WaitGroup
	for i := range 4 {
		c := open(t, cs)
		waitWatching(t, cs, "nodes", func() { c.List(ctx(t)) })
		for j := range 2 {
			wg.Go(func() {
				name := fmt.Sprintf("conc-%d-%d", i, j)
				for round := range 4 {
					if _, err := c.Acquire(ctx(t), request(name, i*2+j+1)); err != nil {
						t.Errorf("Acquire(%s): %v", name, err)
						return
					}
					if _, err := c.Renew(ctx(t), name); err != nil {
						t.Errorf("Renew(%s): %v", name, err)
						return
					}
					if (round+j)%2 == 0 {
						if err := c.Release(ctx(t), name); err != nil {
							t.Errorf("Release(%s): %v", name, err)
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	want := map[string]bool{"conc-0-0": true, "conc-1-0": true, "conc-2-0": true, "conc-3-0": true}
	converged := func(m map[string]registry.Lease) bool {
		if len(m) != len(want) {
			return false
		}
		seen := map[netip.Prefix]bool{}
		for name, l := range m {
			if !want[name] || seen[l.Subnet] {
				return false
			}
			seen[l.Subnet] = true
		}
		return true
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		leases, err := obs.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if converged(registry.LeaseMap(leases)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("List never converged: %+v", leases)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for !converged(view) {
		select {
		case ev := <-ch:
			switch ev.Type {
			case registry.Added, registry.Changed:
				view[ev.Lease.Node] = ev.Lease
			case registry.Removed:
				delete(view, ev.Lease.Node)
			default:
				t.Fatalf("%v event mid-watch", ev.Type)
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("watch view never converged: %v", view)
		}
	}
}

// TestObjectWatch: the object watch's events, the trimming and what is
// not watched.
func TestObjectWatch(t *testing.T) {
	pod := fullPod(1)
	pod.Namespace = "default"
	cs := fake.NewClientset(pod)
	r := open(t, cs)
	s := r.Objects()
	waitWatching(t, cs, "", func() { s.List(ctx(t)) })
	ch, err := s.Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	next := func() registry.ObjectEvent {
		t.Helper()
		select {
		case ev := <-ch:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no object event in 5s")
		}
		panic("unreachable")
	}
	ev := next()
	if ev.Type != registry.ObjectSnapshot || len(ev.Objects) != 1 || ev.Objects[0].Pod == nil {
		t.Fatalf("first event %v %v, want a snapshot of the pod", ev.Type, ev.Objects)
	}
	p := ev.Objects[0].Pod
	if len(p.ManagedFields) != 0 || len(p.Status.ContainerStatuses) != 0 || len(p.Spec.Volumes) != 0 ||
		p.Labels["app"] != "web" || p.Status.PodIP == "" || p.Spec.NodeName == "" ||
		len(p.Spec.Containers) != 1 || len(p.Spec.Containers[0].Ports) != 2 || p.Spec.Containers[0].Ports[0].Name != "http" {
		t.Errorf("stored pod not trimmed to what weft needs: %+v", p)
	}
	// A status change weft does not keep: nothing. A label change: a put.
	pod.Status.ContainerStatuses[0].RestartCount = 3
	if _, err := cs.CoreV1().Pods("default").UpdateStatus(ctx(t), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod.Labels = map[string]string{"app": "web", "canary": "yes"}
	if _, err := cs.CoreV1().Pods("default").Update(ctx(t), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != registry.ObjectPut || ev.Object.Pod == nil || ev.Object.Pod.Labels["canary"] != "yes" {
		t.Errorf("event %v %v, want the relabelled pod (and nothing for the restart count)", ev.Type, ev.Object)
	}
	// Another proxy's Service and a headless Service's slice are not
	// watched; the headless Service itself is.
	other := registrytest.Service("default", "other", "10.96.0.20", 80)
	other.Service.Labels = map[string]string{labelServiceProxyName: "someone-else"}
	headless := registrytest.Service("default", "hl", "None", 80)
	slice := registrytest.EndpointSlice("default", "hl-1", "hl", "10.244.1.9", 80)
	slice.EndpointSlice.Labels[labelHeadless] = ""
	for _, o := range []objects.Object{other, slice, headless} {
		if _, err := s.Put(ctx(t), o); err != nil {
			t.Fatalf("Put(%s): %v", o, err)
		}
	}
	if ev := next(); ev.Type != registry.ObjectPut || ev.Object.Key() != "Service/default/hl" {
		t.Errorf("event %v %s, want the headless Service alone", ev.Type, ev.Object.Key())
	}
	if _, err := s.Delete(ctx(t), "Pod/default/"+pod.Name); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != registry.ObjectDeleted || ev.Object.Key() != "Pod/default/"+pod.Name {
		t.Errorf("event %v %s, want the pod deleted", ev.Type, ev.Object.Key())
	}
	objs, err := s.List(ctx(t))
	if err != nil || len(objs) != 1 {
		t.Errorf("List = %v, %v; want the headless Service alone", objs, err)
	}
}
