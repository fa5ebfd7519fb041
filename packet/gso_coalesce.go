package packet

import "encoding/binary"

// TCPRun coalesces consecutive, in-order TCP/IPv4 segments of one flow into
// one super-frame (what the kernel's GRO does), the inverse of SegmentTCP. A
// TAP written with a virtio header then takes the whole run in one write.
//
// Frames are Ethernet + IPv4 (no options, not a fragment) + TCP. A run
// takes only segments the kernel's tcp_gro_receive would merge: flags ACK
// or ACK|PSH (PSH ends the run), the same addresses, ports, TOS, TTL, DF,
// acknowledgement number, window and TCP options as the first, the next
// sequence number, payload no larger than the first segment's (a shorter
// one ends the run), and a valid TCP checksum: the merged frame goes out
// CHECKSUM_PARTIAL, so nobody would check the segments' checksums after
// this.
//
// The merged frame is never copied together: it is a list of parts, the
// first segment's headers (copied into the run, which rewrites them) and
// then each segment's payload where it lies in the caller's buffer, for a
// gathering write (writev; netdev.Device.WriteVnetGather), as the kernel's
// GRO chains the segments' pages as frags instead of copying them. The
// caller's frames are only read, and must stay unchanged until Finish.
// TCPRun never allocates.
//
// StartPartial and AddPartial take segments whose checksum is partial
// (the field holds the pseudo-header sum, virtio NEEDS_CSUM, as a weft peer
// sends them when both ends agree): there is nothing to verify, and the
// merged frame is partial anyway. A run may mix both kinds.
type TCPRun struct {
	hdr     [tcpRunMaxHdrLen]byte // the first segment's headers, the merged frame's
	parts   [][]byte              // hdr[:hdrLen], then each segment's payload
	n       int                   // the merged frame's length
	hdrLen  int                   // Ethernet + IPv4 + TCP header length
	mss     int                   // payload length of the first segment
	nextSeq uint32
	closed  bool // a short or PSH segment was added: nothing can follow
	partial bool // the first segment's checksum is partial
}

// tcpRunL4Off is the TCP header offset: Ethernet + a 20-byte IPv4 header.
const tcpRunL4Off = EthHdrLen + IPv4MinHdrLen

// tcpRunMaxHdrLen is the longest header a run takes: a 60-byte TCP header.
const tcpRunMaxHdrLen = tcpRunL4Off + 60

// Segments is the number of segments in the run (0: none started).
func (r *TCPRun) Segments() int { return max(len(r.parts)-1, 0) }

// Reset empties the run.
func (r *TCPRun) Reset() {
	clear(r.parts) // no references into the caller's frames
	r.parts, r.n, r.closed = r.parts[:0], 0, false
}

// Partial reports whether the frame Finish will return needs its checksum
// completed (virtio NEEDS_CSUM): a merged run, or one partial segment.
func (r *TCPRun) Partial() bool { s := r.Segments(); return s > 1 || s == 1 && r.partial }

// tcpCandidate checks that frame is a plain TCP/IPv4 data segment with a
// valid checksum (unless partial) and returns its TCP header length and
// payload length.
func tcpCandidate(frame []byte, partial bool) (tcpLen, payload int, ok bool) {
	if len(frame) < tcpRunL4Off+TCPMinHdrLen || EthType(frame) != EtherTypeIPv4 {
		return 0, 0, false
	}
	ip := IPv4(frame[EthHdrLen:])
	if ip[0] != 0x45 || ip.Proto() != IPProtoTCP || ip.IsFragment() {
		return 0, 0, false
	}
	total := int(ip.TotalLen())
	if total > len(ip) || total < IPv4MinHdrLen+TCPMinHdrLen {
		return 0, 0, false
	}
	tcp := frame[tcpRunL4Off : EthHdrLen+total]
	tcpLen = int(tcp[12]>>4) * 4
	if tcpLen < TCPMinHdrLen || tcpLen >= len(tcp) {
		return 0, 0, false // no payload: pure ACKs are not merged
	}
	if f := tcp[13]; f != TCPFlagACK && f != TCPFlagACK|TCPFlagPSH {
		return 0, 0, false
	}
	if !partial && Fold(Checksum(tcp, PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoTCP, uint16(len(tcp))))) != 0xffff {
		return 0, 0, false
	}
	return tcpLen, len(tcp) - tcpLen, true
}

// Start begins a run with frame. parts is the caller's list the run
// fills (Finish returns it): its capacity bounds the run to cap(parts)-1
// segments (at least 2 for a merge). Start returns false and leaves the run
// empty if frame is not a candidate or parts has no room.
func (r *TCPRun) Start(parts [][]byte, frame []byte) bool { return r.start(parts, frame, false) }

// StartPartial is Start for a segment whose checksum is partial.
func (r *TCPRun) StartPartial(parts [][]byte, frame []byte) bool { return r.start(parts, frame, true) }

func (r *TCPRun) start(parts [][]byte, frame []byte, partial bool) bool {
	r.Reset()
	tcpLen, payload, ok := tcpCandidate(frame, partial)
	if !ok || cap(parts) < 2 {
		return false
	}
	r.hdrLen = tcpRunL4Off + tcpLen
	copy(r.hdr[:], frame[:r.hdrLen])
	r.parts = append(parts[:0], r.hdr[:r.hdrLen], frame[r.hdrLen:r.hdrLen+payload])
	r.n = r.hdrLen + payload
	r.mss = payload
	r.partial = partial
	r.nextSeq = binary.BigEndian.Uint32(frame[tcpRunL4Off+4:]) + uint32(payload)
	r.closed = frame[tcpRunL4Off+13]&TCPFlagPSH != 0
	return true
}

// Add takes frame's payload into the run if it continues it and reports
// whether it did; if not, the run is unchanged (Finish it and Start a new
// one).
func (r *TCPRun) Add(frame []byte) bool { return r.add(frame, false) }

// AddPartial is Add for a segment whose checksum is partial.
func (r *TCPRun) AddPartial(frame []byte) bool { return r.add(frame, true) }

func (r *TCPRun) add(frame []byte, partial bool) bool {
	if len(r.parts) == 0 || r.closed || len(r.parts) == cap(r.parts) {
		return false
	}
	tcpLen, payload, ok := tcpCandidate(frame, partial)
	if !ok || tcpRunL4Off+tcpLen != r.hdrLen || payload > r.mss || r.n+payload-EthHdrLen > 0xffff {
		return false
	}
	h, f := r.hdr[:r.hdrLen], frame
	// Same Ethernet header, TOS, DF, TTL, protocol and addresses.
	if string(h[:EthHdrLen]) != string(f[:EthHdrLen]) ||
		h[EthHdrLen+IPv4OffTOS] != f[EthHdrLen+IPv4OffTOS] ||
		h[EthHdrLen+IPv4OffFlagsFrag] != f[EthHdrLen+IPv4OffFlagsFrag] ||
		string(h[EthHdrLen+IPv4OffTTL:EthHdrLen+IPv4OffTTL+2]) != string(f[EthHdrLen+IPv4OffTTL:EthHdrLen+IPv4OffTTL+2]) ||
		string(h[EthHdrLen+IPv4OffSrc:tcpRunL4Off]) != string(f[EthHdrLen+IPv4OffSrc:tcpRunL4Off]) {
		return false
	}
	th, tf := h[tcpRunL4Off:], f[tcpRunL4Off:r.hdrLen]
	// Ports, then ack, data offset and window, then options; the flags
	// byte may differ only in PSH (checked by tcpCandidate).
	if string(th[0:4]) != string(tf[0:4]) || binary.BigEndian.Uint32(tf[4:]) != r.nextSeq ||
		string(th[8:13]) != string(tf[8:13]) || string(th[14:16]) != string(tf[14:16]) ||
		string(th[TCPMinHdrLen:]) != string(tf[TCPMinHdrLen:]) {
		return false
	}
	r.parts = append(r.parts, f[r.hdrLen:r.hdrLen+payload])
	r.n += payload
	r.nextSeq += uint32(payload)
	if payload < r.mss || tf[13]&TCPFlagPSH != 0 {
		r.hdr[tcpRunL4Off+13] |= tf[13] & TCPFlagPSH
		r.closed = true
	}
	return true
}

// Finish completes the run and returns the merged frame as parts (the
// list given to Start: the headers, then the payloads; their
// concatenation is the frame) and its length n, the segment payload size
// to put in a virtio header's gso_size, and the header length (Ethernet +
// IPv4 + TCP). The TCP header offset is EthHdrLen+20. For a run of one
// segment the frame is the segment unchanged (partial if it came so: see
// Partial). For more, the IPv4 total length and header checksum are
// rewritten and the TCP checksum field holds the folded pseudo-header sum,
// not complemented, as a CHECKSUM_PARTIAL frame wants (virtio NEEDS_CSUM
// with csum_start = TCP header, csum_offset = 16). The run is empty
// afterwards; parts stays valid until the next Start.
func (r *TCPRun) Finish() (parts [][]byte, n, mss, hdrLen int) {
	parts, n, mss, hdrLen = r.parts, r.n, r.mss, r.hdrLen
	if len(parts) > 2 {
		ip := IPv4(r.hdr[EthHdrLen:r.hdrLen])
		ip.SetTotalLen(uint16(n - EthHdrLen))
		ip.ComputeChecksum()
		l4len := uint16(n - tcpRunL4Off)
		binary.BigEndian.PutUint16(r.hdr[tcpRunL4Off+TCPOffChecksum:], Fold(PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoTCP, l4len)))
	}
	r.parts, r.n, r.closed = r.parts[:0], 0, false // parts itself is the caller's now
	return parts, n, mss, hdrLen
}

// TCPRunL4Off is the offset of the TCP header in a TCPRun's frames.
const TCPRunL4Off = tcpRunL4Off
