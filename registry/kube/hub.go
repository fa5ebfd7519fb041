package kube

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"
)

// hub is the current view an informer's handlers keep (leases or objects,
// by key), and the watches that follow it. The handlers never block on a
// watch: they mark the key dirty in every subscriber and wake it, and each
// subscriber's own goroutine turns its dirty keys into events when its
// consumer is ready. So a slow consumer sees coalesced changes (a node
// updated ten times while it was busy is one Changed), the informer goes on
// at its own pace, and memory stays bounded by the number of keys.
type hub[V any] struct {
	same func(a, b V) bool // equal as far as watchers care

	mu   sync.Mutex
	view map[string]V
	subs map[*subscriber]struct{}
	// changed is closed and replaced at every set or del: writers waiting
	// to read their own write in the cache (waitFor) watch it.
	changed chan struct{}
}

type subscriber struct {
	dirty map[string]struct{}
	wake  chan struct{} // capacity 1
}

func newHub[V any](same func(a, b V) bool) *hub[V] {
	return &hub[V]{same: same, view: map[string]V{}, subs: map[*subscriber]struct{}{}, changed: make(chan struct{})}
}

// set records v under key. A value that watchers would not tell from the
// one they have (same) is stored, for its newer resourceVersion, but sends
// nothing.
func (h *hub[V]) set(key string, v V) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, had := h.view[key]
	h.view[key] = v
	if !had || !h.same(old, v) {
		h.markLocked(key)
	}
	h.notifyLocked()
}

func (h *hub[V]) del(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.view[key]; !ok {
		return
	}
	delete(h.view, key)
	h.markLocked(key)
	h.notifyLocked()
}

func (h *hub[V]) get(key string) (V, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.view[key]
	return v, ok
}

// values returns a copy of the view's values.
func (h *hub[V]) values() []V {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]V, 0, len(h.view))
	for _, v := range h.view {
		out = append(out, v)
	}
	return out
}

func (h *hub[V]) markLocked(key string) {
	for s := range h.subs {
		s.dirty[key] = struct{}{}
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (h *hub[V]) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitFor waits until cond (called with the hub locked) holds, ctx ends
// or max passes; it reports whether cond held.
func (h *hub[V]) waitFor(ctx context.Context, max time.Duration, cond func(view map[string]V) bool) bool {
	t := time.NewTimer(max)
	defer t.Stop()
	for {
		h.mu.Lock()
		ok := cond(h.view)
		ch := h.changed
		h.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// subscribe registers a watcher and returns a copy of the view as of that
// moment: every later change marks the watcher dirty.
func (h *hub[V]) subscribe() (*subscriber, map[string]V) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &subscriber{dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	h.subs[s] = struct{}{}
	snap := make(map[string]V, len(h.view))
	for k, v := range h.view {
		snap[k] = v
	}
	return s, snap
}

func (h *hub[V]) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// take returns, for s's dirty keys, what the consumer was told (from told)
// and what the view holds now, and clears them.
func (h *hub[V]) take(s *subscriber, told map[string]V) (prev, next map[string]V) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, next = make(map[string]V, len(s.dirty)), make(map[string]V, len(s.dirty))
	for k := range s.dirty {
		if v, ok := told[k]; ok {
			prev[k] = v
		}
		if v, ok := h.view[k]; ok {
			next[k] = v
		}
	}
	clear(s.dirty)
	return prev, next
}

// follow runs one watch over h: it waits for the informers to sync, sends
// one snapshot of the whole view, then the events diff makes of each batch
// of dirty keys, until ctx ends. It closes ch when it returns.
func follow[V, E any](ctx context.Context, h *hub[V], synced []cache.InformerSynced,
	snapshot func(map[string]V) E, diff func(prev, next map[string]V) []E, ch chan<- E) {
	defer close(ch)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	s, told := h.subscribe()
	defer h.unsubscribe(s)
	send := func(ev E) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !send(snapshot(told)) {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		prev, next := h.take(s, told)
		for _, ev := range diff(prev, next) {
			if !send(ev) {
				return
			}
		}
		for k := range prev {
			delete(told, k)
		}
		for k, v := range next {
			told[k] = v
		}
	}
}
