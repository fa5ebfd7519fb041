package registry

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/weftnet/weft/objects"
)

// This file is the cluster's object store: the Kubernetes objects weft
// consumes (objects.Kinds: Services, EndpointSlices, NetworkPolicies,
// Namespaces, Pods), kept beside the node leases so every node sees the
// same set. `weft apply` writes them through weftd; nodes publish their
// attached pods as Pod objects; the service and policy stages compile what
// they need from a watch. Objects are stored in their canonical encoding
// (objects.Encode) under objects.Object.Key ("Kind/namespace/name").
//
// It is a second interface beside Registry rather than more methods on it:
// a backend offers it through ObjectProvider, and a later Kubernetes
// backend (informers over the API server) implements the same watch.

// MaxObjectBytes bounds one stored object's encoding: well under etcd's
// default 1.5 MiB request limit, and far above any Service or policy.
const MaxObjectBytes = 1 << 20

// ObjectStore is one client of the cluster's object store. All methods are
// safe for concurrent use. It lives as long as the Registry that gave it:
// closing that ends its watches.
type ObjectStore interface {
	// Put stores o under o.Key(), replacing what was there. changed is
	// false when the stored encoding was already the same (watchers then
	// see nothing).
	Put(ctx context.Context, o objects.Object) (changed bool, err error)
	// Get returns the object stored under key; ok is false if there is
	// none.
	Get(ctx context.Context, key string) (o objects.Object, ok bool, err error)
	// Delete removes the object under key; existed is false if there was
	// none (not an error).
	Delete(ctx context.Context, key string) (existed bool, err error)
	// List returns every stored object, sorted by key.
	List(ctx context.Context) ([]objects.Object, error)
	// Watch sends one ObjectSnapshot, then ObjectPut and ObjectDeleted
	// events in the order the backend saw them, until ctx ends or the
	// registry is closed; then it closes the channel. While the store does
	// not answer, the watch retries and the consumer keeps its last view.
	Watch(ctx context.Context) (<-chan ObjectEvent, error)
}

// ObjectProvider is a Registry whose backend also stores objects.
type ObjectProvider interface {
	Objects() ObjectStore
}

// ObjectEventType says what happened to an object.
type ObjectEventType uint8

const (
	// ObjectSnapshot is the first event of every watch: Objects holds every
	// stored object (possibly none), sorted by key.
	ObjectSnapshot ObjectEventType = iota + 1
	// ObjectPut: an object was created or changed; Object is its new state.
	ObjectPut
	// ObjectDeleted: an object was removed; Object is its last known state.
	ObjectDeleted
)

func (t ObjectEventType) String() string {
	switch t {
	case ObjectSnapshot:
		return "snapshot"
	case ObjectPut:
		return "put"
	case ObjectDeleted:
		return "deleted"
	}
	return fmt.Sprintf("ObjectEventType(%d)", uint8(t))
}

// ObjectEvent is one message of an object watch.
type ObjectEvent struct {
	Type    ObjectEventType
	Object  objects.Object   // ObjectPut, ObjectDeleted
	Objects []objects.Object // ObjectSnapshot only
}

// EncodedObject is an object with its canonical encoding, which backends
// store and compare.
type EncodedObject struct {
	Object objects.Object
	Data   []byte
}

// EncodeObject checks o's key (see CheckObjectKey) and encodes it for
// storage.
func EncodeObject(o objects.Object) (EncodedObject, error) {
	if err := CheckObjectKey(o.Key()); err != nil {
		return EncodedObject{}, err
	}
	b, err := objects.Encode(o)
	if err != nil {
		return EncodedObject{}, fmt.Errorf("%s: encode: %w", o, err)
	}
	if len(b) > MaxObjectBytes {
		return EncodedObject{}, fmt.Errorf("%s: %d bytes encoded, more than the %d the registry stores", o, len(b), MaxObjectBytes)
	}
	return EncodedObject{Object: o, Data: b}, nil
}

// DecodeObject reads a stored encoding back and checks that it belongs
// under key, so a record written under the wrong name is not believed.
func DecodeObject(key string, data []byte) (EncodedObject, error) {
	o, err := objects.DecodeOne(data)
	if err != nil {
		return EncodedObject{}, fmt.Errorf("stored object %s: %w", key, err)
	}
	if o.Key() != key {
		return EncodedObject{}, fmt.Errorf("stored object %s: holds %s", key, o.Key())
	}
	return EncodedObject{Object: o, Data: data}, nil
}

// CheckObjectKey accepts "Kind/namespace/name" keys of the kinds weft
// consumes with Kubernetes names (lowercase DNS-1123: letters, digits, '-'
// and '.', at most 253 bytes), the namespace empty exactly for a
// Namespace. Backends rely on it: a key is also a safe file name and etcd
// key segment.
func CheckObjectKey(key string) error {
	kind, rest, ok1 := strings.Cut(key, "/")
	ns, name, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 {
		return fmt.Errorf("object key %q: want Kind/namespace/name", key)
	}
	if !slices.Contains(objects.Kinds, objects.Kind(kind)) {
		return fmt.Errorf("object key %q: kind %q is not one weft stores", key, kind)
	}
	if err := checkDNSName(name); err != nil {
		return fmt.Errorf("%s name: %w", kind, err)
	}
	if objects.Kind(kind) == objects.KindNamespace {
		if ns != "" {
			return fmt.Errorf("object key %q: a Namespace has no namespace", key)
		}
		return nil
	}
	if err := checkDNSName(ns); err != nil {
		return fmt.Errorf("%s %s: namespace: %w", kind, name, err)
	}
	return nil
}

func checkDNSName(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > 253 {
		return fmt.Errorf("%.20q...: longer than 253 bytes", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%q: byte %d (%q) is not a lowercase letter, digit, '-' or '.'", s, i, c)
		}
	}
	if s[0] == '-' || s[0] == '.' || s[len(s)-1] == '-' || s[len(s)-1] == '.' {
		return fmt.Errorf("%q: must start and end with a letter or digit", s)
	}
	return nil
}

// DiffObjects returns the events that turn the view prev into next (both
// keyed by object key): deletions, then puts of new or changed objects,
// each sorted by key. Backends that poll or re-list use it.
func DiffObjects(prev, next map[string]EncodedObject) []ObjectEvent {
	var deleted, put []ObjectEvent
	for k, old := range prev {
		if _, ok := next[k]; !ok {
			deleted = append(deleted, ObjectEvent{Type: ObjectDeleted, Object: old.Object})
		}
	}
	for k, cur := range next {
		if old, ok := prev[k]; !ok || !bytes.Equal(old.Data, cur.Data) {
			put = append(put, ObjectEvent{Type: ObjectPut, Object: cur.Object})
		}
	}
	byKey := func(a, b ObjectEvent) int { return cmp.Compare(a.Object.Key(), b.Object.Key()) }
	slices.SortFunc(deleted, byKey)
	slices.SortFunc(put, byKey)
	return slices.Concat(deleted, put)
}

// ObjectSnapshotEvent builds the first event of an object watch.
func ObjectSnapshotEvent(view map[string]EncodedObject) ObjectEvent {
	objs := make([]objects.Object, 0, len(view))
	for _, e := range view {
		objs = append(objs, e.Object)
	}
	SortObjects(objs)
	return ObjectEvent{Type: ObjectSnapshot, Objects: objs}
}

// SortObjects sorts objects by key, the order List and ObjectSnapshot use.
func SortObjects(objs []objects.Object) {
	slices.SortFunc(objs, func(a, b objects.Object) int { return cmp.Compare(a.Key(), b.Key()) })
}

// ObjectView is a consumer's copy of the store, kept up to date from a
// watch: Apply one event at a time.
type ObjectView map[string]objects.Object

// Apply updates v with ev.
func (v ObjectView) Apply(ev ObjectEvent) {
	switch ev.Type {
	case ObjectSnapshot:
		clear(v)
		for _, o := range ev.Objects {
			v[o.Key()] = o
		}
	case ObjectPut:
		v[ev.Object.Key()] = ev.Object
	case ObjectDeleted:
		delete(v, ev.Object.Key())
	}
}

// Sorted returns the view's objects sorted by key.
func (v ObjectView) Sorted() []objects.Object {
	out := make([]objects.Object, 0, len(v))
	for _, o := range v {
		out = append(out, o)
	}
	SortObjects(out)
	return out
}
