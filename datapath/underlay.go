package datapath

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/overlay"
)

// Reader is an underlay socket as a Receiver reads it: an
// overlay.GROReader, or PlainReader over an overlay.Conn (then every read
// slot holds one datagram, segSizes[i] == sizes[i]).
type Reader interface {
	// ReadBatch is overlay.GROReader.ReadBatch: sizes[i] bytes at
	// bufs[i][offset:], coalesced datagrams of segSizes[i] bytes each
	// (the last may be shorter), sent from from[i]. A read that did not
	// fit its buffer has size 0 and counts in Truncated.
	ReadBatch(bufs [][]byte, sizes, segSizes []int, offset int, from []netip.AddrPort) (int, error)
	// Truncated counts reads that did not fit their buffer.
	Truncated() uint64
}

// Writer is an underlay socket as the dispatcher sends on it: an
// overlay.GSOWriter (runs of equal-size datagrams to one peer leave as one
// UDP_SEGMENT message), or a PlainWriter over an overlay.Conn.
type Writer interface {
	// WriteGather is overlay.GSOWriter.WriteGather: it sends dgrams[i],
	// followed by tails[i] if tails is not nil, to to[i] and returns how
	// many went; if n < len(dgrams), err says why dgrams[n] did not, and
	// the caller skips it and sends the rest.
	WriteGather(dgrams, tails [][]byte, to []netip.AddrPort) (int, error)
}

// PlainReader reads an overlay.Conn as a Reader without GRO.
type PlainReader struct{ C *overlay.Conn }

// ReadBatch implements Reader: one datagram per slot.
func (r PlainReader) ReadBatch(bufs [][]byte, sizes, segSizes []int, offset int, from []netip.AddrPort) (int, error) {
	n, err := r.C.ReadBatch(bufs, sizes, offset, from)
	copy(segSizes[:n], sizes[:n])
	return n, err
}

// Truncated implements Reader.
func (r PlainReader) Truncated() uint64 { return r.C.Truncated() }

// PlainWriter sends on an overlay.Conn as a Writer without UDP GSO (a
// kernel without UDP_SEGMENT, or --udp-gso=false). One goroutine uses it.
type PlainWriter struct {
	C *overlay.Conn
	// joined holds datagrams with tails, joined: Conn.WriteBatch takes
	// one buffer per datagram. Grown on first need, then reused.
	joined []byte
	bufs   [][]byte
}

// WriteGather implements Writer: one sendmmsg message per datagram, a
// datagram with a tail copied together first.
func (w *PlainWriter) WriteGather(dgrams, tails [][]byte, to []netip.AddrPort) (int, error) {
	if tails == nil {
		return w.C.WriteBatch(dgrams, 0, to)
	}
	if len(tails) < len(dgrams) {
		return 0, fmt.Errorf("write gather: %d datagrams but %d tails", len(dgrams), len(tails))
	}
	size := 0
	for i, d := range dgrams {
		size += len(d) + len(tails[i])
	}
	if cap(w.joined) < size {
		w.joined = make([]byte, 0, size)
	}
	w.joined, w.bufs = w.joined[:0], w.bufs[:0]
	for i, d := range dgrams {
		at := len(w.joined)
		w.joined = append(append(w.joined, d...), tails[i]...)
		w.bufs = append(w.bufs, w.joined[at:len(w.joined):len(w.joined)])
	}
	n, err := w.C.WriteBatch(w.bufs, 0, to)
	clear(w.bufs)
	return n, err
}
