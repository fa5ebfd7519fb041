package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/internal/backend"
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

// watcher is the state of one watch: what its consumer has been told, and
// the revision that view is at.
type watcher struct {
	r     *Registry
	ctx   context.Context
	ch    chan<- registry.Event
	state map[string]registry.Lease
	rev   int64
	bo    backend.Backoff
	// failing is set while etcd does not answer, so the outage is logged
	// once and the recovery once.
	failing bool
}

func (r *Registry) watch(ctx context.Context, ch chan<- registry.Event) {
	defer r.watchers.Done()
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()

	w := &watcher{r: r, ctx: ctx, ch: ch, bo: backend.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}}
	live, ok := w.relist()
	if !ok {
		return
	}
	w.state = live
	if !w.send(registry.SnapshotEvent(live)) {
		return
	}
	for !w.ended() {
		w.follow()
		if !w.ended() {
			w.pause()
		}
	}
}

// follow watches nodes/ from rev+1 and forwards what happens, until the
// watch breaks. The client resumes a watch over a lost connection by itself
// (from the last revision it delivered); follow returns when that is not
// possible: the revision was compacted (then it re-lists and sends the
// difference), or the member lost its leader.
func (w *watcher) follow() {
	r := w.r
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	wch := r.cli.Watch(wctx, r.nodesPrefix(), clientv3.WithPrefix(),
		clientv3.WithRev(w.rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			r.log.Info("watch: revision compacted while away; re-listing", "wanted", w.rev+1, "compacted", resp.CompactRevision)
			if live, ok := w.relist(); ok {
				w.apply(registry.Diff(w.state, live), live)
			}
			return
		}
		if err := resp.Err(); err != nil {
			if !w.ended() {
				w.broken(err)
			}
			return
		}
		w.recovered()
		for _, ev := range resp.Events {
			name := r.nodeOfKey(ev.Kv.Key)
			old, had := w.state[name]
			switch ev.Type {
			case clientv3.EventTypePut:
				l, err := decodeLease(name, ev.Kv.Value)
				if err != nil {
					r.log.Warn("watch: skipping undecodable node key", "key", string(ev.Kv.Key), "err", err)
					continue
				}
				w.state[name] = l
				switch {
				case !had:
					if !w.send(registry.Event{Type: registry.Added, Lease: l}) {
						return
					}
				case !old.SameAs(l):
					if !w.send(registry.Event{Type: registry.Changed, Lease: l}) {
						return
					}
				}
			case clientv3.EventTypeDelete:
				if had {
					delete(w.state, name)
					if !w.send(registry.Event{Type: registry.Removed, Lease: old}) {
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
	if !w.ended() {
		w.broken(fmt.Errorf("watch channel closed"))
	}
}

// ended reports whether the watch is over: its context ended or the client
// was closed (which cancels ctx too, but from another goroutine, so a
// closing client can be seen first).
func (w *watcher) ended() bool { return w.ctx.Err() != nil || w.r.ctx.Err() != nil }

// relist reads every node key, retrying with backoff until it works or the
// watch ends; it moves rev to the revision read.
func (w *watcher) relist() (map[string]registry.Lease, bool) {
	for {
		ctx, cancel := w.r.call(w.ctx)
		got, rev, err := w.r.list(ctx)
		cancel()
		if err == nil {
			w.recovered()
			w.rev = rev
			live := make(map[string]registry.Lease, len(got))
			for name, l := range got {
				live[name] = l.lease
			}
			return live, true
		}
		if w.ended() {
			return nil, false
		}
		w.broken(err)
		if !w.pause() {
			return nil, false
		}
	}
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

// pause waits out the backoff; false if the watch ended meanwhile.
func (w *watcher) pause() bool {
	t := time.NewTimer(w.bo.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *watcher) broken(err error) {
	if !w.failing {
		w.r.log.Warn("watch: etcd not answering; peers stay as last seen, retrying", "err", w.r.fail("watch", err))
		w.failing = true
	}
}

func (w *watcher) recovered() {
	w.bo.Reset()
	if w.failing {
		w.r.log.Info("watch: etcd answering again; catching up", "fromRevision", w.rev+1)
		w.failing = false
	}
}
