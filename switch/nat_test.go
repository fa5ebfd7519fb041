package vswitch

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/switch/conntrack"
)

var (
	remoteBE  = ap("10.244.2.7") // on the peer node (overlay)
	remoteBE2 = ap("10.244.2.8")
)

func svcSwitch(t testing.TB, svcs ...ServiceSpec) *Switch {
	t.Helper()
	s := newTestSwitch(t, func(c *Config) { c.ICMPRate, c.ICMPBurst = 1000, 1000 })
	if err := s.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	return s
}

func tcpSvc(name string, vip netip.Addr, port uint16, bs ...ServiceBackend) ServiceSpec {
	return ServiceSpec{Name: name, ClusterIP: vip, Port: port, Proto: packet.IPProtoTCP, Backends: bs}
}

func udpSvc(name string, vip netip.Addr, port uint16, bs ...ServiceBackend) ServiceSpec {
	return ServiceSpec{Name: name, ClusterIP: vip, Port: port, Proto: packet.IPProtoUDP, Backends: bs}
}

// A new flow from a pod to a cluster IP is DNATed to the backend and
// leaves through the overlay; the backend's reply, back through the
// overlay, is reverse-NATed so the client sees the cluster IP. TCP and
// UDP on the same port number are separate frontends.
func TestServiceNATRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proto  uint8
		syn    uint8
		synAck uint8
	}{
		{"tcp", packet.IPProtoTCP, packet.TCPFlagSYN, packet.TCPFlagSYN | packet.TCPFlagACK},
		{"udp", packet.IPProtoUDP, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svcSwitch(t,
				tcpSvc("default/web:tcp", vipWeb, 53, backend(remoteBE.String(), 5353, true)),
				udpSvc("default/web:udp", vipWeb, 53, backend(remoteBE2.String(), 5353, true)))
			want := remoteBE
			if tc.proto == packet.IPProtoUDP {
				want = remoteBE2
			}
			v, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 40000, vipWeb, 53, tc.proto, tc.syn, 100), portA, sec)
			if v.Action != ActionEncap || v.Peer != peerAddr {
				t.Fatalf("verdict %+v, want encap to %s", v, peerAddr)
			}
			got := checkFrame(t, out, false)
			if got.src != podAIP || got.sport != 40000 || got.dst != want || got.dport != 5353 {
				t.Fatalf("forward frame %+v", got)
			}
			v, out = process(s, l4Frame(t, routerMAC, peerMAC, want, 5353, podAIP, 40000, tc.proto, tc.synAck, 100), portOverlay, 2*sec)
			if v.Action != ActionDeliver || v.Port != portA {
				t.Fatalf("reply verdict %+v", v)
			}
			got = checkFrame(t, out, false)
			if got.src != vipWeb || got.sport != 53 || got.dst != podAIP || got.dport != 40000 {
				t.Fatalf("reply frame %+v", got)
			}
			flows := s.Conntrack(ConntrackFilter{}, 2*sec)
			if len(flows) != 1 || flows[0].Service != "default/web:"+tc.name || !flows[0].Replied {
				t.Fatalf("conntrack %+v", flows)
			}
			if st := s.ServiceStats(); st[0].NewFlows+st[1].NewFlows != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// A UDP checksum of 0 ("none", RFC 768) stays 0 through NAT.
func TestServiceNATUDPNoChecksum(t *testing.T) {
	s := svcSwitch(t, udpSvc("kube-system/dns:dns", vipDNS, 53, backend(podBIP.String(), 5353, true)))
	f := l4Frame(t, routerMAC, podAMAC, podAIP, 40000, vipDNS, 53, packet.IPProtoUDP, 0, 30)
	binary.BigEndian.PutUint16(f[packet.EthHdrLen+20+6:], 0)
	v, out := process(s, f, portA, sec)
	if v.Action != ActionDeliver || v.Port != portB {
		t.Fatalf("verdict %+v", v)
	}
	if sum := binary.BigEndian.Uint16(out[packet.EthHdrLen+20+6:]); sum != 0 {
		t.Fatalf("UDP checksum %#04x, want 0 kept", sum)
	}
	if got := checkFrame(t, out, true); got.dst != podBIP || got.dport != 5353 {
		t.Fatalf("frame %+v", got)
	}
}

// No eligible endpoint: refused at once with ICMP port unreachable from
// the cluster IP, quoting the original packet; counted.
func TestServiceNoEndpointsRefused(t *testing.T) {
	for _, proto := range []uint8{packet.IPProtoTCP, packet.IPProtoUDP} {
		s := svcSwitch(t,
			ServiceSpec{Name: "default/empty:x", ClusterIP: vipWeb, Port: 80, Proto: proto, Backends: []ServiceBackend{backend(podBIP.String(), 80, false)}})
		v, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 40000, vipWeb, 80, proto, packet.TCPFlagSYN, 0), portA, sec)
		if v.Action != ActionDeliver || v.Port != portA || !v.Reply || v.Reason != DropSvcNoEndpoints {
			t.Fatalf("proto %d: verdict %+v", proto, v)
		}
		p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if icmp == nil || icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 3) || !ip.SrcIP.Equal(vipWeb.AsSlice()) || !ip.DstIP.Equal(podAIP.AsSlice()) {
			t.Fatalf("proto %d: answer %v", proto, p)
		}
		if c := s.Counters(); c.Drops[DropSvcNoEndpoints] != 1 || c.ICMPErrors != 1 || c.Conntrack.Entries != 0 {
			t.Fatalf("counters %+v", c)
		}
	}
}

// internalTrafficPolicy Local: only backends on this node; with none, the
// flow is dropped and counted (no ICMP, as kube-proxy drops it).
func TestServiceInternalLocal(t *testing.T) {
	local := ServiceBackend{Addr: podBIP, Port: 8080, Ready: true, Local: true}
	sp := tcpSvc("default/web:http", vipWeb, 80, local, backend(remoteBE.String(), 8080, true))
	sp.InternalLocal = true
	s := svcSwitch(t, sp)
	for i := range 20 {
		v, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, uint16(30000+i), vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
		if v.Action != ActionDeliver || v.Port != portB {
			t.Fatalf("flow %d: verdict %+v", i, v)
		}
		if got := checkFrame(t, out, false); got.dst != podBIP {
			t.Fatalf("flow %d went to %s", i, got.dst)
		}
	}
	sp.Backends = []ServiceBackend{backend(remoteBE.String(), 8080, true)}
	if err := s.SetServices([]ServiceSpec{sp}); err != nil {
		t.Fatal(err)
	}
	v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 31000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	if v.Action != ActionDrop || v.Reason != DropSvcNoLocal || s.Counters().Drops[DropSvcNoLocal] != 1 {
		t.Fatalf("no local backend: %+v", v)
	}
}

// Hairpin: a pod reaching itself through its service gets the packet from
// the gateway address (masquerade), and its reply is translated back.
func TestServiceHairpin(t *testing.T) {
	s := svcSwitch(t, tcpSvc("default/self:http", vipWeb, 80, backend(podAIP.String(), 8080, true)))
	v, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 40000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	if v.Action != ActionDeliver || v.Port != portA {
		t.Fatalf("verdict %+v", v)
	}
	got := checkFrame(t, out, false)
	if got.src != gwIP || got.sport != 40000 || got.dst != podAIP || got.dport != 8080 {
		t.Fatalf("hairpin frame %+v", got)
	}
	if dst := packet.EthDst(out); dst != podAMAC {
		t.Fatalf("hairpin frame to MAC %s", dst)
	}
	// The pod answers the gateway (router MAC).
	v, out = process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 8080, gwIP, 40000, packet.IPProtoTCP, packet.TCPFlagSYN|packet.TCPFlagACK, 0), portA, 2*sec)
	if v.Action != ActionDeliver || v.Port != portA {
		t.Fatalf("reply verdict %+v", v)
	}
	got = checkFrame(t, out, false)
	if got.src != vipWeb || got.sport != 80 || got.dst != podAIP || got.dport != 40000 {
		t.Fatalf("hairpin reply %+v", got)
	}
}

// TestServiceHostToOutsideBackend: the node (host port, its own address)
// reaching a Service whose backend lies behind the node (the API server of
// the kubernetes Service, a hostNetwork pod's node address: routed via the
// host port) gets its flow masqueraded to the gateway, or the node's stack
// would drop the packet coming back in on weft0 with its own source; the
// reply, to the gateway, is translated back to the node. A pod's flow to
// the same backend keeps its source (the node's stack masquerades it on
// the way out), and so does the node's flow to a pod backend.
func TestServiceHostToOutsideBackend(t *testing.T) {
	outside := netip.MustParseAddr("192.168.60.11")
	s := svcSwitch(t,
		tcpSvc("default/kubernetes:https", vipWeb, 443, backend(outside.String(), 6443, true)),
		tcpSvc("default/web:http", vipWeb, 80, backend(podBIP.String(), 8080, true)))
	if err := s.SetRoutes([]Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Kind: RouteLocal, Via: hostIP}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      PortID
		srcMAC  packet.MAC
		src     netip.Addr
		port    uint16
		wantOut PortID
		wantSrc netip.Addr
		wantDst netip.Addr
	}{
		{"node to a backend behind the node", portHost, hostMAC, hostIP, 443, portHost, gwIP, outside},
		{"pod to a backend behind the node", portA, podAMAC, podAIP, 443, portHost, podAIP, outside},
		{"node to a pod backend", portHost, hostMAC, hostIP, 80, portB, hostIP, podBIP},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sport := uint16(41000 + i)
			v, out := process(s, l4Frame(t, routerMAC, tc.srcMAC, tc.src, sport, vipWeb, tc.port, packet.IPProtoTCP, packet.TCPFlagSYN, 0), tc.in, sec)
			if v.Action != ActionDeliver || v.Port != tc.wantOut {
				t.Fatalf("verdict %+v, want deliver to port %d", v, tc.wantOut)
			}
			got := checkFrame(t, out, false)
			if got.src != tc.wantSrc || got.sport != sport || got.dst != tc.wantDst {
				t.Fatalf("frame %+v, want %s:%d -> %s", got, tc.wantSrc, sport, tc.wantDst)
			}
			// The backend's answer comes back to the source it saw.
			bport := uint16(6443)
			backMAC, backIn := hostMAC, portHost
			if tc.wantDst == podBIP {
				bport, backMAC, backIn = 8080, podBMAC, portB
			}
			v, out = process(s, l4Frame(t, routerMAC, backMAC, tc.wantDst, bport, tc.wantSrc, sport, packet.IPProtoTCP, packet.TCPFlagSYN|packet.TCPFlagACK, 0), backIn, 2*sec)
			if v.Action != ActionDeliver || v.Port != tc.in {
				t.Fatalf("reply verdict %+v, want deliver to port %d", v, tc.in)
			}
			got = checkFrame(t, out, false)
			if got.src != vipWeb || got.sport != tc.port || got.dst != tc.src || got.dport != sport {
				t.Fatalf("reply %+v, want %s:%d -> %s:%d", got, vipWeb, tc.port, tc.src, sport)
			}
		})
	}
}

// sessionAffinity ClientIP keeps a client on one backend; turning it off
// spreads the client's new flows again, and turning it on takes effect
// for the next new flow.
func TestServiceAffinity(t *testing.T) {
	var bs []ServiceBackend
	for _, ip := range []string{"10.244.2.7", "10.244.2.8", "10.244.2.9", "10.244.2.10"} {
		bs = append(bs, backend(ip, 8080, true))
	}
	sp := tcpSvc("default/web:http", vipWeb, 80, bs...)
	sp.AffinityTimeout = 10 * time.Second
	s := svcSwitch(t, sp)
	backendsOf := func(port0 uint16, now int64) map[netip.Addr]int {
		seen := map[netip.Addr]int{}
		for i := range 40 {
			v, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, port0+uint16(i), vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, now)
			if v.Action != ActionEncap {
				t.Fatalf("verdict %+v", v)
			}
			seen[checkFrame(t, out, false).dst]++
		}
		return seen
	}
	if seen := backendsOf(10000, sec); len(seen) != 1 {
		t.Fatalf("affinity on: flows went to %v", seen)
	}
	sp.AffinityTimeout = 0
	if err := s.SetServices([]ServiceSpec{sp}); err != nil {
		t.Fatal(err)
	}
	if seen := backendsOf(20000, 2*sec); len(seen) < 3 {
		t.Fatalf("affinity off: flows went to %v", seen)
	}
	sp.AffinityTimeout = 10 * time.Second
	if err := s.SetServices([]ServiceSpec{sp}); err != nil {
		t.Fatal(err)
	}
	if seen := backendsOf(30000, 3*sec); len(seen) != 1 {
		t.Fatalf("affinity back on: flows went to %v", seen)
	}
}

// The affinity entry wins over Maglev while fresh: when a backend is added
// the client stays where it was; after the timeout it may move.
func TestServiceAffinityTimeout(t *testing.T) {
	sp := tcpSvc("default/web:http", vipWeb, 80, backend("10.244.2.7", 8080, true))
	sp.AffinityTimeout = 10 * time.Second
	s := svcSwitch(t, sp)
	_, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 10000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	first := checkFrame(t, out, false).dst
	var bs []ServiceBackend
	for i := range 20 {
		bs = append(bs, backend(netip.AddrFrom4([4]byte{10, 244, 2, byte(7 + i)}).String(), 8080, true))
	}
	sp.Backends = bs
	if err := s.SetServices([]ServiceSpec{sp}); err != nil {
		t.Fatal(err)
	}
	_, out = process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 10001, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, 5*sec)
	if got := checkFrame(t, out, false).dst; got != first {
		t.Fatalf("within the timeout the client moved from %s to %s", first, got)
	}
	trace := traceText(s, l4Frame(t, routerMAC, podAMAC, podAIP, 10002, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, 6*sec)
	if !strings.Contains(trace, "session affinity") {
		t.Fatalf("trace does not say affinity:\n%s", trace)
	}
}

func traceText(s *Switch, f []byte, in PortID, now int64) string {
	_, steps := s.Trace(f, in, now)
	var b strings.Builder
	for _, st := range steps {
		b.WriteString(st.Stage + ": " + st.Decision + "\n")
	}
	return b.String()
}

// A removed backend: UDP flows to it are flushed, so the client's next
// datagram goes to a live backend; TCP flows to it are flushed too, and
// the next segment is picked up by a live backend (which resets it). A
// backend that is only not ready keeps its TCP flows (drain).
func TestServiceBackendRemoved(t *testing.T) {
	b1, b2 := backend("10.244.2.7", 53, true), backend("10.244.2.8", 53, true)
	udp := udpSvc("kube-system/dns:dns", vipDNS, 53, b1, b2)
	tcp := tcpSvc("kube-system/dns:dns-tcp", vipDNS, 53, b1, b2)
	s := svcSwitch(t, udp, tcp)
	// Find a client port of each protocol whose flow lands on b1.
	onB1 := func(proto uint8, flags uint8) uint16 {
		for p := uint16(1000); p < 2000; p++ {
			_, steps := s.Trace(l4Frame(t, routerMAC, podAMAC, podAIP, p, vipDNS, 53, proto, flags, 10), portA, sec)
			for _, st := range steps {
				if st.Stage == StageService && strings.Contains(st.Decision, "backend 10.244.2.7:53") {
					return p
				}
			}
		}
		t.Fatal("no client port maps to b1")
		return 0
	}
	up, tp := onB1(packet.IPProtoUDP, 0), onB1(packet.IPProtoTCP, packet.TCPFlagSYN)
	send := func(sport uint16, proto, flags uint8, now int64) netip.Addr {
		t.Helper()
		v, out := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, sport, vipDNS, 53, proto, flags, 10), portA, now)
		if v.Action != ActionEncap {
			t.Fatalf("verdict %+v", v)
		}
		return checkFrame(t, out, false).dst
	}
	if send(up, packet.IPProtoUDP, 0, sec) != b1.Addr || send(tp, packet.IPProtoTCP, packet.TCPFlagSYN, sec) != b1.Addr {
		t.Fatal("flows not on b1")
	}
	// b1 not ready but still serving (terminating): UDP flows flushed, TCP kept.
	b1t := b1
	b1t.Ready, b1t.Terminating = false, true
	udp.Backends, tcp.Backends = []ServiceBackend{b1t, b2}, []ServiceBackend{b1t, b2}
	if err := s.SetServices([]ServiceSpec{udp, tcp}); err != nil {
		t.Fatal(err)
	}
	if got := send(up, packet.IPProtoUDP, 0, 2*sec); got != b2.Addr {
		t.Fatalf("UDP after b1 left the ready set: to %s", got)
	}
	if got := send(tp, packet.IPProtoTCP, packet.TCPFlagACK, 2*sec); got != b1.Addr {
		t.Fatalf("TCP to a terminating, serving backend must drain, went to %s", got)
	}
	// b1 removed: TCP flow flushed; its next segment is picked up to b2.
	udp.Backends, tcp.Backends = []ServiceBackend{b2}, []ServiceBackend{b2}
	if err := s.SetServices([]ServiceSpec{udp, tcp}); err != nil {
		t.Fatal(err)
	}
	if got := send(tp, packet.IPProtoTCP, packet.TCPFlagACK, 3*sec); got != b2.Addr {
		t.Fatalf("TCP after b1 was removed: to %s", got)
	}
	if c := s.Counters().Conntrack; c.Flushed != 2 {
		t.Fatalf("flushed %d flows, want 2 (UDP, then TCP)", c.Flushed)
	}
}

// 1,000 new connections from several clients land on every backend within
// ±25 % of an even share.
func TestServiceSpreading(t *testing.T) {
	var bs []ServiceBackend
	for i := range 5 {
		bs = append(bs, backend(netip.AddrFrom4([4]byte{10, 244, 2, byte(10 + i)}).String(), 8080, true))
	}
	s := svcSwitch(t, tcpSvc("default/web:http", vipWeb, 80, bs...))
	count := map[netip.Addr]int{}
	clients := []struct {
		mac  packet.MAC
		ip   netip.Addr
		port PortID
	}{{podAMAC, podAIP, portA}, {podBMAC, podBIP, portB}, {hostMAC, hostIP, portHost}}
	for i := range 1000 {
		c := clients[i%3]
		v, out := process(s, l4Frame(t, routerMAC, c.mac, c.ip, uint16(20000+i), vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), c.port, sec)
		if v.Action != ActionEncap {
			t.Fatalf("flow %d: %+v", i, v)
		}
		count[checkFrame(t, out, false).dst]++
	}
	for _, b := range bs {
		if n := count[b.Addr]; n < 150 || n > 250 {
			t.Errorf("backend %s: %d of 1000", b.Addr, n)
		}
	}
}

// A full conntrack table drops new service flows (counted) and never grows.
func TestServiceConntrackFull(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.Conntrack = conntrack.Config{Size: conntrack.MinSize} })
	if err := s.SetServices([]ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))}); err != nil {
		t.Fatal(err)
	}
	for i := range conntrack.MinSize + 5 {
		process(s, l4Frame(t, routerMAC, podAMAC, podAIP, uint16(20000+i), vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
	}
	c := s.Counters()
	if c.Drops[DropCTFull] != 5 || c.Conntrack.Entries != conntrack.MinSize || c.Conntrack.Full != 5 {
		t.Fatalf("counters: drops %d, conntrack %+v", c.Drops[DropCTFull], c.Conntrack)
	}
}

// A RST to a cluster IP with no flow does not open one.
func TestServiceStrayRST(t *testing.T) {
	s := svcSwitch(t, tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true)))
	v, _ := process(s, l4Frame(t, routerMAC, podAMAC, podAIP, 20000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagRST, 0), portA, sec)
	if v.Action != ActionDrop || v.Reason != DropCTInvalid || s.Counters().Conntrack.Entries != 0 {
		t.Fatalf("verdict %+v", v)
	}
}

// weft trace shows the service stage: the new flow and its backend, then,
// once the flow exists, the conntrack hit; a trace tracks nothing.
func TestTraceServiceStage(t *testing.T) {
	s := svcSwitch(t, tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true)))
	f := l4Frame(t, routerMAC, podAMAC, podAIP, 20000, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0)
	tr := traceText(s, f, portA, sec)
	for _, want := range []string{"service: service default/web:http: new flow, backend 10.244.2.7:8080 (maglev)", "encap to peer"} {
		if !strings.Contains(tr, want) {
			t.Fatalf("trace lacks %q:\n%s", want, tr)
		}
	}
	if s.Counters().Conntrack.Entries != 0 {
		t.Fatal("a trace inserted a flow")
	}
	process(s, withCap(f), portA, sec)
	tr = traceText(s, f, portA, 2*sec)
	for _, want := range []string{"conntrack: 10.244.1.3:20000 > 10.96.0.10:80 proto 6: flow found (original direction, syn_sent)",
		"service: service default/web:http: conntrack hit, backend 10.244.2.7:8080"} {
		if !strings.Contains(tr, want) {
			t.Fatalf("trace lacks %q:\n%s", want, tr)
		}
	}
	tr = traceText(s, l4Frame(t, routerMAC, peerMAC, remoteBE, 8080, podAIP, 20000, packet.IPProtoTCP, packet.TCPFlagSYN|packet.TCPFlagACK, 0), portOverlay, 2*sec)
	if !strings.Contains(tr, "reply from backend 10.244.2.7:8080, source rewritten to 10.96.0.10:80") {
		t.Fatalf("reply trace:\n%s", tr)
	}
}

// Workers run Process concurrently over new and established service flows
// while the control plane swaps services and expires; run with -race.
func TestServiceConcurrent(t *testing.T) {
	s := svcSwitch(t, tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true), backend(remoteBE2.String(), 8080, true)))
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frames := make([][]byte, 1)
			out := make([]Verdict, 1)
			for i := range 2000 {
				frames[0] = l4Frame(t, routerMAC, podAMAC, podAIP, uint16(10000+(i%500)+w*1000), vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagACK, 10)
				s.Process(frames, portA, out, int64(i))
				if out[0].Action != ActionEncap {
					t.Errorf("verdict %+v", out[0])
					return
				}
			}
		}()
	}
	for i := range 50 {
		bs := []ServiceBackend{backend(remoteBE.String(), 8080, true)}
		if i%2 == 0 {
			bs = append(bs, backend(remoteBE2.String(), 8080, true))
		}
		if err := s.SetServices([]ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, bs...)}); err != nil {
			t.Fatal(err)
		}
		s.Expire(int64(i))
	}
	wg.Wait()
}

// Conntrack is not persisted: after a weftd restart the switch is new and
// empty. A mid-stream segment of an established flow is picked up (TCP
// loose pickup, as the kernel's nf_conntrack_tcp_loose) and, because
// backend choice is a seedless hash of the flow, lands on the same
// backend as before the restart, so the connection carries on; the
// backend's replies are reverse-translated again from then on.
func TestServiceFlowSurvivesRestart(t *testing.T) {
	var bs []ServiceBackend
	for i := range 8 {
		bs = append(bs, backend(netip.AddrFrom4([4]byte{10, 244, 2, byte(10 + i)}).String(), 8080, true))
	}
	sp := tcpSvc("default/web:http", vipWeb, 80, bs...)
	before := svcSwitch(t, sp)
	after := svcSwitch(t, sp)
	for p := uint16(30000); p < 30050; p++ {
		_, out := process(before, l4Frame(t, routerMAC, podAMAC, podAIP, p, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 0), portA, sec)
		was := checkFrame(t, out, false).dst
		v, out := process(after, l4Frame(t, routerMAC, podAMAC, podAIP, p, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagACK, 100), portA, 2*sec)
		if v.Action != ActionEncap {
			t.Fatalf("port %d after restart: %+v", p, v)
		}
		if now := checkFrame(t, out, false).dst; now != was {
			t.Fatalf("port %d: backend %s before the restart, %s after", p, was, now)
		}
		v, out = process(after, l4Frame(t, routerMAC, peerMAC, was, 8080, podAIP, p, packet.IPProtoTCP, packet.TCPFlagACK, 100), portOverlay, 2*sec)
		if got := checkFrame(t, out, false); v.Action != ActionDeliver || got.src != vipWeb || got.sport != 80 {
			t.Fatalf("port %d: reply after restart %+v %+v", p, v, got)
		}
	}
}
