package policy

import (
	"sync"
	"sync/atomic"
)

// Engine publishes Snapshots to the data path: readers Load the current
// one without locks; Update compiles a new one off the hot path and swaps
// it in whole, with the next generation number.
type Engine struct {
	cur   atomic.Pointer[Snapshot]
	mu    sync.Mutex // serialises Update
	gen   uint64
	drops map[string]*dropSlot // per policy "namespace/name"; see drops.go
}

// NewEngine returns an Engine whose snapshot is not ready: it denies every
// flow (WhyNotReady) until the first Update, so a starting weftd never
// forwards what its policies would deny. The node calls Update with what
// the registry holds before it brings any pod port up.
func NewEngine() *Engine {
	e := &Engine{}
	e.cur.Store(&Snapshot{podByIP: map[uint32]int32{}, active: true})
	return e
}

// Load returns the current snapshot. Keep it for a batch, not longer.
func (e *Engine) Load() *Snapshot { return e.cur.Load() }

// Update compiles in as the next generation and publishes it. Flows
// decided under an older generation are re-checked by conntrack (Recheck)
// on their next packet.
func (e *Engine) Update(in Input) *Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gen++
	s := Compile(in, e.gen)
	e.attachDrops(s)
	e.cur.Store(s)
	return s
}
