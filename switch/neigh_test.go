package vswitch

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// TestLearnedNeighAgainstMap drives learns, removals and expiries and
// compares every entry with a map model of the same rules.
func TestLearnedNeighAgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const size = 32
	tb := newLearnedNeigh(size, 100, 5)
	type ent struct {
		v    neighVal
		seen int64
	}
	model := map[uint32]ent{}
	now := int64(0)
	for step := range 20000 {
		now += int64(r.IntN(3))
		k := uint32(0x0af40100 + 2 + r.IntN(100))
		switch op := r.IntN(100); {
		case op < 75:
			v := neighVal{mac: macN(r.IntN(3)), port: PortID(r.IntN(3))}
			if _, ok := model[k]; !ok && len(model) >= size {
				var oldK uint32
				first := true
				for kk, e := range model {
					if first || e.seen < model[oldK].seen || e.seen == model[oldK].seen && kk < oldK {
						oldK, first = kk, false
					}
				}
				// The table evicts the first oldest it finds in slot
				// order; with ties the model cannot know which, so keep
				// seen values distinct by skipping tied steps.
				ties := 0
				for _, e := range model {
					if e.seen == model[oldK].seen {
						ties++
					}
				}
				if ties > 1 {
					continue
				}
				delete(model, oldK)
			}
			model[k] = ent{v, now}
			tb.learn(k, v, now)
		case op < 85:
			delete(model, k)
			tb.remove(k)
		default:
			for kk, e := range model {
				if now-e.seen > tb.maxAge {
					delete(model, kk)
				}
			}
			tb.expire(now)
		}
		if tb.count != len(model) {
			t.Fatalf("step %d: count %d model %d", step, tb.count, len(model))
		}
		for kk, e := range model {
			v, seen, ok := tb.lookup(kk)
			if !ok || v != e.v || seen != e.seen {
				t.Fatalf("step %d: %s = %+v,%d,%v model %+v", step, keyIP4(kk), v, seen, ok, e)
			}
		}
	}
}

// TestLearnedNeighConcurrent: lock-free readers never see a key paired
// with a value it was never given (run with -race).
func TestLearnedNeighConcurrent(t *testing.T) {
	tb := newLearnedNeigh(64, 1000, 3)
	// Address k is only ever given MAC macN(k) or macN(k+1000) and port k%7.
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for range 300000 {
				select {
				case <-done:
					return
				default:
				}
				k := uint32(1 + r.IntN(200))
				if v, _, ok := tb.lookup(k); ok {
					if v.port != PortID(k%7) || (v.mac != macN(int(k)) && v.mac != macN(int(k)+1000)) {
						t.Errorf("key %d -> %+v", k, v)
						return
					}
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(4, 4))
	for n := range 30000 {
		k := uint32(1 + r.IntN(200))
		tb.learn(k, neighVal{mac: macN(int(k) + 1000*r.IntN(2)), port: PortID(k % 7)}, int64(n))
		if n%100 == 0 {
			tb.expire(int64(n))
		}
	}
	close(done)
	wg.Wait()
}
