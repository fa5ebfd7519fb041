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
// this. The run is built by copying into a buffer the caller owns; TCPRun
// never allocates.
//
// StartPartial and AddPartial take segments whose checksum is partial
// (the field holds the pseudo-header sum, virtio NEEDS_CSUM, as a weft peer
// sends them when both ends agree): there is nothing to verify, and the
// merged frame is partial anyway. A run may mix both kinds.
type TCPRun struct {
	buf     []byte // the merged frame so far: buf[:n]
	n       int
	hdrLen  int // Ethernet + IPv4 + TCP header length
	mss     int // payload length of the first segment
	segs    int
	nextSeq uint32
	closed  bool // a short or PSH segment was added: nothing can follow
	partial bool // the first segment's checksum is partial
}

// tcpRunL4Off is the TCP header offset: Ethernet + a 20-byte IPv4 header.
const tcpRunL4Off = EthHdrLen + IPv4MinHdrLen

// Segments is the number of segments in the run (0: none started).
func (r *TCPRun) Segments() int { return r.segs }

// Reset empties the run.
func (r *TCPRun) Reset() { r.segs, r.n, r.closed = 0, 0, false }

// Partial reports whether the frame Finish will return needs its checksum
// completed (virtio NEEDS_CSUM): a merged run, or one partial segment.
func (r *TCPRun) Partial() bool { return r.segs > 1 || r.segs == 1 && r.partial }

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

// Start begins a run with frame, copied into buf (which must hold the
// largest merged frame wanted: up to EthHdrLen+65535 bytes). It returns
// false and leaves the run empty if frame is not a candidate or does not
// fit buf.
func (r *TCPRun) Start(buf, frame []byte) bool { return r.start(buf, frame, false) }

// StartPartial is Start for a segment whose checksum is partial.
func (r *TCPRun) StartPartial(buf, frame []byte) bool { return r.start(buf, frame, true) }

func (r *TCPRun) start(buf, frame []byte, partial bool) bool {
	r.Reset()
	tcpLen, payload, ok := tcpCandidate(frame, partial)
	if !ok {
		return false
	}
	n := tcpRunL4Off + tcpLen + payload
	if n > len(buf) {
		return false
	}
	copy(buf, frame[:n])
	r.buf, r.n = buf, n
	r.hdrLen = tcpRunL4Off + tcpLen
	r.mss = payload
	r.segs = 1
	r.partial = partial
	r.nextSeq = binary.BigEndian.Uint32(frame[tcpRunL4Off+4:]) + uint32(payload)
	r.closed = frame[tcpRunL4Off+13]&TCPFlagPSH != 0
	return true
}

// Add appends frame's payload if it continues the run and reports whether
// it did; if not, the run is unchanged (Finish it and Start a new one).
func (r *TCPRun) Add(frame []byte) bool { return r.add(frame, false) }

// AddPartial is Add for a segment whose checksum is partial.
func (r *TCPRun) AddPartial(frame []byte) bool { return r.add(frame, true) }

func (r *TCPRun) add(frame []byte, partial bool) bool {
	if r.segs == 0 || r.closed {
		return false
	}
	tcpLen, payload, ok := tcpCandidate(frame, partial)
	if !ok || tcpRunL4Off+tcpLen != r.hdrLen || payload > r.mss || r.n+payload > len(r.buf) || r.n+payload-EthHdrLen > 0xffff {
		return false
	}
	h, f := r.buf, frame
	// Same Ethernet header, TOS, DF, TTL, protocol and addresses.
	if string(h[:EthHdrLen]) != string(f[:EthHdrLen]) ||
		h[EthHdrLen+IPv4OffTOS] != f[EthHdrLen+IPv4OffTOS] ||
		h[EthHdrLen+IPv4OffFlagsFrag] != f[EthHdrLen+IPv4OffFlagsFrag] ||
		string(h[EthHdrLen+IPv4OffTTL:EthHdrLen+IPv4OffTTL+2]) != string(f[EthHdrLen+IPv4OffTTL:EthHdrLen+IPv4OffTTL+2]) ||
		string(h[EthHdrLen+IPv4OffSrc:tcpRunL4Off]) != string(f[EthHdrLen+IPv4OffSrc:tcpRunL4Off]) {
		return false
	}
	th, tf := h[tcpRunL4Off:r.hdrLen], f[tcpRunL4Off:r.hdrLen]
	// Ports, then ack, data offset and window, then options; the flags
	// byte may differ only in PSH (checked by tcpCandidate).
	if string(th[0:4]) != string(tf[0:4]) || binary.BigEndian.Uint32(tf[4:]) != r.nextSeq ||
		string(th[8:13]) != string(tf[8:13]) || string(th[14:16]) != string(tf[14:16]) ||
		string(th[TCPMinHdrLen:]) != string(tf[TCPMinHdrLen:]) {
		return false
	}
	copy(r.buf[r.n:], f[r.hdrLen:r.hdrLen+payload])
	r.n += payload
	r.segs++
	r.nextSeq += uint32(payload)
	if payload < r.mss || tf[13]&TCPFlagPSH != 0 {
		r.buf[tcpRunL4Off+13] |= tf[13] & TCPFlagPSH
		r.closed = true
	}
	return true
}

// Finish completes the run and returns the merged frame (a sub-slice of the
// buffer given to Start), the segment payload size to put in a virtio
// header's gso_size, and the header length (Ethernet + IPv4 + TCP). The
// TCP header offset is EthHdrLen+20. For a run of one segment the frame is
// the segment unchanged (partial if it came so: see Partial). For more, the IPv4 total length and header
// checksum are rewritten and the TCP checksum field holds the folded
// pseudo-header sum, not complemented, as a CHECKSUM_PARTIAL frame wants
// (virtio NEEDS_CSUM with csum_start = TCP header, csum_offset = 16).
// The run is empty afterwards.
func (r *TCPRun) Finish() (frame []byte, mss, hdrLen int) {
	frame, mss, hdrLen = r.buf[:r.n], r.mss, r.hdrLen
	if r.segs > 1 {
		ip := IPv4(frame[EthHdrLen:])
		ip.SetTotalLen(uint16(r.n - EthHdrLen))
		ip.ComputeChecksum()
		l4len := uint16(r.n - tcpRunL4Off)
		binary.BigEndian.PutUint16(frame[tcpRunL4Off+TCPOffChecksum:], Fold(PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoTCP, l4len)))
	}
	r.Reset()
	return frame, mss, hdrLen
}

// TCPRunL4Off is the offset of the TCP header in a TCPRun's frames.
const TCPRunL4Off = tcpRunL4Off
