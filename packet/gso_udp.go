package packet

import "encoding/binary"

// MaxUDPRunSegments bounds the datagrams of one UDP super-frame (the
// kernel's UDP_MAX_SEGMENTS is 64 before Linux 6.9).
const MaxUDPRunSegments = 64

// SegmentUDP splits a UDP super-frame (USO, virtio GSO_UDP_L4) into
// datagrams of at most mss payload bytes, as the kernel's __udp_gso_segment
// would: every datagram gets a copy of the headers with its own IPv4 total
// length, ID (the super-frame's + i) and header checksum, or IPv6 payload
// length, its own UDP length, and a full UDP checksum computed in software
// (0 computed is sent as 0xffff). Layout, gap, results and errors are
// SegmentTCP's; the UDP header starts at l4Off right after the IP header.
func SegmentUDP(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int) (int, error) {
	return segmentUDP(dst, gap, frame, l3Off, l4Off, mss, offs, lens, false)
}

// SegmentUDPPartial is SegmentUDP that leaves every datagram's checksum
// partial: the UDP checksum field holds the folded pseudo-header sum over
// the datagram's UDP length, not complemented (virtio NEEDS_CSUM,
// csum_start = l4Off, csum_offset = 6); see SegmentTCPPartial.
func SegmentUDPPartial(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int) (int, error) {
	return segmentUDP(dst, gap, frame, l3Off, l4Off, mss, offs, lens, true)
}

func segmentUDP(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int, partial bool) (int, error) {
	if mss <= 0 {
		return 0, ErrGSOMSS
	}
	if gap < 0 {
		return 0, ErrGSOHeaders
	}
	ip, v6, err := superFrameL3(frame, l3Off, l4Off, IPProtoUDP, UDPHdrLen)
	if err != nil {
		return 0, err
	}
	p, err := planSegments(dst, gap, frame, ip, v6, l3Off, l4Off, l4Off+UDPHdrLen, mss, IPProtoUDP, offs, lens, nil)
	if err != nil {
		return 0, err
	}
	for i := range p.n {
		seg, chunk := p.next(i)
		udpLen := UDPHdrLen + len(chunk)
		udp := seg[l4Off:]
		binary.BigEndian.PutUint16(udp[UDPOffLen:], uint16(udpLen))
		sum := p.pseudo + uint32(udpLen)
		if partial {
			binary.BigEndian.PutUint16(udp[UDPOffChecksum:], Fold(sum))
			continue
		}
		udp[UDPOffChecksum], udp[UDPOffChecksum+1] = 0, 0
		sum = Checksum(udp[:UDPHdrLen], sum)
		sum = Checksum(chunk, sum)
		c := ^Fold(sum)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[UDPOffChecksum:], c)
	}
	return p.n, nil
}

// UDPRun coalesces consecutive UDP/IPv4 datagrams of one flow into one USO
// super-frame (GSO_UDP_L4), the inverse of SegmentUDP, so that a TAP takes
// a burst of datagrams in one write. It takes datagrams with the same
// Ethernet header, TOS, DF, TTL, addresses and ports as the first, payload
// no larger than the first's (a shorter one ends the run), at most
// MaxUDPRunSegments, and a valid or absent (0) checksum; unlike TCP there is
// no sequence to check, and order is kept because only the next datagram
// of the batch is ever added. Copies into a caller's buffer; never allocates.
// StartPartial and AddPartial take datagrams whose checksum is partial, as
// TCPRun's do.
type UDPRun struct {
	buf     []byte
	n       int
	mss     int
	segs    int
	closed  bool
	partial bool // the first datagram's checksum is partial
}

// UDPRunHdrLen is the header length of a UDPRun's frames: Ethernet + a
// 20-byte IPv4 header + UDP.
const UDPRunHdrLen = EthHdrLen + IPv4MinHdrLen + UDPHdrLen

// Segments is the number of datagrams in the run (0: none started).
func (r *UDPRun) Segments() int { return r.segs }

// Reset empties the run.
func (r *UDPRun) Reset() { r.segs, r.n, r.closed = 0, 0, false }

// Partial reports whether the frame Finish will return needs its checksum
// completed (virtio NEEDS_CSUM): a merged run, or one partial datagram.
func (r *UDPRun) Partial() bool { return r.segs > 1 || r.segs == 1 && r.partial }

// udpCandidate checks a plain UDP/IPv4 datagram with a valid or absent
// checksum (or a partial one, which is not checked) and returns its
// payload length.
func udpCandidate(frame []byte, partial bool) (int, bool) {
	if len(frame) < UDPRunHdrLen || EthType(frame) != EtherTypeIPv4 {
		return 0, false
	}
	ip := IPv4(frame[EthHdrLen:])
	if ip[0] != 0x45 || ip.Proto() != IPProtoUDP || ip.IsFragment() {
		return 0, false
	}
	total := int(ip.TotalLen())
	if total > len(ip) || total < IPv4MinHdrLen+UDPHdrLen {
		return 0, false
	}
	udp := frame[EthHdrLen+IPv4MinHdrLen : EthHdrLen+total]
	if int(binary.BigEndian.Uint16(udp[UDPOffLen:])) != len(udp) || len(udp) == UDPHdrLen {
		return 0, false
	}
	if !partial && binary.BigEndian.Uint16(udp[UDPOffChecksum:]) != 0 {
		sum := PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoUDP, uint16(len(udp)))
		if Fold(Checksum(udp, sum)) != 0xffff {
			return 0, false
		}
	}
	return len(udp) - UDPHdrLen, true
}

// Start begins a run with frame, copied into buf. It returns false and
// leaves the run empty if frame is not a candidate or does not fit.
func (r *UDPRun) Start(buf, frame []byte) bool { return r.start(buf, frame, false) }

// StartPartial is Start for a datagram whose checksum is partial.
func (r *UDPRun) StartPartial(buf, frame []byte) bool { return r.start(buf, frame, true) }

func (r *UDPRun) start(buf, frame []byte, partial bool) bool {
	r.Reset()
	payload, ok := udpCandidate(frame, partial)
	if !ok || UDPRunHdrLen+payload > len(buf) {
		return false
	}
	r.n = copy(buf, frame[:UDPRunHdrLen+payload])
	r.buf, r.mss, r.segs, r.partial = buf, payload, 1, partial
	return true
}

// Add appends frame's payload if it continues the run and reports whether
// it did; if not, the run is unchanged.
func (r *UDPRun) Add(frame []byte) bool { return r.add(frame, false) }

// AddPartial is Add for a datagram whose checksum is partial.
func (r *UDPRun) AddPartial(frame []byte) bool { return r.add(frame, true) }

func (r *UDPRun) add(frame []byte, partial bool) bool {
	if r.segs == 0 || r.closed || r.segs == MaxUDPRunSegments {
		return false
	}
	payload, ok := udpCandidate(frame, partial)
	if !ok || payload > r.mss || r.n+payload > len(r.buf) || r.n+payload-EthHdrLen > 0xffff {
		return false
	}
	h := r.buf
	const ipOff = EthHdrLen
	if string(h[:EthHdrLen]) != string(frame[:EthHdrLen]) ||
		h[ipOff+IPv4OffTOS] != frame[ipOff+IPv4OffTOS] ||
		h[ipOff+IPv4OffFlagsFrag] != frame[ipOff+IPv4OffFlagsFrag] ||
		string(h[ipOff+IPv4OffTTL:ipOff+IPv4OffTTL+2]) != string(frame[ipOff+IPv4OffTTL:ipOff+IPv4OffTTL+2]) ||
		string(h[ipOff+IPv4OffSrc:UDPRunHdrLen-UDPHdrLen+4]) != string(frame[ipOff+IPv4OffSrc:UDPRunHdrLen-UDPHdrLen+4]) {
		return false // Ethernet, TOS, DF, TTL, protocol, addresses, ports
	}
	copy(r.buf[r.n:], frame[UDPRunHdrLen:UDPRunHdrLen+payload])
	r.n += payload
	r.segs++
	if payload < r.mss {
		r.closed = true
	}
	return true
}

// Finish completes the run and returns the merged frame (in the buffer given
// to Start) and the datagram payload size for the virtio header's gso_size.
// One datagram is returned unchanged (partial if it came so: see
// Partial). For more, the IPv4 total length and
// header checksum and the UDP length are rewritten, and the UDP checksum
// field holds the folded pseudo-header sum over the whole UDP length, not
// complemented (virtio NEEDS_CSUM, csum_start = UDP header, csum_offset = 6),
// as the kernel's own UDP GSO super-frames carry it.
func (r *UDPRun) Finish() (frame []byte, mss int) {
	frame, mss = r.buf[:r.n], r.mss
	if r.segs > 1 {
		ip := IPv4(frame[EthHdrLen:])
		ip.SetTotalLen(uint16(r.n - EthHdrLen))
		ip.ComputeChecksum()
		udp := frame[EthHdrLen+IPv4MinHdrLen:]
		binary.BigEndian.PutUint16(udp[UDPOffLen:], uint16(len(udp)))
		binary.BigEndian.PutUint16(udp[UDPOffChecksum:], Fold(PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoUDP, uint16(len(udp)))))
	}
	r.Reset()
	return frame, mss
}
