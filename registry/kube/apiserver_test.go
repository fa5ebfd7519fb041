package kube_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/kubetest"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/kube"
	"github.com/weftnet/weft/registry/registrytest"
)

// The tests below run against a real kube-apiserver and
// kube-controller-manager (internal/kubetest), started once for the test
// binary by the first test that asks, in a network namespace of its own.

func TestMain(m *testing.M) {
	os.Exit(kubetest.Main(m, kubetest.Options{Prefix: "wq", ControllerManager: true}))
}

func apiCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestAPIServerLeases: Nodes registered as a kubelet would, podCIDRs
// allocated by kube-controller-manager, weft's annotations written through
// nodes/status under RBAC-checked admin rights, and another client's watch
// following Acquire, Release and the Node's deletion.
func TestAPIServerLeases(t *testing.T) {
	cp := kubetest.Shared(t)
	cs := cp.Clientset(t)
	ctx := apiCtx(t)
	a, b := testenv.UniqueName("wq"), testenv.UniqueName("wq")
	for _, name := range []string{a, b} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	open := func() *kube.Registry {
		r, err := kube.Open(kube.Config{Client: cs, ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	writer, watcher := open(), open()
	ch, err := watcher.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func() registry.Event {
		t.Helper()
		for {
			select {
			case ev := <-ch:
				// The shared API server may hold other tests' Nodes.
				if ev.Type == registry.Snapshot || ev.Lease.Node == a || ev.Lease.Node == b {
					return ev
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no watch event in 30s")
			}
		}
	}
	next() // snapshot

	req := registry.AcquireRequest{Node: a, Underlay: netip.MustParseAddr("192.0.2.1"),
		RouterMAC: packet.MAC{0x0a, 0xfe, 0, 0, 0, 1}, VNI: 1, Port: 4789, Caps: registry.CapPartialCsum}
	la, err := writer.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, a, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if la.Subnet.String() != n.Spec.PodCIDR || !netip.MustParsePrefix("10.244.0.0/16").Contains(la.Subnet.Addr()) {
		t.Errorf("lease subnet %v, Node podCIDR %q", la.Subnet, n.Spec.PodCIDR)
	}
	if n.Annotations[kube.AnnotationUnderlay] != "192.0.2.1" {
		t.Errorf("annotations on the Node: %v", n.Annotations)
	}
	if ev := next(); ev.Type != registry.Added || !ev.Lease.SameAs(la) {
		t.Errorf("watch: %v %+v, want Added %+v", ev.Type, ev.Lease, la)
	}
	if _, err := writer.Renew(ctx, a); err != nil {
		t.Errorf("Renew: %v", err)
	}
	pinned := req
	pinned.Subnet = netip.MustParsePrefix("10.244.250.0/24")
	if _, err := writer.Acquire(ctx, pinned); !errors.Is(err, registry.ErrSubnetConflict) {
		t.Errorf("Acquire pinned to another subnet: %v, want ErrSubnetConflict", err)
	}
	if err := writer.NetworkReady(ctx, a); err != nil {
		t.Fatal(err)
	}
	n, _ = cs.CoreV1().Nodes().Get(ctx, a, metav1.GetOptions{})
	ready := false
	for _, c := range n.Status.Conditions {
		ready = ready || c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == kube.ConditionReason
	}
	if !ready {
		t.Errorf("NetworkUnavailable not False after NetworkReady: %+v", n.Status.Conditions)
	}
	// b has a podCIDR but no weftd: explained, not a peer.
	deadline := time.Now().Add(30 * time.Second)
	for explained := false; !explained; {
		for _, np := range watcher.NotPeers() {
			explained = explained || np.Node == b
		}
		if !explained && time.Now().After(deadline) {
			t.Fatalf("node %s missing from NotPeers: %v", b, watcher.NotPeers())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := writer.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != registry.Removed || ev.Lease.Node != a {
		t.Errorf("watch after Release: %v %+v, want %s Removed", ev.Type, ev.Lease, a)
	}
	if _, err := writer.Acquire(ctx, req); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != registry.Added {
		t.Errorf("watch after Acquire again: %v", ev.Type)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, a, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != registry.Removed || ev.Lease.Node != a {
		t.Errorf("watch after the Node's deletion: %v %+v, want %s Removed", ev.Type, ev.Lease, a)
	}
	if _, err := writer.Renew(ctx, a); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew of a deleted Node: %v, want ErrLeaseLost", err)
	}
}

// TestAPIServerObjects: Put is a server-side apply the API server
// validates and defaults (it allocates the cluster IP), an unchanged Put
// changes nothing, Get and List see it, Delete removes it; all in a
// namespace of the test's own.
func TestAPIServerObjects(t *testing.T) {
	cp := kubetest.Shared(t)
	cs := cp.Clientset(t)
	ctx := apiCtx(t)
	ns := testenv.UniqueName("wq")
	r, err := kube.Open(kube.Config{Client: cs, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t.Cleanup(func() { cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	s := r.Objects()
	if _, err := s.Put(ctx, objects.Object{Kind: objects.KindNamespace, Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}}); err != nil {
		t.Fatal(err)
	}
	svc := registrytest.Service(ns, "web", "", 80)
	changed, err := s.Put(ctx, svc)
	if err != nil || !changed {
		t.Fatalf("Put(Service) = %v, %v", changed, err)
	}
	got, ok, err := s.Get(ctx, "Service/"+ns+"/web")
	if err != nil || !ok || got.Service.Spec.ClusterIP == "" {
		t.Fatalf("Get = %+v, %v, %v; want the Service with an allocated cluster IP", got.Service, ok, err)
	}
	if changed, err := s.Put(ctx, svc); err != nil || changed {
		t.Errorf("Put of the same Service = %v, %v; want unchanged", changed, err)
	}
	bad := registrytest.Service(ns, "bad", "10.200.0.1", 80) // outside --service-cluster-ip-range
	if _, err := s.Put(ctx, bad); err == nil || errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Put of a Service outside the service CIDR: %v, want the API server's refusal", err)
	}
	objs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, o := range objs {
		keys[o.Key()] = true
	}
	if !keys["Service/"+ns+"/web"] || !keys["Namespace//"+ns] {
		t.Errorf("List = %v, want the Namespace and the Service", keys)
	}
	if existed, err := s.Delete(ctx, "Service/"+ns+"/web"); err != nil || !existed {
		t.Errorf("Delete = %v, %v", existed, err)
	}
	if _, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Service is still in the API server: %v", err)
	}
}
