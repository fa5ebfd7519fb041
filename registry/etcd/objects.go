package etcd

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/internal/backend"
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

// objectWatch is one watch's state: the consumer's view and its revision.
type objectWatch struct {
	s       *objectStore
	ctx     context.Context
	ch      chan<- registry.ObjectEvent
	view    map[string]registry.EncodedObject
	rev     int64
	bo      backend.Backoff
	failing bool
}

func (s *objectStore) watch(ctx context.Context, ch chan<- registry.ObjectEvent) {
	defer s.r.watchers.Done()
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.r.ctx, cancel)()

	w := &objectWatch{s: s, ctx: ctx, ch: ch, bo: backend.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}}
	view, ok := w.relist()
	if !ok {
		return
	}
	w.view = view
	if !w.send(registry.ObjectSnapshotEvent(view)) {
		return
	}
	for ctx.Err() == nil {
		w.follow()
		if ctx.Err() == nil && !w.pause() {
			return
		}
	}
}

// follow forwards changes from rev+1 until the watch breaks; after a
// compaction it re-lists and sends the difference.
func (w *objectWatch) follow() {
	s := w.s
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	wch := s.r.cli.Watch(wctx, s.prefix(), clientv3.WithPrefix(), clientv3.WithRev(w.rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			if next, ok := w.relist(); ok {
				for _, ev := range registry.DiffObjects(w.view, next) {
					if !w.send(ev) {
						return
					}
				}
				w.view = next
			}
			return
		}
		if err := resp.Err(); err != nil {
			w.broken(err)
			return
		}
		w.recovered()
		for _, ev := range resp.Events {
			key := strings.TrimPrefix(string(ev.Kv.Key), s.prefix())
			old, had := w.view[key]
			switch ev.Type {
			case clientv3.EventTypePut:
				e, ok := s.decode(ev.Kv.Key, ev.Kv.Value)
				if ok && (!had || !bytes.Equal(old.Data, e.Data)) {
					w.view[key] = e
					if !w.send(registry.ObjectEvent{Type: registry.ObjectPut, Object: e.Object}) {
						return
					}
				}
			case clientv3.EventTypeDelete:
				if had {
					delete(w.view, key)
					if !w.send(registry.ObjectEvent{Type: registry.ObjectDeleted, Object: old.Object}) {
						return
					}
				}
			}
			w.rev = max(w.rev, ev.Kv.ModRevision)
		}
		if resp.IsProgressNotify() {
			w.rev = max(w.rev, resp.Header.Revision)
		}
	}
	if w.ctx.Err() == nil {
		w.broken(fmt.Errorf("watch channel closed"))
	}
}

// relist reads every object, retrying with backoff until it works or the
// watch ends; it moves rev to the revision read.
func (w *objectWatch) relist() (map[string]registry.EncodedObject, bool) {
	for {
		ctx, cancel := w.s.r.call(w.ctx)
		view, rev, err := w.s.list(ctx)
		cancel()
		if err == nil {
			w.recovered()
			w.rev = rev
			return view, true
		}
		if w.ctx.Err() != nil {
			return nil, false
		}
		w.broken(err)
		if !w.pause() {
			return nil, false
		}
	}
}

func (w *objectWatch) send(ev registry.ObjectEvent) bool {
	select {
	case w.ch <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *objectWatch) pause() bool { return w.bo.Wait(w.ctx) }

func (w *objectWatch) broken(err error) {
	if w.ctx.Err() == nil && !w.failing {
		w.s.r.log.Warn("object watch: etcd not answering; objects stay as last seen, retrying", "err", w.s.r.fail("watch objects", err))
		w.failing = true
	}
}

func (w *objectWatch) recovered() {
	w.bo.Reset()
	if w.failing {
		w.s.r.log.Info("object watch: etcd answering again; catching up", "fromRevision", w.rev+1)
		w.failing = false
	}
}
