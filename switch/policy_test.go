package vswitch

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/policy"
)

// The test node's pods as policy sees them: x/a on port A, x/b on port B
// (both serve "http" = TCP 8080), y/c on the peer node; the host is .2.
func polInput(pols ...*networkingv1.NetworkPolicy) policy.Input {
	http := []policy.NamedPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}
	return policy.Input{
		Namespaces: []policy.Namespace{{Name: "x"}, {Name: "y"}},
		Pods: []policy.Pod{
			{Namespace: "x", Name: "a", Labels: map[string]string{"app": "a"}, IP: podAIP, Ports: http},
			{Namespace: "x", Name: "b", Labels: map[string]string{"app": "b"}, IP: podBIP, Ports: http},
			{Namespace: "y", Name: "c", Labels: map[string]string{"app": "c"}, IP: peerPodIP},
		},
		Policies:  pols,
		HostAddrs: []netip.Addr{hostIP},
	}
}

var polGen uint64

func polSnap(pols ...*networkingv1.NetworkPolicy) *policy.Snapshot {
	polGen++
	return policy.Compile(polInput(pols...), polGen)
}

// bIngress isolates x/b for ingress (and for egress, allowing nothing)
// and admits peers on ports.
func bIngress(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "b-in"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}},
		},
	}
}

func fromApp(app string) []networkingv1.NetworkPolicyPeer {
	return []networkingv1.NetworkPolicyPeer{{
		NamespaceSelector: &metav1.LabelSelector{},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}
}

func tcpPort(p intstr.IntOrString) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: &p}
}

func syn(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, srcMAC packet.MAC) []byte {
	return l4Frame(nil, routerMAC, srcMAC, src, sport, dst, dport, packet.IPProtoTCP, packet.TCPFlagSYN, 0)
}

func TestPolicyStageOffOrInactivePasses(t *testing.T) {
	for name, snap := range map[string]*policy.Snapshot{"no snapshot": nil, "no policies": polSnap()} {
		s := newTestSwitch(t, nil)
		s.SetPolicy(snap)
		v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
		if v.Action != ActionDeliver || v.Port != portB {
			t.Errorf("%s: %+v, want delivered", name, v)
		}
		if n := s.ct.Len(); n != 0 {
			t.Errorf("%s: %d conntrack entries, want none (the stage costs nothing)", name, n)
		}
	}
}

func TestPolicyStageNewFlowsAndReplies(t *testing.T) {
	s := newTestSwitch(t, nil)
	s.SetPolicy(polSnap(bIngress(fromApp("c"), tcpPort(intstr.FromString("http")))))

	// x/a may not reach x/b; y/c (through the overlay) may, on http only.
	v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	if v.Action != ActionDrop || v.Reason != DropPolicyIngress {
		t.Fatalf("x/a -> x/b: %+v, want drop policy_ingress", v)
	}
	if v, _ := process(s, l4Frame(t, routerMAC, peerMAC, peerPodIP, 2000, podBIP, 9090, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portOverlay, sec); v.Reason != DropPolicyIngress {
		t.Fatalf("y/c -> x/b:9090: %+v, want drop policy_ingress", v)
	}
	if s.ct.Len() != 0 {
		t.Fatalf("denied flows left %d conntrack entries", s.ct.Len())
	}
	v, _ = process(s, l4Frame(t, routerMAC, peerMAC, peerPodIP, 2000, podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portOverlay, sec)
	if v.Action != ActionDeliver || v.Port != portB {
		t.Fatalf("y/c -> x/b:8080: %+v, want delivered", v)
	}
	// x/b is isolated for egress and allows nothing, yet the reply passes
	// on the flow's verdict; a new flow from x/b does not.
	v, _ = process(s, l4Frame(t, routerMAC, podBMAC, podBIP, 8080, peerPodIP, 2000, packet.IPProtoTCP, packet.TCPFlagSYN|packet.TCPFlagACK, 0), portB, 2*sec)
	if v.Action != ActionEncap {
		t.Fatalf("reply x/b -> y/c: %+v, want encap", v)
	}
	v, _ = process(s, l4Frame(t, routerMAC, podBMAC, podBIP, 3000, peerPodIP, 2000, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portB, 2*sec)
	if v.Reason != DropPolicyEgress {
		t.Fatalf("new flow from x/b: %+v, want drop policy_egress", v)
	}
	// The node itself reaches any local pod (kubelet probes).
	if v, _ := process(s, l4Frame(t, routerMAC, hostMAC, hostIP, 4000, podBIP, 22, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portHost, 2*sec); v.Action != ActionDeliver {
		t.Fatalf("node -> x/b: %+v, want delivered", v)
	}
}

// Service traffic is checked after NAT: against the backend pod and its
// port, with the client as the source.
func TestPolicyStageAfterServiceNAT(t *testing.T) {
	for _, tc := range []struct {
		name string
		port intstr.IntOrString
		want Action
	}{
		{"backend port allowed", intstr.FromInt32(8080), ActionDeliver},
		{"service port is not the backend's", intstr.FromInt32(80), ActionDrop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svcSwitch(t, webService(backend(podBIP.String(), 8080, true)))
			s.SetPolicy(polSnap(bIngress(fromApp("a"), tcpPort(tc.port))))
			v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
			if v.Action != tc.want {
				t.Fatalf("x/a -> web VIP: %+v, want %s", v, tc.want)
			}
			if tc.want == ActionDrop {
				if v.Reason != DropPolicyIngress {
					t.Fatalf("reason %s", v.Reason)
				}
				// The NAT entry stays, marked denied: its next packet is
				// dropped at once.
				v, _ = process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagACK, 0), portA, 2*sec)
				if v.Reason != DropPolicyFlow {
					t.Fatalf("next packet of the denied service flow: %+v", v)
				}
			}
		})
	}
}

// A policy change re-decides established flows on their next packet: cut
// when no longer allowed (both directions), passing again when allowed.
func TestPolicyStageChangeCutsFlows(t *testing.T) {
	s := newTestSwitch(t, nil)
	allow := bIngress(fromApp("a"))
	s.SetPolicy(polSnap(allow))
	fwd := func(flags uint8, now int64) Verdict {
		v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, flags, 0), portA, now)
		return v
	}
	back := func(flags uint8, now int64) Verdict {
		v, _ := process(s, l4Frame(t, routerMAC, podBMAC, podBIP, 8080, podAIP, 1000, packet.IPProtoTCP, flags, 0), portB, now)
		return v
	}
	if v := fwd(packet.TCPFlagSYN, sec); v.Action != ActionDeliver {
		t.Fatalf("SYN %+v", v)
	}
	if v := back(packet.TCPFlagSYN|packet.TCPFlagACK, sec); v.Action != ActionDeliver {
		t.Fatalf("SYN-ACK %+v", v)
	}
	s.SetPolicy(polSnap(bIngress(fromApp("c"))))
	if v := back(packet.TCPFlagACK, 2*sec); v.Reason != DropPolicyIngress {
		t.Fatalf("reply after the allow was withdrawn: %+v, want drop policy_ingress", v)
	}
	if v := fwd(packet.TCPFlagACK, 2*sec); v.Reason != DropPolicyFlow {
		t.Fatalf("next packet of the cut flow: %+v, want drop policy_flow_denied", v)
	}
	s.SetPolicy(polSnap(allow))
	if v := fwd(packet.TCPFlagACK, 3*sec); v.Action != ActionDeliver {
		t.Fatalf("after allowing again: %+v", v)
	}
	s.SetPolicy(polSnap())
	if v := back(packet.TCPFlagACK, 4*sec); v.Action != ActionDeliver {
		t.Fatalf("after removing every policy: %+v", v)
	}
}

// Mid-stream TCP with no flow (weftd restarted: conntrack is empty) is
// taken up in the direction policy allows; a SYN never is.
func TestPolicyStageLooseTCPPickup(t *testing.T) {
	aIsolated := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a-closed"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	s := newTestSwitch(t, nil)
	s.SetPolicy(polSnap(aIsolated, bIngress(fromApp("a"))))
	// x/b's answer in x/a's connection to x/b:8080.
	v, _ := process(s, l4Frame(t, routerMAC, podBMAC, podBIP, 8080, podAIP, 1000, packet.IPProtoTCP, packet.TCPFlagACK, 10), portB, sec)
	if v.Action != ActionDeliver {
		t.Fatalf("mid-stream reply with no flow: %+v, want taken up", v)
	}
	flows := s.Conntrack(ConntrackFilter{}, sec)
	if len(flows) != 1 || flows[0].Orig.Src.Addr() != podAIP || flows[0].Orig.Dst.Port() != 8080 {
		t.Fatalf("conntrack %+v, want the flow x/a -> x/b:8080", flows)
	}
	v, _ = process(s, l4Frame(t, routerMAC, podBMAC, podBIP, 8081, podAIP, 1001, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portB, sec)
	if v.Reason != DropPolicyIngress && v.Reason != DropPolicyEgress {
		t.Fatalf("SYN x/b -> x/a: %+v, want denied", v)
	}
}

func TestPolicyStageUntracked(t *testing.T) {
	s := newTestSwitch(t, nil)
	s.SetPolicy(polSnap(bIngress(fromApp("a"), tcpPort(intstr.FromInt32(8080)))))
	echo := func(src, dst netip.Addr, srcMAC packet.MAC, typ uint8, in PortID) Verdict {
		f := ethFrame(routerMAC, srcMAC, packet.EtherTypeIPv4, ipv4Packet(src, dst, packet.IPProtoICMP, 64, true, icmpEcho(typ, 8)))
		v, _ := process(s, f, in, sec)
		return v
	}
	if v := echo(podAIP, podBIP, podAMAC, packet.ICMPEchoRequest, portA); v.Reason != DropPolicyIngress {
		t.Fatalf("ping x/a -> x/b with only TCP allowed: %+v", v)
	}
	s.SetPolicy(polSnap(bIngress(fromApp("a"))))
	if v := echo(podAIP, podBIP, podAMAC, packet.ICMPEchoRequest, portA); v.Action != ActionDeliver {
		t.Fatalf("ping x/a -> x/b with all ports allowed: %+v", v)
	}
	if v := echo(podBIP, podAIP, podBMAC, packet.ICMPEchoReply, portB); v.Action != ActionDeliver {
		t.Fatalf("echo reply x/b -> x/a: %+v, want admitted as its request", v)
	}
	if v := echo(podBIP, podAIP, podBMAC, packet.ICMPEchoRequest, portB); v.Reason != DropPolicyEgress {
		t.Fatalf("ping from x/b (egress isolated): %+v", v)
	}
}

func TestPolicyStageNotReadyDenies(t *testing.T) {
	s := newTestSwitch(t, nil)
	s.SetPolicy(policy.NewEngine().Load())
	v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	if v.Reason != DropPolicyNotReady {
		t.Fatalf("%+v, want drop policy_not_ready", v)
	}
}

func TestPolicyStageTrace(t *testing.T) {
	s := newTestSwitch(t, nil)
	s.SetPolicy(polSnap(bIngress(fromApp("a"), tcpPort(intstr.FromString("http")))))
	_, steps := s.Trace(l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	var got string
	for _, st := range steps {
		if st.Stage == StagePolicy {
			got = st.Decision
		}
	}
	if !strings.Contains(got, "ingress allowed by x/b-in ingress[0]") || !strings.Contains(got, "new flow") {
		t.Fatalf("policy step %q in %+v", got, steps)
	}
	if s.ct.Len() != 0 {
		t.Fatal("a trace inserted a flow")
	}
}

// Drops count per policy (into the Engine's slots the snapshot carries),
// on new flows, on flows cut after a change, and not in a trace.
func TestPolicyStageCountsDropsPerPolicy(t *testing.T) {
	s := newTestSwitch(t, nil)
	eng := policy.NewEngine()
	allowA := bIngress(fromApp("a"))
	s.SetPolicy(eng.Update(polInput(allowA)))
	drops := func() policy.PolicyDrops {
		t.Helper()
		l := eng.DropCounts()
		if len(l) != 1 || l[0].Policy != "x/b-in" {
			t.Fatalf("drop counts %+v, want x/b-in alone", l)
		}
		return l[0]
	}
	fwd := func(flags uint8) Verdict {
		v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, flags, 0), portA, sec)
		return v
	}
	if v := fwd(packet.TCPFlagSYN); v.Action != ActionDeliver {
		t.Fatalf("allowed SYN: %+v", v)
	}
	fromB := l4Frame(t, routerMAC, podBMAC, podBIP, 3000, peerPodIP, 2000, packet.IPProtoTCP, packet.TCPFlagSYN, 0)
	if v, _ := process(s, fromB, portB, sec); v.Reason != DropPolicyEgress {
		t.Fatalf("x/b -> y/c: %+v, want policy_egress", v)
	}
	s.Trace(l4Frame(t, routerMAC, podBMAC, podBIP, 3000, peerPodIP, 2000, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portB, sec)
	if d := drops(); d.Egress != 1 || d.Ingress != 0 {
		t.Fatalf("after one denied flow out of x/b (and a trace of another): %+v", d)
	}
	// The allow goes: the tracked flow is cut, its packets count as the
	// policy's ingress drops, the first one decided again and later ones
	// on the stored verdict alike.
	s.SetPolicy(eng.Update(polInput(bIngress(fromApp("c")))))
	for i := range 3 {
		if v := fwd(packet.TCPFlagACK); v.Action != ActionDrop {
			t.Fatalf("packet %d of the cut flow: %+v", i, v)
		}
	}
	if d := drops(); d.Egress != 1 || d.Ingress != 3 {
		t.Fatalf("after the cut flow's packets: %+v, want ingress 3 egress 1", d)
	}
	if c := s.Counters(); c.Drops[DropPolicyIngress]+c.Drops[DropPolicyFlow] != 3 || c.Drops[DropPolicyEgress] != 1 {
		t.Fatalf("per-reason drops disagree: ingress %d flow %d egress %d",
			c.Drops[DropPolicyIngress], c.Drops[DropPolicyFlow], c.Drops[DropPolicyEgress])
	}
}

func TestPolicyStageNoAllocs(t *testing.T) {
	s := newTestSwitch(t, nil)
	// From an Engine, so that denied flows count into per-policy slots.
	s.SetPolicy(policy.NewEngine().Update(polInput(bIngress(fromApp("a")))))
	newFlow := l4Frame(t, routerMAC, podAMAC, podAIP, 1000, podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0)
	denied := l4Frame(t, routerMAC, podBMAC, podBIP, 1000, podAIP, 8080, packet.IPProtoTCP, packet.TCPFlagSYN, 0)
	frames := [][]byte{newFlow}
	out := make([]Verdict, 1)
	s.Process(frames, portA, out, sec)
	sport := uint16(2000)
	if n := testing.AllocsPerRun(500, func() {
		frames[0] = newFlow
		s.Process(frames, portA, out, sec) // established flow
		frames[0] = denied
		s.Process(frames, portB, out, sec) // denied new flow
		newFlow[packet.EthHdrLen+20], newFlow[packet.EthHdrLen+21] = byte(sport>>8), byte(sport)
		sport++
		frames[0] = newFlow
		s.Process(frames, portA, out, sec) // allowed new flow, inserted
	}); n != 0 {
		t.Fatalf("%v allocs per run", n)
	}
}

// BenchmarkPolicyStage: a batch of 64 frames of established flows
// (conntrack hit, verdict current) and of new flows (decided and
// inserted), with the policy stage off and on.
func BenchmarkPolicyStage(b *testing.B) {
	for _, tc := range []struct {
		name string
		snap *policy.Snapshot
	}{{"off", nil}, {"on", polSnap(bIngress(fromApp("a")))}} {
		for _, fresh := range []bool{false, true} {
			name := tc.name + "/established"
			if fresh {
				name = tc.name + "/new"
			}
			b.Run(name, func(b *testing.B) {
				s := newTestSwitch(b, func(c *Config) { c.Conntrack.Size = 1 << 20 })
				s.SetPolicy(tc.snap)
				tmpl := make([][]byte, 64)
				for i := range tmpl {
					tmpl[i] = l4Frame(b, routerMAC, podAMAC, podAIP, uint16(1000+i), podBIP, 8080, packet.IPProtoTCP, packet.TCPFlagACK, 10)
				}
				frames := make([][]byte, 64)
				bufs := make([][]byte, 64)
				for i := range bufs {
					bufs[i] = make([]byte, 0, bufCap)
					frames[i] = append(bufs[i], tmpl[i]...)
				}
				out := make([]Verdict, 64)
				s.Process(frames, portA, out, sec)
				sport := uint32(0)
				b.ReportAllocs()
				b.ResetTimer()
				for iter := 0; b.Loop(); iter++ {
					if fresh && iter%8192 == 8191 {
						b.StopTimer()
						s.ct.Flush() // keep the table below full: 8192 batches are 512Ki flows
						b.StartTimer()
					}
					for i := range frames {
						frames[i] = append(bufs[i][:0], tmpl[i]...) // Process rewrites frames in place
						if fresh {
							sport++
							frames[i][packet.EthHdrLen+20], frames[i][packet.EthHdrLen+21] = byte(sport>>8), byte(sport)
							frames[i][packet.EthHdrLen+22], frames[i][packet.EthHdrLen+23] = byte(sport>>24), byte(sport>>16) // and port: never a repeat
						}
					}
					s.Process(frames, portA, out, sec)
				}
				b.StopTimer()
				for i := range out {
					if out[i].Action != ActionDeliver {
						b.Fatalf("frame %d: %+v, want delivered", i, out[i])
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
			})
		}
	}
}

// A frame must never see the conntrack hit of the frame before it in the
// batch: a service flow followed by a new pod-to-pod flow that policy
// denies.
func TestPolicyStageNoStaleHitAcrossFrames(t *testing.T) {
	s := svcSwitch(t, webService(backend(podBIP.String(), 8080, true)))
	s.SetPolicy(polSnap(bIngress(fromApp("a"), tcpPort(intstr.FromInt32(8080)))))
	frames := [][]byte{
		l4Frame(t, routerMAC, podAMAC, podAIP, 1000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0),   // allowed, NAT inserted
		l4Frame(t, routerMAC, podAMAC, podAIP, 1001, podBIP, 9090, packet.IPProtoTCP, packet.TCPFlagSYN, 0), // denied: port 9090
	}
	out := make([]Verdict, 2)
	s.Process(frames, portA, out, sec)
	if out[0].Action != ActionDeliver || out[1].Reason != DropPolicyIngress {
		t.Fatalf("verdicts %+v, want delivered then drop policy_ingress", out)
	}
}
