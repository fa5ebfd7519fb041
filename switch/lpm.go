package vswitch

import "slices"

// lpm is an IPv4 longest-prefix-match table compiled into a 16-8-8
// multibit trie with leaf pushing (controlled prefix expansion): a
// 65,536-entry root indexed by the top 16 address bits, then 256-entry
// chunks for bits 16-23 and 24-31 where longer prefixes exist. A lookup is
// at most three dependent loads and no branches on prefix length, so its
// cost does not depend on how many prefix lengths are in use (a
// per-length hash probe would do up to 33 probes). The price is memory:
// 256 KiB of root plus 1 KiB per /16 (and per /24) that holds a longer
// prefix (1.3 MiB of chunks for the 5,000 mixed prefixes of the
// benchmark), and a rebuild per change: 0.4-0.8 ms of CPU at 5,000 node
// /24s, 5-8 ms at 50,000 (BenchmarkSetRoutes, loaded 2-core machine). The
// node applies registry changes in coalesced batches, one rebuild per
// batch (issue 16), so that stays well inside a registry poll interval
// even at 50,000 nodes; readers keep the snapshot they loaded.
//
// An entry is 0 (no route), a value v+1 (a leaf), or lpmPtr|chunk.
type lpm struct {
	root   *[1 << 16]uint32
	chunks []uint32
}

const lpmPtr = 1 << 31

// lpmPrefix is one prefix to compile, address as a big-endian uint32.
type lpmPrefix struct {
	addr uint32
	bits uint8
	val  uint32 // < lpmPtr-1
}

// buildLPM compiles prefixes, which must be masked, distinct and sorted by
// ascending length. Ascending order is what makes leaf pushing simple:
// a prefix only ever overwrites the expansion of shorter ones, and chunks
// are created only by prefixes longer than any inserted before.
func buildLPM(prefixes []lpmPrefix) *lpm {
	t := &lpm{root: new([1 << 16]uint32)}
	for _, p := range prefixes {
		t.insert(p.addr, int(p.bits), p.val+1)
	}
	return t
}

func (t *lpm) newChunk(fill uint32) uint32 {
	c := uint32(len(t.chunks) / 256)
	n := len(t.chunks)
	t.chunks = slices.Grow(t.chunks, 256)[:n+256]
	for i := n; i < n+256; i++ {
		t.chunks[i] = fill
	}
	return c
}

func (t *lpm) insert(addr uint32, bits int, v uint32) {
	if bits <= 16 {
		start := addr >> 16
		for i := range uint32(1) << (16 - bits) {
			t.root[start+i] = v
		}
		return
	}
	r := addr >> 16
	if t.root[r]&lpmPtr == 0 {
		t.root[r] = lpmPtr | t.newChunk(t.root[r])
	}
	base := (t.root[r] &^ lpmPtr) << 8
	if bits <= 24 {
		start := base | (addr>>8)&0xff
		for i := range uint32(1) << (24 - bits) {
			t.chunks[start+i] = v
		}
		return
	}
	j := base | (addr>>8)&0xff
	if t.chunks[j]&lpmPtr == 0 {
		c := t.newChunk(t.chunks[j])
		t.chunks[j] = lpmPtr | c
	}
	base = (t.chunks[j] &^ lpmPtr) << 8
	start := base | addr&0xff
	for i := range uint32(1) << (32 - bits) {
		t.chunks[start+i] = v
	}
}

// lookup returns the value of the longest prefix covering addr, ok=false
// if none does.
func (t *lpm) lookup(addr uint32) (uint32, bool) {
	e := t.root[addr>>16]
	if e&lpmPtr != 0 {
		e = t.chunks[(e&^lpmPtr)<<8|(addr>>8)&0xff]
		if e&lpmPtr != 0 {
			e = t.chunks[(e&^lpmPtr)<<8|addr&0xff]
		}
	}
	return e - 1, e != 0
}
