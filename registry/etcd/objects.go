package etcd

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
)

// The object store lives under /weft/<cluster>/objects/<Kind>/<ns>/<name>
// (the object key below the prefix), each value the object's canonical
// encoding, without an etcd lease: objects outlive the nodes that wrote
// them. Watch lists the prefix, then follows it from the next revision;
// after a compaction it lists again and sends the difference, as the
// lease watch does.

// Objects returns a client of the object store sharing r's etcd
// connection; its watches end when r is closed.
func (r *Registry) Objects() registry.ObjectStore { return &objectStore{r: r} }

var _ registry.ObjectProvider = (*Registry)(nil)

type objectStore struct{ r *Registry }

func (s *objectStore) prefix() string            { return s.r.prefix + "objects/" }
func (s *objectStore) etcdKey(key string) string { return s.prefix() + key }

func (s *objectStore) Put(ctx context.Context, o objects.Object) (bool, error) {
	enc, err := registry.EncodeObject(o)
	if err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	if err := s.r.checkOpen(); err != nil {
		return false, fmt.Errorf("put %s: %w", o.Key(), err)
	}
	ctx, cancel := s.r.call(ctx)
	defer cancel()
	k := s.etcdKey(o.Key())
	// Write only if the value differs, so an unchanged apply costs
	// watchers nothing.
	resp, err := s.r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k), "=", string(enc.Data))).
		Else(clientv3.OpPut(k, string(enc.Data))).
		Commit()
	if err != nil {
		return false, s.r.fail("put "+o.Key(), err)
	}
	return !resp.Succeeded, nil
}

func (s *objectStore) Get(ctx context.Context, key string) (objects.Object, bool, error) {
	if err := registry.CheckObjectKey(key); err != nil {
		return objects.Object{}, false, fmt.Errorf("get: %w", err)
	}
	if err := s.r.checkOpen(); err != nil {
		return objects.Object{}, false, fmt.Errorf("get %s: %w", key, err)
	}
	ctx, cancel := s.r.call(ctx)
	defer cancel()
	resp, err := s.r.cli.Get(ctx, s.etcdKey(key))
	if err != nil {
		return objects.Object{}, false, s.r.fail("get "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return objects.Object{}, false, nil
	}
	e, err := registry.DecodeObject(key, resp.Kvs[0].Value)
	if err != nil {
		return objects.Object{}, false, fmt.Errorf("get: %w", err)
	}
	return e.Object, true, nil
}

func (s *objectStore) Delete(ctx context.Context, key string) (bool, error) {
	if err := registry.CheckObjectKey(key); err != nil {
		return false, fmt.Errorf("delete: %w", err)
	}
	if err := s.r.checkOpen(); err != nil {
		return false, fmt.Errorf("delete %s: %w", key, err)
	}
	ctx, cancel := s.r.call(ctx)
	defer cancel()
	resp, err := s.r.cli.Delete(ctx, s.etcdKey(key))
	if err != nil {
		return false, s.r.fail("delete "+key, err)
	}
	return resp.Deleted > 0, nil
}

func (s *objectStore) List(ctx context.Context) ([]objects.Object, error) {
	if err := s.r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	ctx, cancel := s.r.call(ctx)
	defer cancel()
	view, _, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	return registry.ObjectSnapshotEvent(view).Objects, nil
}

// list reads every object and the revision it read them at. Values that do
// not decode are logged and skipped.
func (s *objectStore) list(ctx context.Context) (map[string]registry.EncodedObject, int64, error) {
	resp, err := s.r.cli.Get(ctx, s.prefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.r.fail("list objects", err)
	}
	view := make(map[string]registry.EncodedObject, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if e, ok := s.decode(kv.Key, kv.Value); ok {
			view[e.Object.Key()] = e
		}
	}
	return view, resp.Header.Revision, nil
}

func (s *objectStore) decode(k, v []byte) (registry.EncodedObject, bool) {
	key := strings.TrimPrefix(string(k), s.prefix())
	e, err := registry.DecodeObject(key, v)
	if err != nil {
		s.r.log.Warn("skipping undecodable object", "key", string(k), "err", err)
		return registry.EncodedObject{}, false
	}
	return e, true
}

func (s *objectStore) Watch(ctx context.Context) (<-chan registry.ObjectEvent, error) {
	if err := s.r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch objects: %w", err)
	}
	ch := make(chan registry.ObjectEvent, 16)
	s.r.watchers.Add(1)
	go s.watch(ctx, ch)
	return ch, nil
}

// objectWatch is one object watch: the consumer's view, over the prefix
// watch of objects/.
type objectWatch struct {
	prefixWatch
	s    *objectStore
	ch   chan<- registry.ObjectEvent
	view map[string]registry.EncodedObject
}

func (s *objectStore) watch(ctx context.Context, ch chan<- registry.ObjectEvent) {
	defer s.r.watchers.Done()
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.r.ctx, cancel)()

	w := &objectWatch{prefixWatch: newPrefixWatch(s.r, ctx, s.prefix(), "object watch", "watch objects", "objects"), s: s, ch: ch}
	view, ok := w.relist()
	if !ok {
		return
	}
	w.view = view
	if !w.send(registry.ObjectSnapshotEvent(view)) {
		return
	}
	w.run(w.compacted, w.event)
}

// compacted re-lists and sends the difference from what the consumer has.
func (w *objectWatch) compacted() {
	next, ok := w.relist()
	if !ok {
		return
	}
	for _, ev := range registry.DiffObjects(w.view, next) {
		if !w.send(ev) {
			return
		}
	}
	w.view = next
}

// event forwards one change of an object key; false if the consumer is
// gone. A put that leaves the object's encoding as it was sends nothing.
func (w *objectWatch) event(ev *clientv3.Event) bool {
	key := strings.TrimPrefix(string(ev.Kv.Key), w.s.prefix())
	old, had := w.view[key]
	switch ev.Type {
	case clientv3.EventTypePut:
		e, ok := w.s.decode(ev.Kv.Key, ev.Kv.Value)
		if ok && (!had || !bytes.Equal(old.Data, e.Data)) {
			w.view[key] = e
			return w.send(registry.ObjectEvent{Type: registry.ObjectPut, Object: e.Object})
		}
	case clientv3.EventTypeDelete:
		if had {
			delete(w.view, key)
			return w.send(registry.ObjectEvent{Type: registry.ObjectDeleted, Object: old.Object})
		}
	}
	return true
}

// relist reads every object (prefixWatch.relist: retried until it works or
// the watch ends).
func (w *objectWatch) relist() (map[string]registry.EncodedObject, bool) {
	var view map[string]registry.EncodedObject
	ok := w.prefixWatch.relist(func(ctx context.Context) (rev int64, err error) {
		view, rev, err = w.s.list(ctx)
		return rev, err
	})
	return view, ok
}

func (w *objectWatch) send(ev registry.ObjectEvent) bool {
	select {
	case w.ch <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}
