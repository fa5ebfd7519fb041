package vswitch

import (
	"errors"
	"fmt"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/policy"
	"github.com/weftnet/weft/switch/conntrack"
)

// StagePolicy names the NetworkPolicy stage in traces.
const StagePolicy = "policy"

// SetPolicy publishes the policy snapshot the policy stage decides with.
// nil (the default) means no policy stage: everything passes. The node
// publishes policy.NewEngine's not-ready snapshot before any pod port is
// up, so a starting node denies until its policies are loaded.
func (s *Switch) SetPolicy(p *policy.Snapshot) { s.policy.Store(p) }

// policyStage is the NetworkPolicy stage, after service NAT (so it sees
// the backend pod, and the client as the source) and before L2/L3.
//
// TCP and UDP flows are decided on their first packet and the verdict
// rides in the conntrack entry (policy.Verdict); replies of an allowed
// flow pass on it. When the policies change (a new snapshot generation),
// the next packet of each flow, either direction, decides the flow again:
// a flow no longer allowed is cut (dropped from then on), one allowed
// again passes again. A TCP packet without SYN that belongs to no known
// flow (the entry expired, or weftd restarted) is taken up in whichever
// direction policy allows, as the kernel's nf_conntrack_tcp_loose does,
// so established connections survive a restart; it can never open one.
//
// Untracked IPv4 is decided per packet with port 0, so only a rule
// without ports admits it: ICMP echo requests and other protocols (an
// echo reply is admitted when its request would be), and fragments, whose
// later pieces have no ports. ICMP errors pass: they belong to a flow
// (path MTU discovery needs them) and weft does not match them to it yet.
//
// A snapshot that isolates no pod (Active false) skips the stage: no
// decision and no conntrack entry, so policies cost nothing until one
// selects a pod.
func (c *frameCtx) policyStage(f []byte, v *Verdict) bool {
	snap := c.pol
	if snap == nil || !snap.Active() || c.et != packet.EtherTypeIPv4 {
		return true
	}
	fl := &c.flow
	if !fl.tracked {
		return c.policyUntracked(f, v, snap)
	}
	if fl.found || fl.hit.Service != 0 {
		// A known flow, or one service NAT inserted for this very packet.
		pf := policyFlowOf(fl)
		pv := policy.Verdict(fl.hit.Verdict)
		if pv == 0 || !snap.Current(pv) {
			d := snap.Decide(pf, policy.CheckBoth)
			c.tracePolicy(snap, pf, d, "decided again (new flow or new policies)")
			nv := d.Verdict()
			if !c.dry {
				c.s.ct.SetVerdict(origTuple(fl), &fl.hit, uint32(nv))
			}
			if !nv.Allowed() {
				return c.policyDrop(v, snap, d, policyDropReason(d))
			}
			return true
		}
		if !pv.Allowed() {
			// A flow cut earlier: its verdict says denied, not by whom.
			// Decide again (cheap, no allocation) to count it under the
			// policies isolating it, as its first denied packet was.
			if !c.dry {
				snap.CountDrop(snap.Decide(pf, policy.CheckBoth))
			}
			return c.drop(v, DropPolicyFlow, StagePolicy)
		}
		c.trace(StagePolicy, step{kind: stepPolicyKept})
		return true
	}
	pf := policy.Flow{Src: keyBytes(fl.tuple.Src), Dst: keyBytes(fl.tuple.Dst), Proto: fl.tuple.Proto, DstPort: fl.tuple.DstPort}
	d := snap.Decide(pf, policy.CheckBoth)
	orig, reply := fl.tuple, fl.tuple.Reverse()
	if !d.Allowed && fl.tuple.Proto == packet.IPProtoTCP && fl.tcpFlags&(packet.TCPFlagSYN|packet.TCPFlagRST) == 0 {
		// Mid-stream TCP with no flow: perhaps the reply of a connection
		// the other side opened. Take it up that way if policy allows.
		rf := policy.Flow{Src: pf.Dst, Dst: pf.Src, Proto: pf.Proto, DstPort: fl.tuple.SrcPort}
		if rd := snap.Decide(rf, policy.CheckBoth); rd.Allowed {
			d, pf, orig, reply = rd, rf, reply, orig
		}
	}
	c.tracePolicy(snap, pf, d, "new flow")
	if !d.Allowed {
		return c.policyDrop(v, snap, d, policyDropReason(d))
	}
	if c.dry || fl.tcpFlags&packet.TCPFlagRST != 0 {
		return true // a RST passes when allowed but opens nothing
	}
	switch err := c.s.ct.Insert(&orig, &reply, 0, uint32(d.Verdict()), fl.tcpFlags, c.now, &fl.hit); {
	case errors.Is(err, conntrack.ErrFull):
		return c.drop(v, DropCTFull, StagePolicy)
	case err != nil:
		return c.drop(v, DropCTClash, StagePolicy)
	}
	return true
}

// policyUntracked decides IPv4 that conntrack does not track.
func (c *frameCtx) policyUntracked(f []byte, v *Verdict, snap *policy.Snapshot) bool {
	ip := packet.IPv4(f[packet.EthHdrLen:])
	pf := policy.Flow{Src: ip.Src4(), Dst: ip.Dst4(), Proto: ip.Proto()}
	note := "untracked: decided per packet, port 0"
	if pf.Proto == packet.IPProtoICMP && !ip.IsLaterFragment() {
		hl := ip.HeaderLen()
		if packet.EthHdrLen+hl < len(f) {
			switch typ := f[packet.EthHdrLen+hl]; {
			case typ == packet.ICMPEchoReply:
				pf.Src, pf.Dst = pf.Dst, pf.Src // admitted when its request would be
				note = "echo reply: decided as its request"
			case !packet.ICMPIsInformational(typ):
				c.trace(StagePolicy, step{kind: stepPolicyICMPError})
				return true
			}
		}
	}
	d := snap.Decide(pf, policy.CheckBoth)
	c.tracePolicy(snap, pf, d, note)
	if !d.Allowed {
		return c.policyDrop(v, snap, d, policyDropReason(d))
	}
	return true
}

// policyDrop drops a frame policy denied, counting it under the policies
// that isolate the denied side (the per-reason count is output's).
func (c *frameCtx) policyDrop(v *Verdict, snap *policy.Snapshot, d policy.Decision, r DropReason) bool {
	if !c.dry {
		snap.CountDrop(d)
	}
	return c.drop(v, r, StagePolicy)
}

// tracePolicy reports a policy decision. Its description needs the
// snapshot to explain the decision, so it is a heap object: built only
// when tracing, behind trace's own nil check, so the hot path pays that
// check and nothing else.
func (c *frameCtx) tracePolicy(snap *policy.Snapshot, f policy.Flow, d policy.Decision, note string) {
	if c.tr != nil {
		c.record(StagePolicy, &step{kind: stepPolicy, pol: &policyTrace{snap: snap, flow: f, d: d, note: note}})
	}
}

// policyFlowOf is the flow a tracked packet belongs to, as policy sees
// it: the client (the original direction's source, before any hairpin
// masquerade) to the backend (the reply direction's source, after DNAT).
func policyFlowOf(fl *flowCtx) policy.Flow {
	orig, reply := fl.tuple, fl.hit.Other
	if fl.hit.Dir == conntrack.DirReply {
		orig, reply = fl.hit.Other, fl.tuple
	}
	return policy.Flow{Src: keyBytes(orig.Src), Dst: keyBytes(reply.Src), Proto: orig.Proto, DstPort: reply.SrcPort}
}

// origTuple is the original-direction tuple of the packet's flow.
func origTuple(fl *flowCtx) *conntrack.Tuple {
	if fl.hit.Dir == conntrack.DirReply {
		return &fl.hit.Other
	}
	return &fl.tuple
}

func policyDropReason(d policy.Decision) DropReason {
	switch d.Why {
	case policy.WhyEgressIsolated:
		return DropPolicyEgress
	case policy.WhyIngressIsolated:
		return DropPolicyIngress
	}
	return DropPolicyNotReady
}

func keyBytes(k uint32) [4]byte { return [4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)} }

// policyTrace is what a trace shows of a policy decision; built only when
// tracing.
type policyTrace struct {
	snap *policy.Snapshot
	flow policy.Flow
	d    policy.Decision
	note string
}

func (p *policyTrace) String() string {
	f := p.flow
	return fmt.Sprintf("%d.%d.%d.%d -> %d.%d.%d.%d proto %d port %d (%s, generation %d): %s",
		f.Src[0], f.Src[1], f.Src[2], f.Src[3], f.Dst[0], f.Dst[1], f.Dst[2], f.Dst[3], f.Proto, f.DstPort,
		p.note, p.d.Gen, p.snap.Explain(f, p.d))
}
