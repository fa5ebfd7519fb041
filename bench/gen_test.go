package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

const regenHint = "regenerate with: go run ./cmd/weft-bench gen -all -dir bench/testdata"

// TestCommittedPcapsMatchGenerator keeps testdata/*.pcap and the
// generator in step: each committed file is the generator's output, byte
// for byte.
func TestCommittedPcapsMatchGenerator(t *testing.T) {
	for _, s := range Scenarios {
		t.Run(s.Name, func(t *testing.T) {
			var want bytes.Buffer
			if err := WritePcap(&want, Datas(s.Gen(DefaultTopology()))); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join("testdata", s.Name+".pcap"))
			if err != nil {
				t.Fatalf("%v (%s)", err, regenHint)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("testdata/%s.pcap (%d bytes) differs from the generator's output (%d bytes); %s",
					s.Name, len(got), want.Len(), regenHint)
			}
		})
	}
}

// TestPcapsSmall keeps the committed captures within the repository
// budget.
func TestPcapsSmall(t *testing.T) {
	const budget = 2 << 20
	paths, err := filepath.Glob(filepath.Join("testdata", "*.pcap"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no pcaps in testdata: %v", err)
	}
	var total int64
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	if total >= budget {
		t.Errorf("testdata pcaps total %d bytes, budget %d", total, budget)
	}
}

// decodedKind names a frame by the layers gopacket finds in it: the L4
// (or ARP) layer, after a "vxlan/" prefix for a VXLAN frame's inner one.
func decodedKind(data []byte) string {
	p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
	if p.ErrorLayer() != nil {
		return "undecodable"
	}
	prefix := ""
	ls := p.Layers()
	for i, l := range ls {
		if l.LayerType() == layers.LayerTypeVXLAN {
			prefix, ls = "vxlan/", ls[i+1:]
			break
		}
	}
	for _, l := range ls {
		switch l.LayerType() {
		case layers.LayerTypeARP:
			return prefix + "arp"
		case layers.LayerTypeTCP:
			return prefix + "tcp"
		case layers.LayerTypeUDP:
			return prefix + "udp"
		case layers.LayerTypeICMPv4:
			return prefix + "icmp"
		}
	}
	return prefix + "other"
}

// wantKind is the decoded kind a regular class must have; "" for the edge
// and malformed classes, whose layers are bent on purpose.
func wantKind(f Frame) string {
	proto, _, _ := strings.Cut(string(f.Class), "/")
	switch proto {
	case "arp", "tcp", "udp", "icmp":
	default:
		return ""
	}
	if f.Expect.Underlay {
		return "vxlan/" + proto
	}
	return proto
}

func TestMixParsesBack(t *testing.T) {
	topo := DefaultTopology()
	spec := DefaultMix
	gen := Mix(topo, spec)
	c, err := LoadPcap(filepath.Join("testdata", "mix.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Frames) != len(gen) {
		t.Fatalf("mix.pcap has %d frames, the generator %d; %s", len(c.Frames), len(gen), regenHint)
	}

	classes := map[Class]int{}
	var syns, gatewayARPs, gatewayEchoes, vxlan, encapWanted int
	for i, data := range c.Frames {
		f := gen[i]
		classes[f.Class]++
		kind := decodedKind(data)
		if want := wantKind(f); want != "" && kind != want {
			t.Errorf("frame %d (%s): gopacket decodes %s, want %s", i, f.Class, kind, want)
		}
		if want := wantKind(f); want != "" && (len(data) < 60 || len(data) > maxPodFrame+overlayLen(f)) {
			t.Errorf("frame %d (%s): %d bytes, outside 60..%d", i, f.Class, len(data), maxPodFrame+overlayLen(f))
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tcp.SYN && !tcp.ACK && wantKind(f) != "" {
			syns++
		}
		if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && f.Class == ClassARPGateway &&
			arp.Operation == layers.ARPRequest && bytes.Equal(arp.DstProtAddress, topo.Gateway.AsSlice()) {
			gatewayARPs++
		}
		if icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && f.Class == ClassEchoGateway &&
			icmp.TypeCode.Type() == layers.ICMPv4TypeEchoRequest {
			gatewayEchoes++
		}
		if strings.HasPrefix(kind, "vxlan/") {
			vxlan++
		}
		if f.Expect.Underlay && f.Expect.DecapDrop == 0 {
			encapWanted++
		}
	}

	tests := []struct {
		name      string
		got, want int
	}{
		{"TCP connections (SYNs)", syns, spec.L2TCP + spec.CrossTCP + 2*spec.HostTCP},
		{"ARP requests for the gateway", gatewayARPs, len(topo.Ports())},
		{"echo requests to the gateway", gatewayEchoes, len(topo.Pods) * spec.Pings},
		// Every frame from the underlay that decap accepts is VXLAN to
		// gopacket, plus the bad ones it can still parse (wrong VNI,
		// unknown peer, bad checksum, flags gopacket does not check).
		{"VXLAN frames", vxlan, encapWanted + classes[ClassVXLANWrongVNI] + classes[ClassVXLANUnknownPeer] +
			classes[ClassVXLANBadChecksum] + classes[ClassVXLANBadFlags] + classes[ClassVXLANReservedBits]},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: %d in the pcap, want %d", tc.name, tc.got, tc.want)
		}
	}
	for _, cl := range allClasses {
		if classes[cl] == 0 {
			t.Errorf("class %s missing from the mix", cl)
		}
	}
	for _, cl := range []Class{"tcp/l2", "tcp/cross-out", "tcp/cross-in", "udp/l2", "udp/cross-out", "udp/cross-in",
		"icmp/l2", "icmp/cross-out", "icmp/cross-in"} {
		if classes[cl] == 0 {
			t.Errorf("class %s missing from the mix", cl)
		}
	}
	t.Logf("%d frames, %d bytes; %d classes", len(c.Frames), c.Bytes(), len(classes))
}

func overlayLen(f Frame) int {
	if f.Expect.Underlay {
		return 50
	}
	return 0
}

// allClasses is every named class; the mix must hold each.
var allClasses = []Class{
	ClassARPGateway, ClassARPRequest, ClassARPReply, ClassARPToRouter, ClassEchoGateway, ClassEchoPeerToGW,
	ClassUnknownUnicast, ClassHairpin, ClassTTLExpired, ClassNoRoute, ClassFragNeeded, ClassTooBig,
	ClassNeighMiss, ClassIPv6ToRouter, ClassMartian,
	ClassRunt, ClassTruncatedIPv4, ClassBadIPVersion, ClassBadIPChecksum, ClassVLAN, ClassUnknownEthType,
	ClassMulticastSrc, ClassSpoofedIP, ClassSpoofedARP,
	ClassVXLANWrongVNI, ClassVXLANUnknownPeer, ClassVXLANBadFlags, ClassVXLANReservedBits, ClassVXLANTruncated,
	ClassVXLANBadChecksum, ClassVXLANNotVXLAN, ClassVXLANFragment,
	ClassOverlayNotRouter, ClassOverlayARP, ClassOverlayTTL, ClassOverlayHairpin, ClassOverlayNeighMiss,
}

// TestGeneratorDeterministic: two runs give the same bytes (the committed
// pcaps depend on it).
func TestGeneratorDeterministic(t *testing.T) {
	a, b := Mix(DefaultTopology(), DefaultMix), Mix(DefaultTopology(), DefaultMix)
	if len(a) != len(b) {
		t.Fatalf("lengths %d and %d", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i].Data, b[i].Data) || a[i].Expect != b[i].Expect {
			t.Fatalf("frame %d differs between runs", i)
		}
	}
}
