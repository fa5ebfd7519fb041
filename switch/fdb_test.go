package vswitch

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/weftnet/weft/packet"
)

func macN(i int) packet.MAC {
	return packet.MAC{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

func TestFDBLearning(t *testing.T) {
	const age = 300 * sec
	type step struct {
		mac  int
		port PortID
		at   int64
	}
	tests := []struct {
		name                       string
		steps                      []step
		want                       map[int]PortID // mac -> port after the steps
		learned, moved, wantWrites uint64
	}{
		{
			name:    "new MACs",
			steps:   []step{{1, 3, 0}, {2, 4, 0}},
			want:    map[int]PortID{1: 3, 2: 4},
			learned: 2,
		},
		{
			name:    "move to another port",
			steps:   []step{{1, 3, 0}, {1, 4, sec}},
			want:    map[int]PortID{1: 4},
			learned: 1, moved: 1,
		},
		{
			name:    "same port again is not a change",
			steps:   []step{{1, 3, 0}, {1, 3, sec}, {1, 3, 2 * sec}},
			want:    map[int]PortID{1: 3},
			learned: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFDB(16, age, 7)
			for _, st := range tc.steps {
				f.learn(macKey(macN(st.mac)), st.port, st.at)
			}
			for m, want := range tc.want {
				got, ok := f.lookup(macKey(macN(m)))
				if !ok || got != want {
					t.Errorf("lookup mac %d = %d,%v want %d", m, got, ok, want)
				}
			}
			if f.learned.Load() != tc.learned || f.moved.Load() != tc.moved {
				t.Errorf("learned %d moved %d, want %d %d", f.learned.Load(), f.moved.Load(), tc.learned, tc.moved)
			}
		})
	}
}

// TestFDBRefreshOnlyWhenStale: a known MAC on its port writes its last-seen
// only after a tenth of the max age.
func TestFDBRefreshOnlyWhenStale(t *testing.T) {
	const age = 100 * sec
	f := newFDB(16, age, 1)
	k := macKey(macN(1))
	f.learn(k, 3, 0)
	tests := []struct {
		at        int64
		wantWrite bool
	}{
		{1 * sec, false},
		{9 * sec, false},
		{10 * sec, true},
		{15 * sec, false},
		{20 * sec, true},
	}
	for _, tc := range tests {
		if got := f.needsLearn(k, 3, tc.at); got != tc.wantWrite {
			t.Errorf("at %ds: needsLearn %v want %v", tc.at/sec, got, tc.wantWrite)
		}
		f.learn(k, 3, tc.at)
	}
	if got := f.list()[0].LastSeen; got != 20*sec {
		t.Errorf("last seen %d want %d", got, 20*sec)
	}
}

func TestFDBAging(t *testing.T) {
	const age = 100 * sec
	f := newFDB(64, age, 2)
	for i := range 10 {
		f.learn(macKey(macN(i)), 3, int64(i)*sec)
	}
	// Refresh MAC 0 late so it outlives the others.
	f.learn(macKey(macN(0)), 3, 50*sec)
	tests := []struct {
		now       int64
		wantAlive []int
	}{
		{100 * sec, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{104*sec + 1, []int{0, 5, 6, 7, 8, 9}},
		{150 * sec, []int{0}},
		{150*sec + 1, nil},
	}
	expired := 0
	for _, tc := range tests {
		expired += f.expire(tc.now)
		alive := map[int]bool{}
		for _, i := range tc.wantAlive {
			alive[i] = true
		}
		for i := range 10 {
			if _, ok := f.lookup(macKey(macN(i))); ok != alive[i] {
				t.Errorf("now %d: mac %d present=%v want %v", tc.now, i, ok, alive[i])
			}
		}
		if f.count != len(tc.wantAlive) {
			t.Errorf("now %d: count %d want %d", tc.now, f.count, len(tc.wantAlive))
		}
	}
	if expired != 10 || f.expired.Load() != 10 {
		t.Errorf("expired %d (counter %d), want 10", expired, f.expired.Load())
	}
}

func TestFDBEvictsOldest(t *testing.T) {
	const size = 8
	f := newFDB(size, 300*sec, 3)
	for i := range size {
		f.learn(macKey(macN(i)), 3, int64(i))
	}
	// Touch MAC 0 on another port: a move rewrites it, so it is newest now.
	f.learn(macKey(macN(0)), 4, 100)
	f.learn(macKey(macN(100)), 3, 101) // evicts MAC 1, the oldest
	f.learn(macKey(macN(101)), 3, 102) // evicts MAC 2
	if f.evicted.Load() != 2 || f.count != size {
		t.Fatalf("evicted %d count %d, want 2 and %d", f.evicted.Load(), f.count, size)
	}
	for i, want := range map[int]bool{0: true, 1: false, 2: false, 3: true, 100: true, 101: true} {
		if _, ok := f.lookup(macKey(macN(i))); ok != want {
			t.Errorf("mac %d present=%v want %v", i, ok, want)
		}
	}
}

// TestFDBAgainstMap drives random learns, moves, removals, flushes and
// expiries against a plain-map model of the same rules (write only on a
// change or a stale last-seen; evict the least recently written; expire by
// last write) and compares every entry.
func TestFDBAgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const size = 200
	f := newFDB(size, 1000, 9)
	type ent struct {
		port PortID
		seen int64
		seq  int // write order
	}
	model := map[uint64]ent{}
	seq := 0
	oldest := func() uint64 {
		var ok bool
		var kk uint64
		var best ent
		for k, e := range model {
			if !ok || e.seq < best.seq {
				kk, best, ok = k, e, true
			}
		}
		return kk
	}
	now := int64(0)
	for step := range 30000 {
		now += int64(r.IntN(3))
		k := macKey(macN(r.IntN(600)))
		switch op := r.IntN(100); {
		case op < 80:
			port := PortID(r.IntN(4))
			e, ok := model[k]
			switch {
			case !ok:
				if len(model) >= size {
					delete(model, oldest())
				}
				seq++
				model[k] = ent{port, now, seq}
			case e.port != port || now-e.seen >= f.refresh:
				seq++
				model[k] = ent{port, now, seq}
			}
			f.learn(k, port, now)
		case op < 90:
			delete(model, k)
			f.remove(k)
		case op < 92:
			p := PortID(r.IntN(4))
			for kk, e := range model {
				if e.port == p {
					delete(model, kk)
				}
			}
			f.flushPort(p)
		default:
			for kk, e := range model {
				if now-e.seen > f.maxAge {
					delete(model, kk)
				}
			}
			f.expire(now)
		}
		if step%97 == 0 {
			checkFDBInvariants(t, f)
		}
		if step%7 != 0 {
			continue
		}
		got := map[uint64]FDBEntry{}
		for _, e := range f.list() {
			got[macKey(e.MAC)] = e
		}
		if len(got) != len(model) {
			t.Fatalf("step %d: %d entries, model %d", step, len(got), len(model))
		}
		for kk, e := range model {
			if g, ok := got[kk]; !ok || g.Port != e.port || g.LastSeen != e.seen {
				t.Fatalf("step %d: mac %s = %+v, model %+v", step, keyMAC(kk), g, e)
			}
		}
	}
	checkFDBInvariants(t, f)
}

// checkFDBInvariants: every slot is reachable from its home, the LRU list
// holds exactly the occupied slots, in non-decreasing last-seen order.
func checkFDBInvariants(t *testing.T, f *fdb) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	occupied := 0
	for i := range f.slots {
		kv := f.slots[i].kv.Load()
		if kv == 0 {
			continue
		}
		occupied++
		if j := f.find(kv >> 16); j != i {
			t.Fatalf("slot %d: key found at %d", i, j)
		}
	}
	if occupied != f.count || f.entries.Load() != int64(f.count) {
		t.Fatalf("occupied %d, count %d, gauge %d", occupied, f.count, f.entries.Load())
	}
	n := 0
	prev := int32(-1)
	var last int64 = -1 << 62
	for i := f.head; i >= 0; i = f.links[i].next {
		if f.links[i].prev != prev {
			t.Fatalf("list: slot %d prev %d want %d", i, f.links[i].prev, prev)
		}
		if f.slots[i].kv.Load() == 0 {
			t.Fatalf("list: slot %d is empty", i)
		}
		if s := f.slots[i].seen.Load(); s < last {
			t.Fatalf("list: not in write order at slot %d", i)
		} else {
			last = s
		}
		prev = i
		n++
		if n > f.count {
			t.Fatal("list: cycle")
		}
	}
	if n != f.count || f.tail != prev {
		t.Fatalf("list length %d tail %d, want %d %d", n, f.tail, f.count, prev)
	}
}

// TestFDBConcurrent runs lock-free readers against writers; run with -race.
// Readers must never see a MAC paired with a port it was never on.
func TestFDBConcurrent(t *testing.T) {
	f := newFDB(256, 1000, 4)
	// MAC i only ever lives on port i%4 or i%4+4.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 0; n < 200000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := r.IntN(1000)
				if p, ok := f.lookup(macKey(macN(i))); ok && p != PortID(i%4) && p != PortID(i%4+4) {
					t.Errorf("mac %d on port %d", i, p)
					return
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(9, 9))
	for n := range 20000 {
		i := r.IntN(1000)
		f.learn(macKey(macN(i)), PortID(i%4+4*r.IntN(2)), int64(n))
		if n%1000 == 0 {
			f.expire(int64(n))
		}
		if n%333 == 0 {
			f.remove(macKey(macN(r.IntN(1000))))
		}
	}
	close(stop)
	wg.Wait()
	checkFDBInvariants(t, f)
}
