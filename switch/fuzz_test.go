package vswitch

import (
	"bytes"
	"slices"
	"testing"

	"github.com/weftnet/weft/packet"
)

// fuzzPorts are the ingress ports FuzzProcess picks from: host, two pods,
// the overlay, and one that is not attached.
var fuzzPorts = []PortID{portHost, portA, portB, portOverlay, 55}

// fuzzSeeds are the seed frames: one per path through the pipeline, and
// truncated variants.
func fuzzSeeds() [][]byte {
	seeds := [][]byte{
		udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 20),
		udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 20),
		udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 20),
		udpFrame(routerMAC, peerMAC, peerPodIP, podAIP, 64, 20),
		udpFrame(routerMAC, peerMAC, peerPodIP, mustAddr("10.244.1.99"), 64, 20),
		udpFrame(routerMAC, podAMAC, podAIP, mustAddr("8.8.8.8"), 64, 20),
		ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, peerPodIP, packet.IPProtoUDP, 64, true, udpPayload(1500))),
		ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, gwIP, packet.IPProtoICMP, 64, false, icmpEcho(packet.ICMPEchoRequest, 16))),
		ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, peerPodIP, packet.IPProtoICMP, 1, false, icmpEcho(packet.ICMPEchoRequest, 16))),
		ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, peerPodIP, packet.IPProtoTCP, 64, true, make([]byte, 20))),
		arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP),
		arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, podBIP),
		arpFrame(routerMAC, packet.ARPOpReply, hostMAC, hostIP, routerMAC, gwIP),
		ipv6Frame(podBMAC, podAMAC, 8),
		ipv6Frame(routerMAC, podAMAC, 8),
		ethFrame(podBMAC, podAMAC, packet.EtherTypeVLAN, make([]byte, 46)),
	}
	n := len(seeds)
	for _, s := range seeds[:n] {
		seeds = append(seeds, s[:len(s)/2], s[:14], s[:13])
	}
	return seeds
}

// FuzzProcess feeds arbitrary bytes to Process on every port kind and checks
// invariants: no panic, a sane verdict, counters move by one at most, and
// Trace (run first, dry) predicts the same verdict.
func FuzzProcess(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add(s, uint8(i), i%3 == 0)
	}
	s := newTestSwitch(f, nil)
	ports := map[PortID]PortConfig{}
	for _, p := range s.Ports() {
		ports[p.ID] = p
	}
	now := int64(sec)
	f.Fuzz(func(t *testing.T, frame []byte, port uint8, tight bool) {
		in := fuzzPorts[int(port)%len(fuzzPorts)]
		now += 1000
		buf := frame
		if !tight {
			buf = withCap(frame)
		}
		orig := slices.Clone(frame)
		tv, _ := s.Trace(frame, in, now)
		if !bytes.Equal(frame, orig) {
			t.Fatal("Trace modified the frame")
		}
		before := s.Counters()
		frames := [][]byte{buf}
		out := make([]Verdict, 1)
		s.Process(frames, in, out, now)
		v, res := out[0], frames[0]
		after := s.Counters()

		// Trace has room for any answer; a tight buffer may not.
		if v != tv && v.Reason != DropNoRoom {
			t.Errorf("Process %+v, Trace %+v", v, tv)
		}
		if len(res) > cap(buf) {
			t.Fatalf("frame grew beyond its capacity")
		}
		drops := after.TotalDrops() - before.TotalDrops()
		if (v.Reason != DropNone) != (drops == 1) || drops > 1 {
			t.Errorf("verdict %+v counted %d drops", v, drops)
		}
		if v.Reason >= NumDropReasons {
			t.Errorf("reason %d out of range", v.Reason)
		}
		switch v.Action {
		case ActionDrop:
			if v.Reason == DropNone || v.Reply {
				t.Errorf("drop verdict %+v", v)
			}
		case ActionDeliver:
			p, ok := ports[v.Port]
			if !ok || p.Kind == PortOverlay {
				t.Errorf("deliver to port %d (%+v)", v.Port, p)
			}
		case ActionFlood:
			if v.Port != in {
				t.Errorf("flood excluding %d, ingress %d", v.Port, in)
			}
		case ActionEncap:
			if !v.Peer.IsValid() {
				t.Errorf("encap without peer")
			}
		default:
			t.Errorf("action %d", v.Action)
		}
		if v.Action != ActionDrop && in == portOverlay && v.Action != ActionEncap && !v.Reply && ports[v.Port].Kind == PortOverlay {
			t.Errorf("overlay frame sent back to the overlay: %+v", v)
		}
		// Switched frames leave unchanged; routed ones are valid IPv4 with
		// a correct header checksum; answers parse.
		switch {
		case v.Action == ActionDrop:
		case v.Reply && packet.EthType(res) == packet.EtherTypeARP:
			if !packet.ARP(res[14:]).Valid() {
				t.Errorf("ARP answer invalid: % x", res)
			}
		case v.Reply || v.Action == ActionEncap || packet.EthSrc(res) == routerMAC:
			ip := packet.IPv4(res[14:])
			if !ip.Valid() || !ip.HeaderChecksumOK() || len(res) != 14+int(ip.TotalLen()) {
				t.Errorf("routed/answered frame invalid: % x", res)
			}
			if v.Reply && ip.Proto() == packet.IPProtoICMP && sum16(ip[ip.HeaderLen():]) != 0xffff {
				t.Errorf("ICMP checksum wrong: % x", res)
			}
		default:
			if !bytes.Equal(res, orig) {
				t.Errorf("switched frame changed:\n got % x\nwant % x", res, orig)
			}
		}
	})
}
