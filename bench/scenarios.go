package bench

import (
	"fmt"

	"github.com/google/gopacket/layers"

	vswitch "github.com/weftnet/weft/switch"
)

// Scenario is a named traffic generator.
type Scenario struct {
	Name string
	Doc  string
	Gen  func(t *Topology) []Frame
}

// scenarioFrames is the length of the single-path scenarios: 8 batches of
// 64 per pass.
const scenarioFrames = 512

// Scenarios lists the generators `weft-bench gen` knows. The committed
// pcaps are each one's output for DefaultTopology (testdata/<name>.pcap).
var Scenarios = []Scenario{
	{"mix", "the realistic mix (DefaultMix): ARP, ICMP, TCP and UDP inside the node and with peers, edge cases, malformed frames",
		func(t *Topology) []Frame { return Mix(t, DefaultMix) }},
	{"l2", "64-byte UDP frames between local pods: L2 forwarding",
		func(t *Topology) []Frame { return L2(t, scenarioFrames) }},
	{"route-encap-64", "64-byte UDP frames from local pods to peers' pods, spread over every peer route: route + VXLAN encap",
		func(t *Topology) []Frame { return RouteEncap64(t, max(scenarioFrames, t.Routes)) }},
	{"decap-deliver-64", "VXLAN frames from peers carrying 64-byte UDP frames to local pods: decap + route + deliver",
		func(t *Topology) []Frame { return DecapDeliver64(t, scenarioFrames) }},
}

// ScenarioByName finds a scenario.
func ScenarioByName(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("unknown scenario %q", name)
}

func udp64(g *gen, src, dst side) Frame {
	u := &layers.UDP{SrcPort: 5000, DstPort: 6000}
	return g.ipFrame(src, dst, "udp", 64, u, g.payload(64-udpOverhead))
}

// L2 returns n 64-byte UDP frames, each pod sending to the next one in
// turn.
func L2(t *Topology, n int) []Frame {
	g := newGen(t, 2)
	fs := make([]Frame, n)
	for i := range fs {
		a := &t.Pods[i%len(t.Pods)]
		b := &t.Pods[(i+1)%len(t.Pods)]
		fs[i] = udp64(g, t.localSide(a), t.localSide(b))
	}
	return fs
}

// RouteEncap64 returns n 64-byte UDP frames from the pods to peers' pods,
// the destinations walking through every peer route of t in turn.
func RouteEncap64(t *Topology, n int) []Frame {
	g := newGen(t, 3)
	peers := t.AllPeers()
	fs := make([]Frame, n)
	for i := range fs {
		a := &t.Pods[i%len(t.Pods)]
		fs[i] = udp64(g, t.localSide(a), t.remoteSide(&peers[i%len(peers)], byte(3+i%8)))
	}
	return fs
}

// DecapDeliver64 returns n VXLAN frames from the peers, each carrying a
// 64-byte UDP frame from a peer's pod to a local pod.
func DecapDeliver64(t *Topology, n int) []Frame {
	g := newGen(t, 4)
	fs := make([]Frame, n)
	for i := range fs {
		b := &t.Pods[i%len(t.Pods)]
		fs[i] = udp64(g, t.remoteSide(&t.Peers[i%len(t.Peers)], byte(3+i%8)), t.localSide(b))
	}
	return fs
}

// Datas returns the frames' bytes.
func Datas(fs []Frame) [][]byte {
	out := make([][]byte, len(fs))
	for i := range fs {
		out[i] = fs[i].Data
	}
	return out
}

// String describes the expected fate, e.g. "deliver (reply)" or
// "decap drop: wrong_vni".
func (e Expect) String() string {
	if e.DecapDrop != 0 {
		return "decap drop: " + e.DecapDrop.String()
	}
	s := e.Action.String()
	if e.Reply {
		s += " (reply)"
	}
	if e.Reason != vswitch.DropNone {
		s += ": " + e.Reason.String()
	}
	return s
}
