package datapath

import (
	"testing"

	"github.com/weftnet/weft/netdev"
)

// TestAllocs: a frame's whole way through the data path, device read to
// device or socket write, allocates nothing once the worker is warm, in
// every mode and direction.
func TestAllocs(t *testing.T) {
	for _, m := range modes {
		r := newRig(t, m.offloads, true)
		r.out.discard = true
		drainB := drainer(r.podB)
		drainA := drainer(r.podA)
		toB := udpFrame(podAMAC, routerMAC, podAIP, podBIP, 100, 64)
		toRemote := udpFrame(podAMAC, routerMAC, podAIP, remoteIP, 1000, 64)
		var run []byte
		for i := range 8 {
			run = append(run, vxlan(tcpSegment(t, uint32(1+i*1000), 1000), testVNI)...)
		}
		src := &source{}
		rx := r.dp.NewReceiver(src, r.out, GROReadBatch, GROBufSize, nil)
		cases := []struct {
			name string
			fn   func()
		}{
			{"transmit local", func() {
				r.podA.Write([][]byte{toB}, 0)
				r.txA.Transmit(false)
				drainB()
			}},
			{"transmit waiting", func() { // Run's way: wait, take a set, read, give it back
				r.podA.Write([][]byte{toB}, 0)
				r.txA.Transmit(true)
				drainB()
			}},
			{"transmit encap", func() {
				r.podA.Write([][]byte{toRemote}, 0)
				r.txA.Transmit(false)
			}},
			{"receive", func() {
				src.reads = append(src.reads[:0], srcRead{data: run, segSize: len(run) / 8, from: fromB})
				src.next = 0
				rx.Receive()
				drainA()
			}},
		}
		if m.offloads > 0 {
			f, _, h := superFrame(t, 60000, 1, 1398, remoteIP)
			hdrs := []netdev.VirtioHdr{h}
			frames := [][]byte{f}
			cases = append(cases, struct {
				name string
				fn   func()
			}{"transmit super-frame encap", func() {
				r.podA.WriteVnet(frames, hdrs, 0)
				r.txA.Transmit(false)
			}})
		}
		for _, c := range cases {
			for range 300 { // until every slot of the fakes' rings has grown to its frame
				c.fn()
			}
			if allocs := testing.AllocsPerRun(100, c.fn); allocs != 0 {
				t.Errorf("%s %s: %v allocs per run, want 0", m.name, c.name, allocs)
			}
		}
		if d := r.dp.DropCounts(); d["out_port_gone"]+d["out_tap_write"]+d["out_udp_send"]+d["offload_bad_gso"] != 0 {
			t.Errorf("%s: drops on the way: %v", m.name, d)
		}
	}
}

// drainer returns a function that empties what a fake end holds, with
// buffers allocated once.
func drainer(f *netdev.Fake) func() {
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, SuperBufSize)
	}
	sizes := make([]int, 64)
	hdrs := make([]netdev.VirtioHdr, 64)
	return func() {
		for f.TryReadVnetTurn(bufs, sizes, hdrs, 0) > 0 {
			f.EndTurn()
		}
	}
}
