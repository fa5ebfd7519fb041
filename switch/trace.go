package vswitch

import (
	"fmt"
	"strings"

	"github.com/weftnet/weft/packet"
)

// TraceStep is one stage's decision in a Trace.
type TraceStep struct {
	Stage    string `json:"stage"`
	Decision string `json:"decision"`
}

// tracer collects steps for Trace. The stages take it through frameCtx;
// on the hot path it is nil and every trace call sits behind a nil check,
// so the hot path formats nothing.
type tracer struct{ steps []TraceStep }

func (t *tracer) add(stage, format string, args ...any) {
	t.steps = append(t.steps, TraceStep{Stage: stage, Decision: fmt.Sprintf(format, args...)})
}

// Trace runs a copy of frame through the live pipeline, as if it arrived on
// port in at time now, without side effects: nothing is learned or
// counted, no rate-limit token is spent, frame is not modified. It runs
// the same stage code as Process and returns the verdict and each stage's
// decision; the output step describes the frame as it would leave.
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
func (t *routeTable) routesByIndex(i uint32) Route { return t.compiled[i] }

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
