package datapath

import (
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
// UDP_SEGMENT message), or PlainWriter over an overlay.Conn.
type Writer interface {
	// WriteGather is overlay.GSOWriter.WriteGather: it sends dgrams[i] to
	// to[i] and returns how many went; if n < len(dgrams), err says why
	// dgrams[n] did not, and the caller skips it and sends the rest.
	WriteGather(dgrams [][]byte, to []netip.AddrPort) (int, error)
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

// PlainWriter sends on an overlay.Conn as a Writer without UDP GSO.
type PlainWriter struct{ C *overlay.Conn }

// WriteGather implements Writer: one sendmmsg message per datagram.
func (w PlainWriter) WriteGather(dgrams [][]byte, to []netip.AddrPort) (int, error) {
	return w.C.WriteBatch(dgrams, 0, to)
}
