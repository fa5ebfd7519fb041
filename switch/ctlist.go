package vswitch

import (
	"net/netip"

	"github.com/weftnet/weft/switch/conntrack"
)

// ConntrackFilter selects flows for Conntrack and FlushConntrack: a flow
// matches if IP (when valid) is any address of either of its tuples and
// Port (when non-zero) any port of either tuple.
type ConntrackFilter struct {
	IP   netip.Addr
	Port uint16
	// Limit caps how many flows Conntrack returns (0: all).
	Limit int
}

func (f *ConntrackFilter) match(e *conntrack.Entry) bool {
	if f.IP.IsValid() {
		if !f.IP.Is4() {
			return false
		}
		k := ip4Key(f.IP.As4())
		if e.Orig.Src != k && e.Orig.Dst != k && e.Reply.Src != k && e.Reply.Dst != k {
			return false
		}
	}
	if p := f.Port; p != 0 && e.Orig.SrcPort != p && e.Orig.DstPort != p && e.Reply.SrcPort != p && e.Reply.DstPort != p {
		return false
	}
	return true
}

// FlowTuple is one direction of a flow.
type FlowTuple struct {
	Src netip.AddrPort `json:"src"`
	Dst netip.AddrPort `json:"dst"`
}

// Flow is a conntrack entry as weft conntrack lists it.
type Flow struct {
	Proto   string    `json:"proto"`
	State   string    `json:"state"`
	Orig    FlowTuple `json:"orig"`
	Reply   FlowTuple `json:"reply"`
	Replied bool      `json:"replied"`
	// Service is the frontend whose NAT the flow carries ("" for none).
	Service string `json:"service,omitempty"`
	// IdleSeconds since the last packet (to about a second), ExpiresIn
	// seconds until the flow is aged out without more packets.
	IdleSeconds float64 `json:"idle_seconds"`
	ExpiresIn   float64 `json:"expires_in_seconds"`
}

func flowTuple(t conntrack.Tuple) FlowTuple {
	return FlowTuple{Src: netip.AddrPortFrom(t.SrcAddr(), t.SrcPort), Dst: netip.AddrPortFrom(t.DstAddr(), t.DstPort)}
}

// Conntrack lists the tracked flows that match f, as of time now (the
// clock Process is given).
func (s *Switch) Conntrack(f ConntrackFilter, now int64) []Flow {
	svcs := s.services.Load()
	entries := s.ct.List(f.match, f.Limit)
	out := make([]Flow, len(entries))
	for i := range entries {
		e := &entries[i]
		fl := Flow{
			Proto: protoName(e.Orig.Proto), State: e.State.String(),
			Orig: flowTuple(e.Orig), Reply: flowTuple(e.Reply), Replied: e.Replied,
			IdleSeconds: float64(now-e.LastSeen) / 1e9, ExpiresIn: float64(e.Expires-now) / 1e9,
		}
		if e.Service != 0 {
			if fr := svcs.frontend(e.Service); fr != nil {
				fl.Service = fr.spec.Name
			} else {
				fl.Service = "(removed)"
			}
		}
		out[i] = fl
	}
	return out
}

// FlushConntrack removes the flows that match f and returns how many. A
// flushed flow's next packet is a new flow: to a service, it picks a
// backend again.
func (s *Switch) FlushConntrack(f ConntrackFilter) int { return s.ct.FlushIf(f.match) }
