package vswitch

import (
	"fmt"
	"strings"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/switch/conntrack"
)

// TraceStep is one stage's decision in a Trace.
type TraceStep struct {
	Stage    string `json:"stage"`
	Decision string `json:"decision"`
}

// How a stage reports: it calls c.trace(stage, step{...}) once per
// decision, with the decision as plain values (a kind, a port, a MAC or
// address key, a reason). On the hot path the tracer is nil and trace is
// an inlined nil check: nothing is formatted, nothing allocates. Only a
// Trace turns steps into text, in one place (describe, below), so a new
// stage adds a step kind and a line to describe, not a branch per
// decision.
type tracer struct{ steps []TraceStep }

// stepKind names a decision a stage can report.
type stepKind uint8

const (
	stepDrop stepKind = iota
	stepAccepted
	stepOverlayAccepted
	stepFromOverlay
	stepWouldLearn
	stepWouldLearnNeigh
	stepARPForRouter
	stepToRouter
	stepFDBHit
	stepFlood
	stepRouted
	stepARPLimited
	stepARPRequest
	stepARPReply
	stepEchoReply
	stepNoICMP
	stepNoICMPRoute
	stepICMPError
	stepUntracked
	stepCTHit
	stepCTMiss
	stepSvcNew
	stepSvcHit
	stepSvcReply
	stepSvcReplyRecovered
	stepSvcReplyUnrecovered
	stepSvcFragment
	stepSvcReject
	stepSvcNoLocal
	stepPolicy
	stepPolicyKept
	stepPolicyICMPError
)

// step is one decision, as data: small, so that building one for a nil
// tracer costs a few register moves.
type step struct {
	kind   stepKind
	reason DropReason
	port   PortID
	n      int32  // a number: TTL, EtherType, ICMP type<<8|code, backend port
	ip     uint32 // an address (key form)
	svc    uint32 // a service frontend id
	mac    uint64 // a MAC (key form)
	why    string // a constant string, never formatted on the hot path
	// pol is the policy stage's decision; built only when tracing
	// (tracePolicy), the decision being a heap object.
	pol *policyTrace
}

// trace reports a stage's decision; a no-op unless tracing (inlined: one
// nil check on the hot path).
func (c *frameCtx) trace(stage string, st step) {
	if c.tr != nil {
		c.record(stage, &st)
	}
}

//go:noinline
func (c *frameCtx) record(stage string, st *step) {
	c.tr.steps = append(c.tr.steps, TraceStep{Stage: stage, Decision: c.describe(st)})
}

// traceVerdict reports the output stage's description of the frame as it
// leaves (dry runs only).
func (c *frameCtx) traceVerdict(f []byte, v *Verdict) {
	c.tr.steps = append(c.tr.steps, TraceStep{Stage: StageOutput, Decision: c.describeVerdict(f, v)})
}

// describe turns a step into the text weft trace prints.
func (c *frameCtx) describe(st *step) string {
	switch st.kind {
	case stepDrop:
		return fmt.Sprintf("drop: %s", st.reason)
	case stepAccepted:
		return fmt.Sprintf("%s port %d: %s accepted", c.in.kind, st.port, etherTypeName(uint16(st.n)))
	case stepOverlayAccepted:
		return fmt.Sprintf("overlay port %d: IPv4 to the router MAC, accepted", st.port)
	case stepFromOverlay:
		return "from the overlay: no learning, to the router"
	case stepWouldLearn:
		return c.s.fdb.describeLearn(st.mac, st.port, c.now)
	case stepWouldLearnNeigh:
		return fmt.Sprintf("would learn neighbour %s at %s port %d", keyIP4(st.ip), keyMAC(st.mac), st.port)
	case stepARPForRouter:
		return "ARP for the router"
	case stepToRouter:
		return fmt.Sprintf("dst %s is the router MAC: route", keyMAC(st.mac))
	case stepFDBHit:
		return fmt.Sprintf("fdb: %s on port %d", keyMAC(st.mac), st.port)
	case stepFlood:
		return st.why + ": flood"
	case stepRouted:
		return fmt.Sprintf("route %s: %s, next hop %s, ttl now %d", keyIP4(st.ip), c.routeName(st.ip), keyMAC(st.mac), st.n)
	case stepARPLimited:
		return fmt.Sprintf("neighbour %s unknown; ARP request rate-limited", keyIP4(st.ip))
	case stepARPRequest:
		return fmt.Sprintf("neighbour %s unknown: drop, send ARP request (flood)", keyIP4(st.ip))
	case stepARPReply:
		return fmt.Sprintf("ARP who-has %s: reply %s", c.s.gateway, c.s.routerMAC)
	case stepEchoReply:
		return "echo request to the gateway: reply"
	case stepNoICMP:
		return "no ICMP error: " + st.why
	case stepNoICMPRoute:
		return fmt.Sprintf("no ICMP error: no peer route back to %s", keyIP4(st.ip))
	case stepICMPError:
		return fmt.Sprintf("%s: ICMP type %d code %d to %s", st.reason, st.n>>8, st.n&0xff, keyIP4(st.ip))
	case stepUntracked:
		return "not tracked: " + st.why
	case stepCTMiss:
		return fmt.Sprintf("%s: no flow", c.flow.tuple)
	case stepCTHit:
		h := &c.flow.hit
		dir := "original"
		if h.Dir == conntrack.DirReply {
			dir = "reply"
		}
		return fmt.Sprintf("%s: flow found (%s direction, %s)", c.flow.tuple, dir, h.State)
	case stepSvcNew:
		return fmt.Sprintf("service %s: new flow, backend %s:%d (%s)", c.svcName(st.svc), keyIP4(st.ip), st.n, st.why)
	case stepSvcHit:
		return fmt.Sprintf("service %s: conntrack hit, backend %s:%d", c.svcName(c.flow.hit.Service), c.flow.hit.Other.SrcAddr(), c.flow.hit.Other.SrcPort)
	case stepSvcReply:
		return fmt.Sprintf("service %s: reply from backend %s:%d, source rewritten to %s:%d", c.svcName(c.flow.hit.Service),
			c.flow.tuple.SrcAddr(), c.flow.tuple.SrcPort, c.flow.hit.Other.DstAddr(), c.flow.hit.Other.DstPort)
	case stepSvcReplyRecovered:
		return fmt.Sprintf("service %s: reply from backend %s:%d with no flow (restart?): flow recovered, source rewritten to %s:%d", c.svcName(st.svc),
			c.flow.tuple.SrcAddr(), c.flow.tuple.SrcPort, c.flow.hit.Other.DstAddr(), c.flow.hit.Other.DstPort)
	case stepSvcReplyUnrecovered:
		return fmt.Sprintf("service: packet from backend %s:%d with no flow: no single frontend would have picked it for this client, left untouched",
			c.flow.tuple.SrcAddr(), c.flow.tuple.SrcPort)
	case stepSvcFragment:
		return "service: a later IP fragment of a translated datagram: addresses rewritten as its first fragment's"
	case stepSvcReject:
		return fmt.Sprintf("service %s: no ready endpoints: refuse (ICMP port unreachable from the cluster IP)", c.svcName(st.svc))
	case stepPolicy:
		return st.pol.String()
	case stepPolicyKept:
		return "flow allowed when it started, policies unchanged since"
	case stepPolicyICMPError:
		return "ICMP error: passes (it belongs to a flow)"
	case stepSvcNoLocal:
		return fmt.Sprintf("service %s: internalTrafficPolicy Local and no endpoint on this node: drop", c.svcName(st.svc))
	}
	return fmt.Sprintf("step %d", st.kind)
}

// svcName names the frontend a conntrack entry points at.
func (c *frameCtx) svcName(id uint32) string {
	if f := c.services.frontend(id); f != nil {
		return f.spec.Name
	}
	return fmt.Sprintf("#%d (removed)", id)
}

// Trace runs a copy of frame through the live pipeline, as if it arrived on
// port in at time now, without side effects: nothing is learned or
// counted, no rate-limit token is spent, no flow is tracked, frame is not
// modified. It runs the same stage code as Process and returns the verdict
// and each stage's decision; the output step describes the frame as it
// would leave.
func (s *Switch) Trace(frame []byte, in PortID, now int64) (Verdict, []TraceStep) {
	buf := make([]byte, len(frame), len(frame)+maxICMPErrLen)
	copy(buf, frame)
	tr := &tracer{}
	c := s.newCtx(in, now, tr)
	var v Verdict
	c.pipeline(&buf, &v)
	return v, tr.steps
}

func etherTypeName(et uint16) string {
	switch et {
	case packet.EtherTypeIPv4:
		return "IPv4"
	case packet.EtherTypeARP:
		return "ARP"
	case packet.EtherTypeIPv6:
		return "IPv6"
	}
	return fmt.Sprintf("EtherType %#04x", et)
}

// describeLearn says what learning src on port would do, without doing it.
func (t *fdb) describeLearn(key uint64, port PortID, now int64) string {
	mac := keyMAC(key)
	i := t.find(key)
	if i < 0 {
		return fmt.Sprintf("would learn %s on port %d", mac, port)
	}
	s := &t.slots[i]
	if old := PortID(s.kv.Load()); old != port {
		return fmt.Sprintf("would move %s from port %d to port %d", mac, old, port)
	}
	if now-s.seen.Load() >= t.refresh {
		return fmt.Sprintf("would refresh %s on port %d", mac, port)
	}
	return fmt.Sprintf("%s already on port %d", mac, port)
}

func (c *frameCtx) routeName(dst uint32) string {
	v, ok := c.routes.trie.lookup(dst)
	if !ok {
		return "no route"
	}
	return c.routes.routesByIndex(v).String()
}

// routesByIndex returns the route compiled at index i.
func (t *routeTable) routesByIndex(i uint32) Route { return t.routes[i] }

func (c *frameCtx) describeVerdict(f []byte, v *Verdict) string {
	var b strings.Builder
	switch v.Action {
	case ActionDrop:
		fmt.Fprintf(&b, "drop (%s)", v.Reason)
		return b.String()
	case ActionDeliver:
		fmt.Fprintf(&b, "deliver to port %d", v.Port)
	case ActionFlood:
		fmt.Fprintf(&b, "flood to ports %v", c.s.FloodSet(v.Port, nil))
	case ActionEncap:
		fmt.Fprintf(&b, "encap to peer %s", v.Peer)
	}
	if v.Reply {
		b.WriteString(" (reply")
		if v.Reason != DropNone {
			fmt.Fprintf(&b, " to %s", v.Reason)
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(describeFrame(f))
	return b.String()
}

// describeFrame summarises a frame's headers for traces.
func describeFrame(f []byte) string {
	if len(f) < packet.EthHdrLen {
		return fmt.Sprintf("%d bytes", len(f))
	}
	s := fmt.Sprintf("%d bytes %s > %s %s", len(f), packet.EthSrc(f), packet.EthDst(f), etherTypeName(packet.EthType(f)))
	l3 := f[packet.EthHdrLen:]
	switch packet.EthType(f) {
	case packet.EtherTypeIPv4:
		if ip := packet.IPv4(l3); ip.Valid() {
			s += fmt.Sprintf(" %s > %s proto %d ttl %d", ip.Src(), ip.Dst(), ip.Proto(), ip.TTL())
		}
	case packet.EtherTypeARP:
		if a := packet.ARP(l3); a.Valid() {
			if a.Op() == packet.ARPOpRequest {
				s += fmt.Sprintf(" who-has %s tell %s", a.TargetIP(), a.SenderIP())
			} else {
				s += fmt.Sprintf(" %s is-at %s", a.SenderIP(), a.SenderMAC())
			}
		}
	}
	return s
}
