package vswitch

import (
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
)

// After a weftd restart conntrack is empty. When a service flow's backend
// sends before its client does (a retransmitted reply, a server push),
// the fresh switch reverse-translates the packet and tracks the flow if
// exactly one frontend would have picked that backend for that client;
// otherwise it leaves the packet alone and counts it.
func TestServiceReplyRecoveredAfterRestart(t *testing.T) {
	const cport = 40000
	var eight []ServiceBackend
	for i := range 8 {
		eight = append(eight, backend(netip.AddrFrom4([4]byte{10, 244, 2, byte(10 + i)}).String(), 8080, true))
	}
	affine := tcpSvc("default/sticky:http", vipWeb, 80, eight...)
	affine.AffinityTimeout = time.Minute
	// chosen is the backend the switch picked for podA:cport before the
	// restart (first element of the service's backends if only one).
	chosen := func(t *testing.T, sp ServiceSpec) netip.Addr {
		before := svcSwitch(t, sp)
		_, out := process(before, l4Frame(t, routerMAC, podAMAC, podAIP, cport, sp.ClusterIP, sp.Port, sp.Proto, packet.TCPFlagSYN, 0), portA, sec)
		return checkFrame(t, out, false).dst
	}
	type pkt struct {
		src   netip.Addr
		sport uint16
		dst   netip.Addr
		dport uint16
		flags uint8
		in    PortID
		mac   packet.MAC
	}
	for _, tc := range []struct {
		name    string
		svcs    []ServiceSpec
		proto   uint8
		first   []pkt                                      // sent to the fresh switch before the reply (direct traffic)
		reply   func(t *testing.T, svcs []ServiceSpec) pkt // the backend's packet
		want    netip.Addr                                 // source after the switch; invalid: unchanged
		wantDst netip.Addr                                 // destination after the switch, if recovered
		service string                                     // the recovered flow's service, "" none
		counted bool                                       // counted as reply_unrecovered
	}{
		{
			name: "tcp one backend", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 8080, podAIP, cport, packet.TCPFlagACK | packet.TCPFlagPSH, portOverlay, peerMAC}
			},
			want: vipWeb, wantDst: podAIP, service: "default/web:http",
		},
		{
			name: "udp one backend", svcs: []ServiceSpec{udpSvc("kube-system/dns:dns", vipDNS, 53, backend(remoteBE.String(), 5353, true))},
			proto: packet.IPProtoUDP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 5353, podAIP, cport, 0, portOverlay, peerMAC}
			},
			want: vipDNS, wantDst: podAIP, service: "kube-system/dns:dns",
		},
		{
			name: "tcp to the host port", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 8080, hostIP, cport, packet.TCPFlagACK, portOverlay, peerMAC}
			},
			want: vipWeb, wantDst: hostIP, service: "default/web:http",
		},
		{
			name: "maglev's backend of eight", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, eight...)},
			proto: packet.IPProtoTCP,
			reply: func(t *testing.T, svcs []ServiceSpec) pkt {
				return pkt{chosen(t, svcs[0]), 8080, podAIP, cport, packet.TCPFlagACK, portOverlay, peerMAC}
			},
			want: vipWeb, wantDst: podAIP, service: "default/web:http",
		},
		{
			name: "another backend of eight: not this client's", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, eight...)},
			proto: packet.IPProtoTCP,
			reply: func(t *testing.T, svcs []ServiceSpec) pkt {
				be := chosen(t, svcs[0])
				other := eight[0].Addr
				if other == be {
					other = eight[1].Addr
				}
				return pkt{other, 8080, podAIP, cport, packet.TCPFlagACK, portOverlay, peerMAC}
			},
			counted: true,
		},
		{
			name: "session affinity", svcs: []ServiceSpec{affine},
			proto: packet.IPProtoTCP,
			reply: func(t *testing.T, svcs []ServiceSpec) pkt {
				return pkt{chosen(t, svcs[0]), 8080, podAIP, cport + 7, packet.TCPFlagACK, portOverlay, peerMAC}
			},
			want: vipWeb, wantDst: podAIP, service: "default/sticky:http",
		},
		{
			name: "ambiguous: two frontends would pick the backend",
			svcs: []ServiceSpec{
				tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true)),
				tcpSvc("default/web2:http", vipDNS, 80, backend(remoteBE.String(), 8080, true)),
			},
			proto: packet.IPProtoTCP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 8080, podAIP, cport, packet.TCPFlagACK, portOverlay, peerMAC}
			},
			counted: true,
		},
		{
			name: "hairpin: reply to the gateway", svcs: []ServiceSpec{tcpSvc("default/self:http", vipWeb, 80, backend(podAIP.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{podAIP, 8080, gwIP, cport, packet.TCPFlagACK, portA, podAMAC}
			},
			want: vipWeb, wantDst: podAIP, service: "default/self:http",
		},
		{
			name: "client on another node: not this node's flow", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(podBIP.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{podBIP, 8080, peerPodIP, cport, packet.TCPFlagACK, portB, podBMAC}
			},
		},
		{
			name: "SYN-ACK opens nothing", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 8080, podAIP, cport, packet.TCPFlagSYN | packet.TCPFlagACK, portOverlay, peerMAC}
			},
		},
		{
			name: "direct connection to the backend's pod address", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			first: []pkt{{podAIP, cport, remoteBE, 8080, packet.TCPFlagSYN, portA, podAMAC}},
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 8080, podAIP, cport, packet.TCPFlagSYN | packet.TCPFlagACK, portOverlay, peerMAC}
			},
		},
		{
			name: "direct connection, later segment", svcs: []ServiceSpec{tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))},
			proto: packet.IPProtoTCP,
			first: []pkt{{podAIP, cport, remoteBE, 8080, packet.TCPFlagSYN, portA, podAMAC}},
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 8080, podAIP, cport, packet.TCPFlagACK, portOverlay, peerMAC}
			},
		},
		{
			name: "direct udp from the host port", svcs: []ServiceSpec{udpSvc("kube-system/dns:dns", vipDNS, 53, backend(remoteBE.String(), 5353, true))},
			proto: packet.IPProtoUDP,
			first: []pkt{{hostIP, cport, remoteBE, 5353, 0, portHost, hostMAC}},
			reply: func(*testing.T, []ServiceSpec) pkt {
				return pkt{remoteBE, 5353, hostIP, cport, 0, portOverlay, peerMAC}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svcSwitch(t, tc.svcs...) // the restarted node: empty conntrack
			for _, p := range tc.first {
				process(s, l4Frame(t, routerMAC, p.mac, p.src, p.sport, p.dst, p.dport, tc.proto, p.flags, 10), p.in, sec)
			}
			p := tc.reply(t, tc.svcs)
			v, out := process(s, l4Frame(t, routerMAC, p.mac, p.src, p.sport, p.dst, p.dport, tc.proto, p.flags, 100), p.in, 2*sec)
			if v.Action == ActionDrop {
				t.Fatalf("verdict %+v", v)
			}
			got := checkFrame(t, out, false)
			c := s.Counters()
			flows := s.Conntrack(ConntrackFilter{}, 2*sec)
			if !tc.want.IsValid() {
				if got.src != p.src || got.sport != p.sport || got.dst != p.dst || got.dport != p.dport {
					t.Fatalf("packet changed: %+v", got)
				}
				if c.ReplyRecovered != 0 {
					t.Fatalf("recovered %d", c.ReplyRecovered)
				}
				for _, f := range flows {
					if f.Service != "" {
						t.Fatalf("service flow tracked: %+v", f)
					}
				}
				if want := uint64(0); tc.counted {
					want = 1
					if c.ReplyUnrecovered != want {
						t.Fatalf("reply_unrecovered %d, want %d", c.ReplyUnrecovered, want)
					}
				} else if c.ReplyUnrecovered != want {
					t.Fatalf("reply_unrecovered %d, want %d", c.ReplyUnrecovered, want)
				}
				return
			}
			if got.src != tc.want || got.sport != tc.svcs[0].Port || got.dst != tc.wantDst || got.dport != p.dport {
				t.Fatalf("reply not reverse-translated: %+v", got)
			}
			if c.ReplyRecovered != 1 || c.ReplyUnrecovered != 0 {
				t.Fatalf("recovered %d, unrecovered %d", c.ReplyRecovered, c.ReplyUnrecovered)
			}
			if len(flows) != 1 || flows[0].Service != tc.service {
				t.Fatalf("conntrack %+v", flows)
			}
			// The client's next packet is an established flow's: DNAT to
			// the same backend, no new flow.
			inserts := c.Conntrack.Inserts
			in, mac := portA, podAMAC
			if tc.wantDst == hostIP {
				in, mac = portHost, hostMAC
			}
			v, out = process(s, l4Frame(t, routerMAC, mac, tc.wantDst, p.dport, tc.want, tc.svcs[0].Port, tc.proto, packet.TCPFlagACK, 10), in, 3*sec)
			if v.Action == ActionDrop {
				t.Fatalf("client's next packet %+v", v)
			}
			if got := checkFrame(t, out, false); got.dst != p.src || got.dport != p.sport {
				t.Fatalf("client's next packet went to %s:%d, want %s:%d", got.dst, got.dport, p.src, p.sport)
			}
			if n := s.Counters().Conntrack.Inserts; n != inserts {
				t.Fatalf("client's next packet inserted a flow (%d -> %d)", inserts, n)
			}
			// The backend's next packet is the tracked flow's reply.
			v, out = process(s, l4Frame(t, routerMAC, p.mac, p.src, p.sport, p.dst, p.dport, tc.proto, p.flags, 100), p.in, 4*sec)
			if got := checkFrame(t, out, false); v.Action == ActionDrop || got.src != tc.want || got.dst != tc.wantDst {
				t.Fatalf("backend's next packet %+v %+v", v, got)
			}
			if c := s.Counters(); c.ReplyRecovered != 1 || c.Conntrack.Inserts != inserts {
				t.Fatalf("backend's next packet recovered again (%d) or inserted", c.ReplyRecovered)
			}
		})
	}
}

// Recovering a reply (a new flow per frame) and leaving an ambiguous one
// alone allocate nothing.
func TestServiceReplyRecoveryZeroAllocs(t *testing.T) {
	one := tcpSvc("default/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true))
	two := tcpSvc("default/web2:http", vipDNS, 80, backend(remoteBE.String(), 8080, true))
	for _, tc := range []struct {
		name      string
		svcs      []ServiceSpec
		recovered bool
	}{
		{"recovered", []ServiceSpec{one}, true},
		{"ambiguous", []ServiceSpec{one, two}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svcSwitch(t, tc.svcs...)
			tmpl := l4Frame(t, routerMAC, peerMAC, remoteBE, 8080, podAIP, 1, packet.IPProtoTCP, packet.TCPFlagACK, 10)
			f := withCap(tmpl)
			frames := [][]byte{f}
			out := make([]Verdict, 1)
			port := uint16(0)
			allocs := testing.AllocsPerRun(200, func() {
				port++
				frames[0] = frames[0][:len(tmpl)]
				copy(frames[0], tmpl)
				setPorts(frames[0], 8080, 1+port)
				s.Process(frames, portOverlay, out, sec)
			})
			if allocs != 0 {
				t.Fatalf("%.1f allocs per frame", allocs)
			}
			c := s.Counters()
			if got := c.ReplyRecovered > 0; got != tc.recovered || (c.ReplyUnrecovered > 0) == tc.recovered {
				t.Fatalf("recovered %d, unrecovered %d", c.ReplyRecovered, c.ReplyUnrecovered)
			}
		})
	}
}
