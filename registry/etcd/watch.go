package etcd

import (
	"context"
	"fmt"
	"maps"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/registry"
)

// Watch implements registry.Registry. It returns at once; the Snapshot
// follows as soon as etcd answers the first list (retried with backoff
// while it does not).
func (r *Registry) Watch(ctx context.Context) (<-chan registry.Event, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	ch := make(chan registry.Event, 16)
	r.watchers.Add(1)
	go r.watch(ctx, ch)
	return ch, nil
}

// watcher is one lease watch: what its consumer has been told, over the
// prefix watch of nodes/.
type watcher struct {
	prefixWatch
	ch    chan<- registry.Event
	state map[string]registry.Lease
}

func (r *Registry) watch(ctx context.Context, ch chan<- registry.Event) {
	defer r.watchers.Done()
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()

	w := &watcher{prefixWatch: newPrefixWatch(r, ctx, r.nodesPrefix(), "watch", "watch", "peers"), ch: ch}
	live, ok := w.recentList()
	if !ok {
		live, ok = w.relist()
	}
	if !ok {
		return
	}
	w.state = live
	if !w.send(registry.SnapshotEvent(live)) {
		return
	}
	w.run(w.compacted, w.event)
}

// compacted re-lists and sends the difference from what the consumer has.
func (w *watcher) compacted() {
	if live, ok := w.relist(); ok {
		w.apply(registry.Diff(w.state, live), live)
	}
}

// event forwards one change of a node key; false if the consumer is gone.
func (w *watcher) event(ev *clientv3.Event) bool {
	name := w.r.nodeOfKey(ev.Kv.Key)
	old, had := w.state[name]
	switch ev.Type {
	case clientv3.EventTypePut:
		l, err := decodeLease(name, ev.Kv.Value)
		if err != nil {
			w.r.log.Warn("watch: skipping undecodable node key", "key", string(ev.Kv.Key), "err", err)
			return true
		}
		w.state[name] = l
		switch {
		case !had:
			return w.send(registry.Event{Type: registry.Added, Lease: l})
		case !old.SameAs(l):
			return w.send(registry.Event{Type: registry.Changed, Lease: l})
		}
	case clientv3.EventTypeDelete:
		if had {
			delete(w.state, name)
			return w.send(registry.Event{Type: registry.Removed, Lease: old})
		}
	}
	return true
}

// recentList is a read of nodes/ that List made just before (as a
// starting node lists its peers, then watches): the watch starts from it
// and from its revision, instead of reading every node key again (issue
// 16: start-up lists once). What changed since that revision comes as
// events, or as a re-list if etcd compacted it meanwhile.
type recentList struct {
	at     time.Time
	rev    int64
	leases map[string]registry.Lease
}

// listReuseFor is how old List's read may be for a Watch to start from it.
const listReuseFor = 5 * time.Second

func (w *watcher) recentList() (map[string]registry.Lease, bool) {
	w.r.mu.Lock()
	rl := w.r.recent
	w.r.mu.Unlock()
	if rl.leases == nil || time.Since(rl.at) > listReuseFor {
		return nil, false
	}
	w.rev = rl.rev
	return maps.Clone(rl.leases), true
}

// relist reads every node key (prefixWatch.relist: retried until it works
// or the watch ends).
func (w *watcher) relist() (map[string]registry.Lease, bool) {
	var live map[string]registry.Lease
	ok := w.prefixWatch.relist(func(ctx context.Context) (int64, error) {
		got, rev, err := w.r.list(ctx)
		if err != nil {
			return 0, err
		}
		live = make(map[string]registry.Lease, len(got))
		for name, l := range got {
			live[name] = l.lease
		}
		return rev, nil
	})
	return live, ok
}

// apply sends events and adopts next as the consumer's view.
func (w *watcher) apply(events []registry.Event, next map[string]registry.Lease) {
	for _, ev := range events {
		if !w.send(ev) {
			return
		}
	}
	w.state = next
}

func (w *watcher) send(ev registry.Event) bool {
	select {
	case w.ch <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}
