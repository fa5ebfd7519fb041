package registrytest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
)

// NewObjectStore makes an empty object store for one test and returns a
// function that opens a new client of it (and the closer of the registry
// behind it). The suite closes every client it opens.
type NewObjectStore func(t *testing.T) (open func(t *testing.T) (registry.ObjectStore, io.Closer))

// RunObjects runs the object store's conformance suite against a backend.
func RunObjects(t *testing.T, newStore NewObjectStore) {
	RunObjectsExcept(t, newStore, nil)
}

// RunObjectsExcept runs the suite but for the cases named in
// notApplicable, reported as skipped with the reason given.
func RunObjectsExcept(t *testing.T, newStore NewObjectStore, notApplicable map[string]string) {
	tests := []struct {
		name string
		run  func(*testing.T, NewObjectStore)
	}{
		{"PutGetListDelete", testObjectsCRUD},
		{"UnchangedPutIsQuiet", testObjectsUnchanged},
		{"WatchSeesOtherClients", testObjectsWatch},
		{"ManyChangesConverge", testObjectsConverge},
		{"RejectsBadKeys", testObjectsBadKeys},
		{"CloseEndsWatch", testObjectsClose},
	}
	for name := range notApplicable {
		known := false
		for _, tc := range tests {
			known = known || tc.name == name
		}
		if !known {
			t.Errorf("RunObjectsExcept: no case %q to leave out", name)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := notApplicable[tc.name]; ok {
				t.Skip("not applicable to this backend: " + why)
			}
			t.Parallel()
			tc.run(t, newStore)
		})
	}
}

func objectClient(t *testing.T, open func(*testing.T) (registry.ObjectStore, io.Closer)) registry.ObjectStore {
	t.Helper()
	s, c := open(t)
	t.Cleanup(func() { c.Close() })
	return s
}

// Service returns a ClusterIP Service for tests.
func Service(ns, name, clusterIP string, port int32) objects.Object {
	return objects.Object{Kind: objects.KindService, Service: &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: clusterIP,
			Selector:  map[string]string{"app": name},
			Ports:     []corev1.ServicePort{{Name: "p", Protocol: corev1.ProtocolTCP, Port: port}},
		},
	}}
}

// EndpointSlice returns a slice of one ready endpoint for the Service
// ns/svc.
func EndpointSlice(ns, name, svc, addr string, port int32) objects.Object {
	ready, pname, proto := true, "p", corev1.ProtocolTCP
	return objects.Object{Kind: objects.KindEndpointSlice, EndpointSlice: &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Protocol: &proto, Port: &port}},
	}}
}

func mustPut(t *testing.T, s registry.ObjectStore, o objects.Object) bool {
	t.Helper()
	changed, err := s.Put(testCtx(t), o)
	if err != nil {
		t.Fatalf("Put(%s): %v", o, err)
	}
	return changed
}

func listKeys(t *testing.T, s registry.ObjectStore) string {
	t.Helper()
	objs, err := s.List(testCtx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key()
	}
	return strings.Join(keys, " ")
}

func testObjectsCRUD(t *testing.T, newStore NewObjectStore) {
	s := objectClient(t, newStore(t))
	ctx := testCtx(t)
	if got := listKeys(t, s); got != "" {
		t.Fatalf("fresh store lists %q, want nothing", got)
	}
	svc := Service("default", "web", "10.96.0.10", 80)
	if !mustPut(t, s, svc) {
		t.Error("first Put reported no change")
	}
	mustPut(t, s, EndpointSlice("default", "web-1", "web", "10.244.1.5", 8080))
	mustPut(t, s, objects.Object{Kind: objects.KindNamespace, Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"ns": "prod"}}}})
	want := "EndpointSlice/default/web-1 Namespace//prod Service/default/web"
	if got := listKeys(t, s); got != want {
		t.Errorf("List = %q, want %q", got, want)
	}
	got, ok, err := s.Get(ctx, "Service/default/web")
	if err != nil || !ok {
		t.Fatalf("Get(Service/default/web) = %v, %v", ok, err)
	}
	if got.Service == nil || got.Service.Spec.ClusterIP != "10.96.0.10" || got.Service.Spec.Ports[0].Port != 80 {
		t.Errorf("Get returned %+v, want the Service put", got.Service)
	}
	if _, ok, err := s.Get(ctx, "Service/default/none"); ok || err != nil {
		t.Errorf("Get(missing) = %v, %v; want false, nil", ok, err)
	}
	// Replacing changes the stored object.
	svc2 := Service("default", "web", "10.96.0.10", 8080)
	if !mustPut(t, s, svc2) {
		t.Error("Put of a changed object reported no change")
	}
	got, _, _ = s.Get(ctx, "Service/default/web")
	if got.Service.Spec.Ports[0].Port != 8080 {
		t.Errorf("after replace, port = %d, want 8080", got.Service.Spec.Ports[0].Port)
	}
	existed, err := s.Delete(ctx, "Service/default/web")
	if err != nil || !existed {
		t.Errorf("Delete = %v, %v; want true, nil", existed, err)
	}
	existed, err = s.Delete(ctx, "Service/default/web")
	if err != nil || existed {
		t.Errorf("second Delete = %v, %v; want false, nil", existed, err)
	}
	if got := listKeys(t, s); got != "EndpointSlice/default/web-1 Namespace//prod" {
		t.Errorf("List after delete = %q", got)
	}
}

func testObjectsUnchanged(t *testing.T, newStore NewObjectStore) {
	s := objectClient(t, newStore(t))
	svc := Service("default", "web", "10.96.0.10", 80)
	mustPut(t, s, svc)
	ch, err := s.Watch(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if ev := recvObject(t, ch, soon()); ev.Type != registry.ObjectSnapshot || len(ev.Objects) != 1 {
		t.Fatalf("first event %v with %d objects, want a snapshot of 1", ev.Type, len(ev.Objects))
	}
	if mustPut(t, s, svc) {
		t.Error("Put of the same object reported a change")
	}
	// A marker put after the no-op must be the next event: the no-op sent
	// nothing.
	mustPut(t, s, Service("default", "marker", "10.96.0.11", 80))
	if ev := recvObject(t, ch, soon()); ev.Type != registry.ObjectPut || ev.Object.Key() != "Service/default/marker" {
		t.Errorf("next event %v %s, want put of the marker (the unchanged put must send nothing)", ev.Type, ev.Object.Key())
	}
}

func recvObject(t *testing.T, ch <-chan registry.ObjectEvent, deadline time.Time) registry.ObjectEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("object watch closed")
		}
		return ev
	case <-time.After(time.Until(deadline)):
		t.Fatal("no object event in time")
	}
	return registry.ObjectEvent{}
}

func testObjectsWatch(t *testing.T, newStore NewObjectStore) {
	open := newStore(t)
	a, b := objectClient(t, open), objectClient(t, open)
	mustPut(t, a, Service("default", "before", "10.96.0.9", 80))
	ch, err := b.Watch(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	ev := recvObject(t, ch, soon())
	if ev.Type != registry.ObjectSnapshot || len(ev.Objects) != 1 || ev.Objects[0].Key() != "Service/default/before" {
		t.Fatalf("first event = %v %v, want a snapshot holding Service/default/before", ev.Type, ev.Objects)
	}
	steps := []struct {
		do   func()
		typ  registry.ObjectEventType
		key  string
		port int32
	}{
		{func() { mustPut(t, a, Service("default", "web", "10.96.0.10", 80)) }, registry.ObjectPut, "Service/default/web", 80},
		{func() { mustPut(t, a, Service("default", "web", "10.96.0.10", 81)) }, registry.ObjectPut, "Service/default/web", 81},
		{func() { a.Delete(testCtx(t), "Service/default/before") }, registry.ObjectDeleted, "Service/default/before", 80},
	}
	for i, st := range steps {
		st.do()
		ev := recvObject(t, ch, soon())
		if ev.Type != st.typ || ev.Object.Key() != st.key {
			t.Fatalf("step %d: event %v %s, want %v %s", i, ev.Type, ev.Object.Key(), st.typ, st.key)
		}
		if p := ev.Object.Service.Spec.Ports[0].Port; p != st.port {
			t.Errorf("step %d: event carries port %d, want %d", i, p, st.port)
		}
	}
}

// testObjectsConverge: writers on several clients race; a watcher's view
// built from its events ends equal to List.
func testObjectsConverge(t *testing.T, newStore NewObjectStore) {
	open := newStore(t)
	watcher := objectClient(t, open)
	ch, err := watcher.Watch(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	view := registry.ObjectView{}
	view.Apply(recvObject(t, ch, soon()))
	var wg sync.WaitGroup
	for w := range 3 {
		c := objectClient(t, open)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				name := fmt.Sprintf("s%d-%d", w, i%4)
				if i%3 == 2 {
					c.Delete(context.Background(), "Service/default/"+name)
					continue
				}
				c.Put(context.Background(), Service("default", name, fmt.Sprintf("10.96.%d.%d", w, i), int32(1000+i)))
			}
		}()
	}
	wg.Wait()
	// Converged when the view holds exactly what List holds, port for port.
	state := func(objs []objects.Object) string {
		var b strings.Builder
		for _, o := range objs {
			fmt.Fprintf(&b, "%s:%d ", o.Key(), o.Service.Spec.Ports[0].Port)
		}
		return b.String()
	}
	listed, err := watcher.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := state(listed)
	deadline := soon()
	for state(view.Sorted()) != want {
		select {
		case ev := <-ch:
			view.Apply(ev)
		case <-time.After(time.Until(deadline)):
			t.Fatalf("watcher's view %q never matched List %q", state(view.Sorted()), want)
		}
	}
}

func testObjectsBadKeys(t *testing.T, newStore NewObjectStore) {
	s := objectClient(t, newStore(t))
	ctx := testCtx(t)
	for _, o := range []objects.Object{
		Service("default", "../escape", "10.96.0.1", 80),
		Service("default", "Upper", "10.96.0.1", 80),
		Service("default", "a~b", "10.96.0.1", 80),
		Service("", "noname-space", "10.96.0.1", 80),
		{Kind: objects.KindService},
	} {
		if _, err := s.Put(ctx, o); err == nil {
			t.Errorf("Put(%q) succeeded, want an error", o.Key())
		}
	}
	for _, key := range []string{"", "Service/default", "Deployment/default/x", "Service/default/a/b", "Namespace/ns/x"} {
		if _, err := s.Delete(ctx, key); err == nil {
			t.Errorf("Delete(%q) succeeded, want an error", key)
		}
		if _, _, err := s.Get(ctx, key); err == nil {
			t.Errorf("Get(%q) succeeded, want an error", key)
		}
	}
	if got := listKeys(t, s); got != "" {
		t.Errorf("bad puts left %q in the store", got)
	}
}

func testObjectsClose(t *testing.T, newStore NewObjectStore) {
	s, c := newStore(t)(t)
	ch, err := s.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	recvObject(t, ch, soon())
	c.Close()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				if _, err := s.Put(testCtx(t), Service("default", "late", "10.96.0.1", 80)); err == nil {
					t.Error("Put after Close succeeded")
				}
				return
			}
		case <-deadline:
			t.Fatal("object watch still open 5s after Close")
		}
	}
}
