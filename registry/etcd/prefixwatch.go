package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/registry/internal/backend"
)

// prefixWatch is what the lease watch and the object watch share: one
// etcd watch of a key prefix, resumed from the revision its consumer's
// view is at, re-listed after a compaction, retried with backoff while
// etcd does not answer, and the outage and the recovery logged once each.
// The owner keeps the view and turns etcd's events into its own.
type prefixWatch struct {
	r      *Registry
	ctx    context.Context
	prefix string
	// name ("watch", "object watch"), op (for the error) and kept (what
	// stays as last seen while etcd is away) word its log lines.
	name, op, kept string

	rev     int64 // the revision the consumer's view is at
	bo      backend.Backoff
	failing bool // etcd is not answering: logged once, recovery once
}

func newPrefixWatch(r *Registry, ctx context.Context, prefix, name, op, kept string) prefixWatch {
	return prefixWatch{r: r, ctx: ctx, prefix: prefix, name: name, op: op, kept: kept,
		bo: backend.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}}
}

// run follows the prefix until the watch ends, pausing with backoff
// between broken watches.
func (w *prefixWatch) run(compacted func(), event func(*clientv3.Event) bool) {
	for !w.ended() {
		w.follow(compacted, event)
		if !w.ended() && !w.pause() {
			return
		}
	}
}

// follow watches the prefix from rev+1 and hands each event to event
// (false: the consumer is gone), until the watch breaks. The client
// resumes a watch over a lost connection by itself (from the last revision
// it delivered); follow returns when that is not possible: the revision
// was compacted (then compacted re-lists and sends the difference), or
// the member lost its leader.
func (w *prefixWatch) follow(compacted func(), event func(*clientv3.Event) bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	wch := w.r.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			w.r.log.Info(w.name+": revision compacted while away; re-listing", "wanted", w.rev+1, "compacted", resp.CompactRevision)
			compacted()
			return
		}
		if err := resp.Err(); err != nil {
			w.broken(err)
			return
		}
		w.recovered()
		for _, ev := range resp.Events {
			if !event(ev) {
				return
			}
			w.rev = max(w.rev, ev.Kv.ModRevision)
		}
		if resp.IsProgressNotify() {
			w.rev = max(w.rev, resp.Header.Revision)
		}
	}
	w.broken(fmt.Errorf("watch channel closed"))
}

// relist calls list until it works or the watch ends; rev moves to the
// revision list read.
func (w *prefixWatch) relist(list func(context.Context) (rev int64, err error)) bool {
	for {
		ctx, cancel := w.r.call(w.ctx)
		rev, err := list(ctx)
		cancel()
		if err == nil {
			w.recovered()
			w.rev = rev
			return true
		}
		if w.ended() {
			return false
		}
		w.broken(err)
		if !w.pause() {
			return false
		}
	}
}

// ended reports whether the watch is over: its context ended or the client
// was closed (which cancels ctx too, but from another goroutine, so a
// closing client can be seen first).
func (w *prefixWatch) ended() bool { return w.ctx.Err() != nil || w.r.ctx.Err() != nil }

// pause waits out the backoff; false if the watch ended meanwhile.
func (w *prefixWatch) pause() bool { return w.bo.Wait(w.ctx) }

func (w *prefixWatch) broken(err error) {
	if !w.ended() && !w.failing {
		w.r.log.Warn(w.name+": etcd not answering; "+w.kept+" stay as last seen, retrying", "err", w.r.fail(w.op, err))
		w.failing = true
	}
}

func (w *prefixWatch) recovered() {
	w.bo.Reset()
	if w.failing {
		w.r.log.Info(w.name+": etcd answering again; catching up", "fromRevision", w.rev+1)
		w.failing = false
	}
}
