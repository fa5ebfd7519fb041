package outerframe

import (
	"testing"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// FuzzDecapFrame feeds arbitrary full outer frames to DecapFrame. Invariants:
// no panic; an accepted frame yields an inner frame of at least 14 bytes
// inside the input, from the peer named by the outer source address, behind
// a valid outer IPv4 header.
func FuzzDecapFrame(f *testing.F) {
	for _, size := range []int{0, 50, 1400} {
		fl := defaultFlow()
		fl.PayloadLen = size
		inner := fl.Serialize(f)
		buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
		start, err := EncapIPv4(buf, off, len(inner), &OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: testVNI})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf[start:])
	}
	f.Add(setUDPChecksum(fullFrame(f)))
	f.Add(fullFrame(f)[:40])
	d := NewDecapper(testVNI, 0, testPeers(f, testVNI))
	d.VerifyUDPChecksum = true
	f.Fuzz(func(t *testing.T, frame []byte) {
		inner, peer, r := d.DecapFrame(frame)
		if r != DropNone {
			if inner != nil || peer != nil {
				t.Fatalf("drop %v returned a frame or peer", r)
			}
			return
		}
		if peer == nil || len(inner) < packet.EthHdrLen {
			t.Fatalf("accepted: peer %v, inner %d bytes", peer, len(inner))
		}
		ip := packet.IPv4(frame[packet.EthHdrLen:])
		if !ip.Valid() || !ip.HeaderChecksumOK() || peer.Underlay != ip.Src() {
			t.Fatalf("accepted a frame with a bad outer header or the wrong peer %v", peer.Underlay)
		}
		begin := cap(frame) - cap(inner) // inner is frame[begin:end]
		end := begin + len(inner)
		if begin < overlay.OuterIPv4Len || end > int(ip.TotalLen())+packet.EthHdrLen {
			t.Fatalf("inner frame [%d:%d] outside the datagram", begin, end)
		}
	})
}
