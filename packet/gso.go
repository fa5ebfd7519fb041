package packet

import (
	"encoding/binary"
	"errors"
)

// Errors from SegmentTCP. They describe input a TAP may hand us: the caller
// counts them as drops and carries on.
var (
	ErrGSOHeaders  = errors.New("gso: malformed headers (not IPv4/IPv6 + TCP at the given offsets)")
	ErrGSOMSS      = errors.New("gso: segment size 0")
	ErrGSOLength   = errors.New("gso: IP length field disagrees with the frame length")
	ErrGSOSegments = errors.New("gso: more segments than output slots")
	ErrGSOShortDst = errors.New("gso: output buffer too small")
)

// TCPSegments returns how many segments a TCP super-frame with payload
// bytes of payload splits into at mss bytes each (at least 1).
func TCPSegments(payload, mss int) int {
	if mss <= 0 || payload <= mss {
		return 1
	}
	return (payload + mss - 1) / mss
}

// SegmentTCP splits a TCP super-frame (a TSO "GSO" frame as a TAP with
// IFF_VNET_HDR hands it out) into frames that each carry at most mss bytes
// of payload, as the kernel's tcp_gso_segment would:
//
//   - frame is [link header, l3Off bytes][IPv4 or IPv6][TCP][payload]; the
//     TCP header starts at l4Off (the virtio csum_start) right after the IP
//     header (IPv4 options are kept; IPv6 extension headers are refused);
//   - every segment gets a copy of the headers with: IPv4 total length, ID
//     (the super-frame's ID + i) and header checksum, or IPv6 payload
//     length; TCP sequence number seq0 + i*mss; FIN and PSH only on the last
//     segment, CWR only on the first (RFC 3168 §6.1.2); and a full TCP
//     checksum computed in software (the super-frame's checksum field holds
//     only the pseudo-header sum, CHECKSUM_PARTIAL);
//   - segment i is written to dst[offs[i]:offs[i]+lens[i]], and segments
//     are packed back to back, each preceded by gap bytes that SegmentTCP
//     leaves untouched: dst = [gap][seg 0][gap][seg 1]... so a caller can
//     put an encapsulation header (e.g. 8 bytes of VXLAN) in each gap and
//     send dst[offs[0]-gap : offs[n-1]+lens[n-1]] as one UDP GSO message of
//     gso_size gap+lens[0].
//
// It returns the number of segments. A super-frame whose payload fits in
// one segment is copied as one segment with its lengths and checksums made
// whole. frame is not modified. SegmentTCP does not allocate.
func SegmentTCP(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int) (int, error) {
	return segmentTCP(dst, gap, frame, l3Off, l4Off, mss, offs, lens, false)
}

// SegmentTCPPartial is SegmentTCP that leaves every segment's checksum
// partial instead of computing it: the TCP checksum field holds the folded
// pseudo-header sum over the segment's own length, not complemented, as
// the kernel leaves a CHECKSUM_PARTIAL segment (virtio NEEDS_CSUM,
// csum_start = l4Off, csum_offset = 16). Whoever writes a segment to a
// device must say so in its virtio header; nobody reads the payload here.
func SegmentTCPPartial(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int) (int, error) {
	return segmentTCP(dst, gap, frame, l3Off, l4Off, mss, offs, lens, true)
}

// SegmentTCPHeaders is SegmentTCP (SegmentTCPPartial with partial) that
// writes only each segment's headers to dst ([gap][headers 0][gap][headers
// 1]..., at offs[i], lens[i] bytes) and leaves the payload where it is:
// segment i is dst[offs[i]:offs[i]+lens[i]] followed by chunks[i], a
// sub-slice of frame, for a gathering send (sendmsg with one iovec for the
// headers and one for the payload) that copies the payload once, in the
// kernel, instead of twice. The full checksum, when computed, still reads
// the payload. chunks must be as long as offs.
func SegmentTCPHeaders(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int, chunks [][]byte, partial bool) (int, error) {
	if chunks == nil {
		return 0, ErrGSOSegments
	}
	return segmentTCPInto(dst, gap, frame, l3Off, l4Off, mss, offs, lens, chunks, partial)
}

func segmentTCP(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int, partial bool) (int, error) {
	return segmentTCPInto(dst, gap, frame, l3Off, l4Off, mss, offs, lens, nil, partial)
}

// segmentTCPInto is every TCP segmentation: with chunks nil the payload is
// copied after each segment's headers, else referenced in chunks.
func segmentTCPInto(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int, chunks [][]byte, partial bool) (int, error) {
	if mss <= 0 {
		return 0, ErrGSOMSS
	}
	if gap < 0 {
		return 0, ErrGSOHeaders
	}
	ip, v6, err := superFrameL3(frame, l3Off, l4Off, IPProtoTCP, TCPMinHdrLen)
	if err != nil {
		return 0, err
	}
	tcpLen := int(frame[l4Off+12]>>4) * 4
	if tcpLen < TCPMinHdrLen || l4Off+tcpLen > len(frame) {
		return 0, ErrGSOHeaders
	}
	p, err := planSegments(dst, gap, frame, ip, v6, l3Off, l4Off, l4Off+tcpLen, mss, IPProtoTCP, offs, lens, chunks)
	if err != nil {
		return 0, err
	}
	seq0 := binary.BigEndian.Uint32(frame[l4Off+4:])
	flags0 := frame[l4Off+13]
	n := p.n
	for i := range n {
		seg, chunk := p.next(i)
		tcp := seg[l4Off:]
		binary.BigEndian.PutUint32(tcp[4:], seq0+uint32(i*mss))
		f := flags0
		if i != n-1 {
			f &^= TCPFlagFIN | TCPFlagPSH
		}
		if i != 0 {
			f &^= TCPFlagCWR
		}
		tcp[13] = f
		l4len := uint32(tcpLen + len(chunk))
		sum := p.pseudo + l4len>>16 + l4len&0xffff
		if partial {
			binary.BigEndian.PutUint16(tcp[TCPOffChecksum:], Fold(sum))
			continue
		}
		tcp[TCPOffChecksum], tcp[TCPOffChecksum+1] = 0, 0
		sum = Checksum(tcp[:tcpLen], sum)
		sum = Checksum(chunk, sum)
		binary.BigEndian.PutUint16(tcp[TCPOffChecksum:], ^Fold(sum))
	}
	return n, nil
}

// segmentPlan is what SegmentTCP and SegmentUDP share: the layout of the
// segments in dst and the per-segment copy and IP header fix-up. Only the
// transport header differs between them.
type segmentPlan struct {
	dst, frame, payload []byte
	gap, mss, n         int
	l3Off, l4Off, hdr   int // hdr: headers copied into every segment (L2..L4)
	v6                  bool
	id0                 uint16 // IPv4 ID of the super-frame; segment i gets id0+i
	pseudo              uint32 // pseudo-header sum without the length, which varies per segment
	offs, lens          []int
	chunks              [][]byte // nil: copy the payload; else segment i's goes to chunks[i]
	at                  int
}

// planSegments checks that n = ceil(payload/mss) segments fit offs, lens
// and dst, and prepares the constants every segment needs.
func planSegments(dst []byte, gap int, frame, ip []byte, v6 bool, l3Off, l4Off, hdr, mss int, proto uint8, offs, lens []int, chunks [][]byte) (segmentPlan, error) {
	p := segmentPlan{dst: dst, frame: frame, payload: frame[hdr:], gap: gap, mss: mss,
		l3Off: l3Off, l4Off: l4Off, hdr: hdr, v6: v6, offs: offs, lens: lens, chunks: chunks}
	p.n = TCPSegments(len(p.payload), mss)
	if p.n > len(offs) || p.n > len(lens) || chunks != nil && p.n > len(chunks) {
		return p, ErrGSOSegments
	}
	room := p.n * (gap + hdr)
	if chunks == nil {
		room += len(p.payload)
	}
	if room > len(dst) {
		return p, ErrGSOShortDst
	}
	if v6 {
		p.pseudo = PseudoHeaderSum6([16]byte(ip[IPv6OffSrc:IPv6OffSrc+16]), [16]byte(ip[IPv6OffDst:IPv6OffDst+16]), proto, 0)
	} else {
		p.pseudo = PseudoHeaderSum4(IPv4(ip).Src4(), IPv4(ip).Dst4(), proto, 0)
		p.id0 = IPv4(ip).ID()
	}
	return p, nil
}

// next writes segment i (call in order 0..n-1) after a gap: the headers,
// its chunk of the payload (or, gathering, a reference to it in
// chunks[i]), and its IP length, ID and header checksum. It returns what
// it wrote (the segment, or its headers) and the payload; the caller fixes
// the L4 header.
func (p *segmentPlan) next(i int) (seg, chunk []byte) {
	chunk = p.payload[min(i*p.mss, len(p.payload)):min((i+1)*p.mss, len(p.payload))]
	p.at += p.gap
	if p.chunks != nil {
		seg = p.dst[p.at : p.at+p.hdr]
		p.chunks[i] = chunk
	} else {
		seg = p.dst[p.at : p.at+p.hdr+len(chunk)]
		copy(seg[p.hdr:], chunk)
	}
	copy(seg, p.frame[:p.hdr])
	p.offs[i], p.lens[i] = p.at, len(seg)
	p.at += len(seg)
	segLen := p.hdr + len(chunk)
	sip := seg[p.l3Off:p.l4Off]
	if p.v6 {
		binary.BigEndian.PutUint16(sip[IPv6OffPayloadLen:], uint16(segLen-p.l4Off))
	} else {
		v4 := IPv4(sip)
		v4.SetTotalLen(uint16(segLen - p.l3Off))
		binary.BigEndian.PutUint16(sip[IPv4OffID:], p.id0+uint16(i))
		v4.ComputeChecksum()
	}
	return seg, chunk
}

// superFrameL3 checks the IP header of a super-frame about to be split:
// IPv4 whose header ends at l4Off and that is not a fragment, or a bare IPv6 header,
// carrying proto, with lengths that cover exactly the frame, and room for
// an l4Min-byte transport header at l4Off. It returns the IP header and
// whether it is IPv6.
func superFrameL3(frame []byte, l3Off, l4Off int, proto uint8, l4Min int) (ip []byte, v6 bool, err error) {
	if l3Off < 0 || l4Off < l3Off || l4Off+l4Min > len(frame) {
		return nil, false, ErrGSOHeaders
	}
	ip = frame[l3Off:l4Off]
	switch {
	case len(ip) >= IPv4MinHdrLen && ip[0]>>4 == 4:
		if IPv4(ip).HeaderLen() != len(ip) || ip[IPv4OffProto] != proto || IPv4(ip).IsFragment() {
			return nil, false, ErrGSOHeaders
		}
		if int(IPv4(ip).TotalLen()) != len(frame)-l3Off {
			return nil, false, ErrGSOLength
		}
		return ip, false, nil
	case len(ip) == IPv6HdrLen && ip[0]>>4 == 6:
		if ip[IPv6OffNextHeader] != proto {
			return nil, false, ErrGSOHeaders
		}
		if int(binary.BigEndian.Uint16(ip[IPv6OffPayloadLen:])) != len(frame)-l4Off {
			return nil, false, ErrGSOLength
		}
		return ip, true, nil
	}
	return nil, false, ErrGSOHeaders
}
