package kube

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	networkinginformers "k8s.io/client-go/informers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
)

// Labels kube-proxy filters its Service and EndpointSlice informers by
// (it watches only objects that have neither), and so does weft: a
// Service another proxy implements is not weft's, and a headless
// Service's EndpointSlices carry no cluster IP to serve. Headless Services
// themselves still arrive (the label is on their slices); the service
// compiler skips them.
const (
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	labelHeadless         = "service.kubernetes.io/headless"
	proxySelector         = "!" + labelServiceProxyName + ",!" + labelHeadless
)

// objectSource is the five informers behind the object store, one hub over
// all of them keyed by objects.Object.Key.
type objectSource struct {
	hub    *hub[objects.Object]
	synced []cache.InformerSynced
}

// Objects implements registry.ObjectProvider. The informers start on first
// use of the store.
func (r *Registry) Objects() registry.ObjectStore { return &objectStore{r: r} }

type objectStore struct{ r *Registry }

func (r *Registry) objectInformers() *objectSource {
	r.objsOnce.Do(func() {
		s := &objectSource{hub: newHub(sameObject)}
		ns := r.namespace // "" = all
		proxied := func(o *metav1.ListOptions) { o.LabelSelector = proxySelector }
		nsOnly := func(o *metav1.ListOptions) {
			if ns != "" {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ns).String()
			}
		}
		infs := []struct {
			resource string
			inf      cache.SharedIndexInformer
		}{
			{"namespaces", coreinformers.NewFilteredNamespaceInformer(r.cli, 0, cache.Indexers{}, nsOnly)},
			{"pods", coreinformers.NewFilteredPodInformer(r.cli, ns, 0, cache.Indexers{}, nil)},
			{"services", coreinformers.NewFilteredServiceInformer(r.cli, ns, 0, cache.Indexers{}, proxied)},
			{"endpointslices", discoveryinformers.NewFilteredEndpointSliceInformer(r.cli, ns, 0, cache.Indexers{}, proxied)},
			{"networkpolicies", networkinginformers.NewFilteredNetworkPolicyInformer(r.cli, ns, 0, cache.Indexers{}, nil)},
		}
		for _, i := range infs {
			s.synced = append(s.synced, r.runInformer(i.inf, i.resource, trimObject, func(obj any) { s.update(r, obj) }, s.remove))
		}
		r.objs = s
	})
	return r.objs
}

// update takes an added or changed object. One the label selectors
// should have kept out (a watch that does not filter, a Service that
// gained the label) is dropped as if deleted.
func (s *objectSource) update(r *Registry, obj any) {
	o, ok := toObject(obj)
	switch {
	case !ok:
	case r.watched(o):
		s.hub.set(o.Key(), o)
	default:
		s.hub.del(o.Key())
	}
}

func (s *objectSource) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if o, ok := toObject(obj); ok {
		s.hub.del(o.Key())
	}
}

// toObject wraps an informer's (trimmed) object; the store never modifies
// it, and neither may the watchers it is handed to.
func toObject(obj any) (objects.Object, bool) {
	switch v := obj.(type) {
	case *corev1.Pod:
		return objects.Object{Kind: objects.KindPod, Pod: v}, true
	case *corev1.Namespace:
		return objects.Object{Kind: objects.KindNamespace, Namespace: v}, true
	case *corev1.Service:
		return objects.Object{Kind: objects.KindService, Service: v}, true
	case *discoveryv1.EndpointSlice:
		return objects.Object{Kind: objects.KindEndpointSlice, EndpointSlice: v}, true
	case *networkingv1.NetworkPolicy:
		return objects.Object{Kind: objects.KindNetworkPolicy, NetworkPolicy: v}, true
	}
	return objects.Object{}, false
}

// sameObject: equal but for the resourceVersion, so an update that changed
// only what the transform drops (a pod's container statuses, an
// EndpointSlice's managedFields) sends watchers nothing. The objects are
// shared with the cache, so the comparison is on shallow copies.
func sameObject(a, b objects.Object) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch {
	case a.Pod != nil && b.Pod != nil:
		return sameButVersion(a.Pod, b.Pod)
	case a.Namespace != nil && b.Namespace != nil:
		return sameButVersion(a.Namespace, b.Namespace)
	case a.Service != nil && b.Service != nil:
		return sameButVersion(a.Service, b.Service)
	case a.EndpointSlice != nil && b.EndpointSlice != nil:
		return sameButVersion(a.EndpointSlice, b.EndpointSlice)
	case a.NetworkPolicy != nil && b.NetworkPolicy != nil:
		return sameButVersion(a.NetworkPolicy, b.NetworkPolicy)
	}
	return false
}

// sameButVersion compares shallow copies with the resourceVersion blanked.
func sameButVersion[T any, P interface {
	*T
	metav1.Object
}](a, b P) bool {
	x, y := *a, *b
	P(&x).SetResourceVersion("")
	P(&y).SetResourceVersion("")
	return equality.Semantic.DeepEqual(&x, &y)
}

// watched reports whether the informers follow o: objects labelled for
// another proxy or as a headless Service's slices, and, with
// Config.Namespace, objects of other namespaces, are not.
func (r *Registry) watched(o objects.Object) bool {
	m := o.Meta()
	if r.namespace != "" {
		if o.Kind == objects.KindNamespace && m.Name != r.namespace || o.Kind != objects.KindNamespace && m.Namespace != r.namespace {
			return false
		}
	}
	if o.Kind == objects.KindService || o.Kind == objects.KindEndpointSlice {
		if _, ok := m.Labels[labelServiceProxyName]; ok {
			return false
		}
		if _, ok := m.Labels[labelHeadless]; ok {
			return false
		}
	}
	return true
}

// newerOrSame reports whether resourceVersion have is at least want. They
// are opaque strings to clients, but the API server's are etcd revisions:
// compare numerically when both parse, else require equality.
func newerOrSame(have, want string) bool {
	h, err1 := strconv.ParseUint(have, 10, 64)
	w, err2 := strconv.ParseUint(want, 10, 64)
	if err1 != nil || err2 != nil {
		return have == want
	}
	return h >= w
}

// applyBody is o as a server-side apply request: its canonical encoding,
// without the fields the server owns.
func applyBody(o objects.Object) ([]byte, error) {
	c := o
	m := o.Meta().DeepCopy()
	m.ResourceVersion, m.UID, m.ManagedFields, m.Generation = "", "", nil, 0
	m.CreationTimestamp, m.DeletionTimestamp = metav1.Time{}, nil
	switch {
	case o.Pod != nil:
		p := *o.Pod
		p.ObjectMeta, p.Status = *m, corev1.PodStatus{}
		c.Pod = &p
	case o.Namespace != nil:
		n := *o.Namespace
		n.ObjectMeta, n.Status = *m, corev1.NamespaceStatus{}
		c.Namespace = &n
	case o.Service != nil:
		s := *o.Service
		s.ObjectMeta, s.Status = *m, corev1.ServiceStatus{}
		c.Service = &s
	case o.EndpointSlice != nil:
		e := *o.EndpointSlice
		e.ObjectMeta = *m
		c.EndpointSlice = &e
	case o.NetworkPolicy != nil:
		p := *o.NetworkPolicy
		p.ObjectMeta = *m
		c.NetworkPolicy = &p
	}
	y, err := objects.Encode(c)
	if err != nil {
		return nil, err
	}
	return yaml.YAMLToJSON(y)
}

// Put implements registry.ObjectStore with a server-side apply (field
// manager "weft", forced), as `kubectl apply --server-side` does: the API
// server creates or updates the object, defaults and validates it
// (allocating a Service's cluster IP if it has none), and fields other
// managers own stay. changed compares the object as the store keeps it
// before and after. Put returns once the informer has the new version, so
// that a List after it sees the write.
func (s *objectStore) Put(ctx context.Context, o objects.Object) (bool, error) {
	if _, err := registry.EncodeObject(o); err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	r := s.r
	key := o.Key()
	op := "put " + key
	if err := r.checkOpen(); err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	src := r.objectInformers()
	ctx, cancel := r.call(ctx)
	defer cancel()
	body, err := applyBody(o)
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	before, had := src.hub.get(key)
	m := o.Meta()
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: ptr(true)}
	var got runtime.Object
	switch o.Kind {
	case objects.KindPod:
		got, err = r.cli.CoreV1().Pods(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	case objects.KindNamespace:
		got, err = r.cli.CoreV1().Namespaces().Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	case objects.KindService:
		got, err = r.cli.CoreV1().Services(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	case objects.KindEndpointSlice:
		got, err = r.cli.DiscoveryV1().EndpointSlices(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	case objects.KindNetworkPolicy:
		got, err = r.cli.NetworkingV1().NetworkPolicies(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	default:
		return false, fmt.Errorf("%s: kind %q is not one weft stores", op, o.Kind)
	}
	if err != nil {
		return false, r.fail(op, forbidden(err, "patch", o.Kind, m.Namespace))
	}
	trimmed, _ := trimObject(got)
	after, ok := toObject(trimmed)
	if !ok {
		return false, fmt.Errorf("%s: the API server answered with a %T", op, got)
	}
	if r.watched(after) {
		rv := after.Meta().ResourceVersion
		src.hub.waitFor(ctx, readYourWriteTimeout, func(view map[string]objects.Object) bool {
			v, ok := view[key]
			return ok && newerOrSame(v.Meta().ResourceVersion, rv)
		})
	}
	return !had || !sameObject(before, after), nil
}

// Get implements registry.ObjectStore with a GET from the API server (not
// the cache), trimmed as the store keeps objects.
func (s *objectStore) Get(ctx context.Context, key string) (objects.Object, bool, error) {
	if err := registry.CheckObjectKey(key); err != nil {
		return objects.Object{}, false, fmt.Errorf("get: %w", err)
	}
	r := s.r
	op := "get " + key
	if err := r.checkOpen(); err != nil {
		return objects.Object{}, false, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	kind, ns, name := splitKey(key)
	var got runtime.Object
	var err error
	o := metav1.GetOptions{}
	switch kind {
	case objects.KindPod:
		got, err = r.cli.CoreV1().Pods(ns).Get(ctx, name, o)
	case objects.KindNamespace:
		got, err = r.cli.CoreV1().Namespaces().Get(ctx, name, o)
	case objects.KindService:
		got, err = r.cli.CoreV1().Services(ns).Get(ctx, name, o)
	case objects.KindEndpointSlice:
		got, err = r.cli.DiscoveryV1().EndpointSlices(ns).Get(ctx, name, o)
	case objects.KindNetworkPolicy:
		got, err = r.cli.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, o)
	}
	switch {
	case apierrors.IsNotFound(err):
		return objects.Object{}, false, nil
	case err != nil:
		return objects.Object{}, false, r.fail(op, forbidden(err, "get", kind, ns))
	}
	trimmed, _ := trimObject(got)
	out, ok := toObject(trimmed)
	return out, ok, nil
}

// Delete implements registry.ObjectStore with a DELETE (background
// propagation). A Namespace is gone only once its contents are: Delete
// returns when the informer sees it gone or terminating.
func (s *objectStore) Delete(ctx context.Context, key string) (bool, error) {
	if err := registry.CheckObjectKey(key); err != nil {
		return false, fmt.Errorf("delete: %w", err)
	}
	r := s.r
	op := "delete " + key
	if err := r.checkOpen(); err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	src := r.objectInformers()
	ctx, cancel := r.call(ctx)
	defer cancel()
	kind, ns, name := splitKey(key)
	var err error
	o := metav1.DeleteOptions{}
	switch kind {
	case objects.KindPod:
		err = r.cli.CoreV1().Pods(ns).Delete(ctx, name, o)
	case objects.KindNamespace:
		err = r.cli.CoreV1().Namespaces().Delete(ctx, name, o)
	case objects.KindService:
		err = r.cli.CoreV1().Services(ns).Delete(ctx, name, o)
	case objects.KindEndpointSlice:
		err = r.cli.DiscoveryV1().EndpointSlices(ns).Delete(ctx, name, o)
	case objects.KindNetworkPolicy:
		err = r.cli.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, o)
	}
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, r.fail(op, forbidden(err, "delete", kind, ns))
	}
	src.hub.waitFor(ctx, readYourWriteTimeout, func(view map[string]objects.Object) bool {
		v, ok := view[key]
		return !ok || v.Meta().DeletionTimestamp != nil
	})
	return true, nil
}

func splitKey(key string) (objects.Kind, string, string) {
	kind, rest, _ := strings.Cut(key, "/")
	ns, name, _ := strings.Cut(rest, "/")
	return objects.Kind(kind), ns, name
}

// List implements registry.ObjectStore from the informers' cache, once
// they have synced (waiting for that within ctx).
func (s *objectStore) List(ctx context.Context) ([]objects.Object, error) {
	r := s.r
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	src := r.objectInformers()
	ctx, cancel := r.call(ctx)
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), src.synced...) {
		return nil, r.fail("list objects: informers not synced", ctx.Err())
	}
	out := src.hub.values()
	registry.SortObjects(out)
	return out, nil
}

// Watch implements registry.ObjectStore: one ObjectSnapshot once all five
// informers have synced, then each batch of changes the consumer has not
// taken yet, deletions first, coalesced per object.
func (s *objectStore) Watch(ctx context.Context) (<-chan registry.ObjectEvent, error) {
	r := s.r
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch objects: %w", err)
	}
	src := r.objectInformers()
	ch := make(chan registry.ObjectEvent) // unbuffered, as the lease watch
	r.watchers.Add(1)
	go func() {
		defer r.watchers.Done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(r.ctx, cancel)()
		follow(ctx, src.hub, src.synced, objectSnapshot, diffObjects, ch)
	}()
	return ch, nil
}

func objectSnapshot(view map[string]objects.Object) registry.ObjectEvent {
	out := make([]objects.Object, 0, len(view))
	for _, o := range view {
		out = append(out, o)
	}
	registry.SortObjects(out)
	return registry.ObjectEvent{Type: registry.ObjectSnapshot, Objects: out}
}

// diffObjects turns a batch of dirty keys into events: deletions, then
// puts of new or changed objects, each sorted by key.
func diffObjects(prev, next map[string]objects.Object) []registry.ObjectEvent {
	var deleted, put []registry.ObjectEvent
	for k, o := range prev {
		if _, ok := next[k]; !ok {
			deleted = append(deleted, registry.ObjectEvent{Type: registry.ObjectDeleted, Object: o})
		}
	}
	for k, o := range next {
		if old, ok := prev[k]; !ok || !sameObject(old, o) {
			put = append(put, registry.ObjectEvent{Type: registry.ObjectPut, Object: o})
		}
	}
	byKey := func(a, b registry.ObjectEvent) int { return strings.Compare(a.Object.Key(), b.Object.Key()) }
	slices.SortFunc(deleted, byKey)
	slices.SortFunc(put, byKey)
	return slices.Concat(deleted, put)
}

func ptr[T any](v T) *T { return &v }

// ErrForbidden marks a write or read of objects that the API server's
// authorization refused: weftd's credentials lack the verb (deploy/'s
// least-privilege ClusterRole grants none of the writes `weft apply`
// makes). It is registry.ErrForbidden, which node/ answers as the API's
// 403.
var ErrForbidden = registry.ErrForbidden

// resources names each kind's API resource as RBAC rules spell it.
var resources = map[objects.Kind]string{
	objects.KindPod:           "pods",
	objects.KindNamespace:     "namespaces",
	objects.KindService:       "services",
	objects.KindEndpointSlice: "endpointslices.discovery.k8s.io",
	objects.KindNetworkPolicy: "networkpolicies.networking.k8s.io",
}

// forbidden turns the API server's Forbidden into an error that says what
// was refused and what to do, wrapping ErrForbidden and the API server's
// own message; other errors pass unchanged. verb is the request's: a
// server-side apply (Put) is a patch, and also a create when the object
// is new.
func forbidden(err error, verb string, kind objects.Kind, ns string) error {
	if !apierrors.IsForbidden(err) {
		return err
	}
	res := resources[kind]
	if res == "" {
		res = strings.ToLower(string(kind))
	}
	where := "cluster-wide"
	if ns != "" {
		where = fmt.Sprintf("in namespace %q", ns)
	}
	verbs := verb
	if verb == "patch" {
		verbs = "patch (and create, for a new object)"
	}
	return fmt.Errorf("%w: weftd's credentials may not %s %s %s. weftd needs only to read objects "+
		"(deploy/weft.yaml's ClusterRole grants list and watch): manage them with kubectl (kubectl apply -f / kubectl delete -f), "+
		"or grant weftd's ServiceAccount %q on %s. The API server said: %w",
		ErrForbidden, verbs, res, where, grantVerbs(verb), res, err)
}

// grantVerbs lists what a ClusterRole rule must grant for verb.
func grantVerbs(verb string) string {
	if verb == "patch" {
		return "patch, create"
	}
	return verb
}
