package datapath

import (
	"net/netip"
	"testing"

	"github.com/weftnet/weft/overlay"
)

// TestDropReasons provokes each reason the data path meets over fakes and
// checks that its exported count (DropCounts, what `weft counters` and
// weft_drops_total{reason} show) moved by exactly that much, and that no
// other reason moved.
func TestDropReasons(t *testing.T) {
	stranger := netip.AddrPortFrom(netip.MustParseAddr("10.98.0.77"), overlay.DefaultPort)
	tests := []struct {
		reason  string
		n       uint64
		tso     bool // the TAPs take TSO (else plain)
		provoke func(t *testing.T, r *rig)
	}{
		{"out_port_gone", 1, false, func(t *testing.T, r *rig) {
			r.dp.RemovePort(podBID)
			transmit(t, r, udpFrame(podAMAC, routerMAC, podAIP, podBIP, 10, 64))
		}},
		{"out_tap_write", 2, false, func(t *testing.T, r *rig) {
			r.podB.Close()
			transmit(t, r, udpFrame(podAMAC, routerMAC, podAIP, podBIP, 10, 64), udpFrame(podAMAC, routerMAC, podAIP, podBIP, 20, 64))
		}},
		{"out_udp_send", 1, false, func(t *testing.T, r *rig) {
			r.out.refuse = 1
			transmit(t, r, udpFrame(podAMAC, routerMAC, podAIP, remoteIP, 10, 64))
		}},
		{"offload_bad_gso", 1, true, func(t *testing.T, r *rig) {
			f, _, h := superFrame(t, 3000, 1, 1000, remoteIP)
			h.CsumOffset = 6 // inside the frame, so the device takes it, but not TCP's
			must(t, writeVnet(r.podA, f, h))
			if _, err := r.txA.Transmit(false); err != nil {
				t.Fatal(err)
			}
		}},
		{"underlay_truncated", 2, false, func(t *testing.T, r *rig) {
			receive(t, r, srcRead{from: fromB}, srcRead{from: fromB})
		}},
		{"underlay_empty", 1, false, func(t *testing.T, r *rig) {
			receive(t, r, srcRead{data: []byte{}, from: fromB}, srcRead{from: fromB})
		}},
		{"vxlan_wrong_vni", 1, false, func(t *testing.T, r *rig) {
			d := vxlan(udpFrame(peerMAC, routerMAC, remoteIP, podAIP, 10, 63), testVNI+1)
			receive(t, r, srcRead{data: d, segSize: len(d), from: fromB})
		}},
		{"vxlan_unknown_peer", 1, false, func(t *testing.T, r *rig) {
			d := vxlan(udpFrame(peerMAC, routerMAC, remoteIP, podAIP, 10, 63), testVNI)
			receive(t, r, srcRead{data: d, segSize: len(d), from: stranger})
		}},
		{"no_route", 1, false, func(t *testing.T, r *rig) {
			transmit(t, r, udpFrame(podAMAC, routerMAC, podAIP, netip.MustParseAddr("10.200.0.1"), 10, 64))
		}},
		{"spoofed", 1, false, func(t *testing.T, r *rig) {
			transmit(t, r, udpFrame(podAMAC, routerMAC, podBIP, remoteIP, 10, 64))
		}},
		{"tap_truncated", 1, false, func(t *testing.T, r *rig) {
			transmit(t, r, make([]byte, FrameBufSize)) // larger than a plain transmitter's buffer
		}},
	}
	for _, tc := range tests {
		t.Run(tc.reason, func(t *testing.T) {
			offloads := -1
			if tc.tso {
				offloads = modes[2].offloads
			}
			r := newRig(t, offloads, false)
			before := r.dp.DropCounts()
			if _, ok := before[tc.reason]; !ok {
				t.Fatalf("reason %q is not exported", tc.reason)
			}
			tc.provoke(t, r)
			after := r.dp.DropCounts()
			if after["underlay_truncated"]-before["underlay_truncated"] > 0 && tc.reason == "underlay_empty" {
				delete(after, "underlay_truncated") // provoked beside it, to show the two apart
				delete(before, "underlay_truncated")
			}
			for k, v := range after {
				want := before[k]
				if k == tc.reason {
					want += tc.n
				}
				if v != want {
					t.Errorf("%s = %d, want %d", k, v, want)
				}
			}
		})
	}
}

// TestReasonNames: every reason of the space has a distinct name, and the
// space holds every reason of the switch, the decapsulator and the devices.
func TestReasonNames(t *testing.T) {
	seen := map[string]Reason{}
	for r := Reason(0); r < NumReasons; r++ {
		if r.isNone() {
			continue
		}
		name := r.String()
		if name == "" || name == "unknown" || name == "none" {
			t.Errorf("reason %d has no name (%q)", r, name)
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("reasons %d and %d are both %q", prev, r, name)
		}
		seen[name] = r
	}
	if got := len(newRig(t, -1, false).dp.DropCounts()); got != len(seen) {
		t.Errorf("DropCounts has %d reasons, the space %d", got, len(seen))
	}
	// Outer-header reasons belong to full frames (pcap replay, bench's
	// outerframe): the socket never hands weftd one, so they would only be
	// counters stuck at zero.
	for _, name := range []string{"vxlan_not_vxlan", "vxlan_bad_outer", "vxlan_bad_checksum"} {
		if _, ok := seen[name]; ok {
			t.Errorf("%s is in the data path's space, but no stage of weftd can count it", name)
		}
	}
}

// transmit writes frames into pod A's TAP and runs its transmitter once.
func transmit(t *testing.T, r *rig, frames ...[]byte) {
	t.Helper()
	if _, err := r.podA.Write(frames, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.txA.Transmit(false); err != nil {
		t.Fatal(err)
	}
}

// receive runs a receiver once over the given reads.
func receive(t *testing.T, r *rig, reads ...srcRead) {
	t.Helper()
	rx := r.dp.NewReceiver(&source{reads: reads}, r.out, GROReadBatch, GROBufSize, nil)
	must(t, rx.Receive())
}
