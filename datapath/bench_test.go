package datapath

import (
	"testing"

	"github.com/weftnet/weft/netdev"
)

// BenchmarkTransmitSuperFrameEncap is the default (offload) path's cost
// per 64 KiB TSO super-frame from a pod to a peer: read from the (fake)
// TAP, switch, split into MSS-sized TCP segments with checksums, VXLAN
// header in front of each, handed to the (counting) socket. The kernel's
// part, the sendmmsg and the TAP read, is not in it.
func BenchmarkTransmitSuperFrameEncap(b *testing.B) {
	r := newRig(b, modes[2].offloads, true)
	r.out.discard = true
	f, _, h := superFrame(b, 65535-20-32, 1, 1398, remoteIP)
	frames, hdrs := [][]byte{f}, []netdev.VirtioHdr{h}
	step := func() {
		r.podA.WriteVnet(frames, hdrs, 0)
		r.txA.Transmit(false)
	}
	for range 300 { // every slot of the fake TAP's ring grown to its frame
		step()
	}
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
}

// BenchmarkReceiveCoalesce is the default path's cost per GRO read of 44
// TCP segments from a peer (one UDP GSO message's worth at MTU 1450):
// split, decap, switch, coalesce into one super-frame, write to the (fake)
// TAP. Reported per segment as ns/segment.
func BenchmarkReceiveCoalesce(b *testing.B) {
	const segs, mss = 44, 1398
	r := newRig(b, modes[2].offloads, true)
	var run []byte
	for i := range segs {
		run = append(run, vxlan(tcpSegment(b, uint32(1+i*mss), mss), testVNI)...)
	}
	src := &source{}
	rx := r.dp.NewReceiver(src, r.out, GROReadBatch, GROBufSize, nil)
	drain := drainer(r.podA)
	step := func() {
		src.reads = append(src.reads[:0], srcRead{data: run, segSize: len(run) / segs, from: fromB})
		src.next = 0
		rx.Receive()
		drain()
	}
	for range 300 {
		step()
	}
	b.SetBytes(int64(len(run)))
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*segs), "ns/segment")
}
