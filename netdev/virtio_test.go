package netdev

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/weftnet/weft/packet"
)

func TestVirtioHdrCodec(t *testing.T) {
	tests := []struct {
		name string
		hdr  VirtioHdr
	}{
		{"zero", VirtioHdr{}},
		{"needs csum tcp", VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}},
		{"tso4", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}},
		{"tso6 ecn", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv6 | GSOECN, HdrLen: 86, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}},
		{"all ones", VirtioHdr{0xff, 0xff, 0xffff, 0xffff, 0xffff, 0xffff}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b [VirtioHdrLen]byte
			if err := tc.hdr.Encode(b[:]); err != nil {
				t.Fatal(err)
			}
			// Host byte order, field by field, as the kernel lays it out.
			if b[0] != tc.hdr.Flags || b[1] != tc.hdr.GSOType ||
				binary.NativeEndian.Uint16(b[2:]) != tc.hdr.HdrLen ||
				binary.NativeEndian.Uint16(b[4:]) != tc.hdr.GSOSize ||
				binary.NativeEndian.Uint16(b[6:]) != tc.hdr.CsumStart ||
				binary.NativeEndian.Uint16(b[8:]) != tc.hdr.CsumOffset {
				t.Errorf("encoded % x does not match %+v", b, tc.hdr)
			}
			var got VirtioHdr
			if err := got.Decode(b[:]); err != nil || got != tc.hdr {
				t.Errorf("decode = %+v, %v; want %+v", got, err, tc.hdr)
			}
		})
	}
	var h VirtioHdr
	if err := h.Decode(make([]byte, 9)); !errors.Is(err, ErrVirtioShort) {
		t.Errorf("Decode of 9 bytes: %v", err)
	}
	if err := h.Encode(make([]byte, 9)); !errors.Is(err, ErrVirtioShort) {
		t.Errorf("Encode into 9 bytes: %v", err)
	}
}

func TestVirtioHdrCheck(t *testing.T) {
	const frameLen = 1514
	tests := []struct {
		name string
		hdr  VirtioHdr
		want error
	}{
		{"plain", VirtioHdr{}, nil},
		{"data valid", VirtioHdr{Flags: VirtioFlagDataValid}, nil},
		{"needs csum in frame", VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, nil},
		{"csum field at the last 2 bytes", VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: frameLen - 8, CsumOffset: 6}, nil},
		{"csum field past the end", VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: frameLen - 7, CsumOffset: 6}, ErrVirtioCsum},
		{"odd csum offset", VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: 34, CsumOffset: 7}, ErrVirtioCsum},
		{"csum offsets overflow", VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}, ErrVirtioCsum},
		{"tso4", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, nil},
		{"uso with ecn bit is not tcp", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: 1400, CsumStart: 34, CsumOffset: 6}, nil},
		{"tso6 ecn", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv6 | GSOECN, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}, nil},
		{"gso without needs csum", VirtioHdr{GSOType: GSOTCPv4, GSOSize: 1448}, ErrVirtioGSO},
		{"gso size zero", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv4, CsumStart: 34, CsumOffset: 16}, ErrVirtioGSO},
		{"legacy ufo", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOUDP, GSOSize: 1400, CsumStart: 34, CsumOffset: 6}, ErrVirtioGSO},
		{"unknown gso type", VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: 2, GSOSize: 1400, CsumStart: 34, CsumOffset: 6}, ErrVirtioGSO},
		{"ecn on gso none", VirtioHdr{GSOType: GSOECN}, ErrVirtioGSO},
		{"rsc info", VirtioHdr{Flags: VirtioFlagRSCInfo}, ErrVirtioFlags},
		{"unknown flag", VirtioHdr{Flags: 0x80}, ErrVirtioFlags},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.hdr.Check(frameLen); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("Check = %v, want %v", err, tc.want)
			}
		})
	}
}

// tcpFrame builds an Ethernet/IPv4/TCP frame with payload n bytes and a
// correct TCP checksum.
func tcpFrame(n int) []byte {
	const l4 = 14 + packet.IPv4MinHdrLen
	b := make([]byte, l4+packet.TCPMinHdrLen+n)
	packet.PutEth(b, podMAC, gwMAC, packet.EtherTypeIPv4)
	src, dst := gwIP.As4(), podIP.As4()
	tcpLen := uint16(packet.TCPMinHdrLen + n)
	packet.PutIPv4(b[14:], uint16(packet.IPv4MinHdrLen)+tcpLen, 1, true, 64, packet.IPProtoTCP, src, dst)
	tcp := b[l4:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], 12345)
	tcp[12] = 5 << 4
	tcp[13] = packet.TCPFlagACK | packet.TCPFlagPSH
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := range n {
		tcp[packet.TCPMinHdrLen+i] = byte(i*7 + 3)
	}
	sum := packet.Checksum(tcp, packet.PseudoHeaderSum4(src, dst, packet.IPProtoTCP, tcpLen))
	binary.BigEndian.PutUint16(tcp[packet.TCPOffChecksum:], ^packet.Fold(sum))
	return b
}

func TestFinishChecksum(t *testing.T) {
	const l4 = 14 + packet.IPv4MinHdrLen
	for _, n := range []int{0, 1, 2, 3, 100, 1459} {
		full := tcpFrame(n)
		want := binary.BigEndian.Uint16(full[l4+packet.TCPOffChecksum:])
		// What a CHECKSUM_PARTIAL frame looks like: the folded,
		// uncomplemented pseudo-header sum in the checksum field.
		partial := append([]byte(nil), full...)
		ip := packet.IPv4(partial[14:])
		ph := packet.Fold(packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(partial)-l4)))
		binary.BigEndian.PutUint16(partial[l4+packet.TCPOffChecksum:], ph)
		h := VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: l4, CsumOffset: packet.TCPOffChecksum}
		if err := FinishChecksum(partial, &h); err != nil {
			t.Fatalf("payload %d: %v", n, err)
		}
		if got := binary.BigEndian.Uint16(partial[l4+packet.TCPOffChecksum:]); got != want {
			t.Errorf("payload %d: checksum %#04x, want %#04x", n, got, want)
		}
		if h.Flags&VirtioFlagNeedsCsum != 0 {
			t.Errorf("payload %d: NEEDS_CSUM still set", n)
		}
	}
	// Out-of-frame offsets are refused without touching the frame.
	f := tcpFrame(10)
	h := VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: uint16(len(f) - 1), CsumOffset: 0}
	if err := FinishChecksum(f, &h); !errors.Is(err, ErrVirtioCsum) {
		t.Errorf("offset past end: %v", err)
	}
	// Without NEEDS_CSUM the frame is left alone.
	g := tcpFrame(10)
	h = VirtioHdr{Flags: VirtioFlagDataValid, CsumStart: 34, CsumOffset: 16}
	if err := FinishChecksum(g, &h); err != nil || string(g) != string(tcpFrame(10)) {
		t.Errorf("frame without NEEDS_CSUM changed (err %v)", err)
	}
}

// FuzzVirtioHdr: any 10+ bytes decode; encoding gives the same bytes back;
// Check and FinishChecksum never panic, and a header Check accepts always
// leaves FinishChecksum in bounds with a verifiable checksum.
func FuzzVirtioHdr(f *testing.F) {
	hdr := func(h VirtioHdr, frame []byte) []byte {
		b := make([]byte, VirtioHdrLen)
		_ = h.Encode(b)
		return append(b, frame...)
	}
	f.Add(hdr(VirtioHdr{}, tcpFrame(4)))
	f.Add(hdr(VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, tcpFrame(20)))
	f.Add(hdr(VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 8, CsumStart: 34, CsumOffset: 16}, tcpFrame(30)))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h VirtioHdr
		if err := h.Decode(data); err != nil {
			if len(data) >= VirtioHdrLen {
				t.Fatalf("Decode of %d bytes: %v", len(data), err)
			}
			return
		}
		var b [VirtioHdrLen]byte
		if err := h.Encode(b[:]); err != nil || string(b[:]) != string(data[:VirtioHdrLen]) {
			t.Fatalf("round trip % x -> %+v -> % x (%v)", data[:VirtioHdrLen], h, b, err)
		}
		frame := append([]byte(nil), data[VirtioHdrLen:]...)
		checked := h.Check(len(frame)) == nil
		needs := h.Flags&VirtioFlagNeedsCsum != 0
		field := int(h.CsumStart) + int(h.CsumOffset)
		var partial uint16
		if field+2 <= len(frame) {
			partial = binary.BigEndian.Uint16(frame[field:])
		}
		err := FinishChecksum(frame, &h)
		if checked && err != nil {
			t.Fatalf("Check accepted %+v for %d bytes but FinishChecksum failed: %v", h, len(frame), err)
		}
		if err == nil && needs {
			// The field held the pseudo-header sum; with it added back, the
			// covered range must verify.
			if s := packet.Fold(packet.Checksum(frame[h.CsumStart:], uint32(partial))); s != 0xffff {
				t.Fatalf("completed checksum does not verify: sum %#04x", s)
			}
		}
	})
}
