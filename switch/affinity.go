package vswitch

import (
	"sync"

	"github.com/weftnet/weft/switch/maglev"
)

// affinityTable remembers, for sessionAffinity ClientIP, which backend a
// client address was sent to per frontend, as kube-proxy's "recent" match
// does: bounded (affinityWays-way buckets, the oldest entry of a full
// bucket is replaced), refreshed by every new flow of the client, and
// void once idle longer than the frontend's timeout. It is read and
// written only on a flow's first packet, so one mutex is enough.
type affinityTable struct {
	mu      sync.Mutex
	buckets [][affinityWays]affinityEntry
	mask    uint64
}

const (
	affinityWays    = 4
	affinityBuckets = 1 << 14 // 64Ki clients x frontends
)

type affinityEntry struct {
	key  uint64 // frontend id << 32 | client address; 0 = empty
	ip   uint32
	port uint16
	last int64
}

func newAffinityTable() *affinityTable {
	return &affinityTable{buckets: make([][affinityWays]affinityEntry, affinityBuckets), mask: affinityBuckets - 1}
}

func (a *affinityTable) bucket(key uint64) *[affinityWays]affinityEntry {
	return &a.buckets[maglev.Mix(key)&a.mask]
}

// lookup returns the client's backend if it was used within timeout, and
// (refresh) marks it used now.
func (a *affinityTable) lookup(front, client uint32, now, timeout int64, refresh bool) (uint32, uint16, bool) {
	key := uint64(front)<<32 | uint64(client)
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.bucket(key)
	for i := range b {
		e := &b[i]
		if e.key == key && now-e.last <= timeout {
			if refresh {
				e.last = now
			}
			return e.ip, e.port, true
		}
	}
	return 0, 0, false
}

func (a *affinityTable) store(front, client, ip uint32, port uint16, now int64) {
	key := uint64(front)<<32 | uint64(client)
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.bucket(key)
	victim := 0
	for i := range b {
		if b[i].key == key {
			victim = i
			break
		}
		if b[i].last < b[victim].last || b[i].key == 0 && b[victim].key != 0 {
			victim = i
		}
	}
	b[victim] = affinityEntry{key: key, ip: ip, port: port, last: now}
}

// forget drops every entry of the given frontend ids (affinity switched
// off or the frontend removed), so affinity that comes back starts fresh.
func (a *affinityTable) forget(ids map[uint32]bool) {
	if len(ids) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for bi := range a.buckets {
		for i := range a.buckets[bi] {
			if e := &a.buckets[bi][i]; e.key != 0 && ids[uint32(e.key>>32)] {
				*e = affinityEntry{}
			}
		}
	}
}
