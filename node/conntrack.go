package node

import (
	"context"
	"time"

	"github.com/weftnet/weft/api"
	vswitch "github.com/weftnet/weft/switch"
)

// The conntrack API (api.ConntrackService) and the service and conntrack
// counters for weft counters and Prometheus.

var _ api.ConntrackService = (*Node)(nil)

func conntrackFilter(q api.ConntrackQuery) vswitch.ConntrackFilter {
	return vswitch.ConntrackFilter{IP: q.IP, Port: q.Port, Limit: q.Limit}
}

// Conntrack lists the switch's tracked flows that match q.
func (n *Node) Conntrack(_ context.Context, q api.ConntrackQuery) ([]api.ConntrackFlow, error) {
	flows := n.sw.Conntrack(conntrackFilter(q), n.now())
	out := make([]api.ConntrackFlow, len(flows))
	for i, f := range flows {
		out[i] = api.ConntrackFlow{
			Proto: f.Proto, State: f.State, Replied: f.Replied, Service: f.Service,
			Orig:  api.ConntrackTuple{Src: f.Orig.Src, Dst: f.Orig.Dst},
			Reply: api.ConntrackTuple{Src: f.Reply.Src, Dst: f.Reply.Dst},
			Idle:  api.Duration(time.Duration(f.IdleSeconds * 1e9)), Expires: api.Duration(time.Duration(f.ExpiresIn * 1e9)),
		}
	}
	return out, nil
}

// FlushConntrack removes the flows that match q. A flushed service flow's
// next packet picks a backend again.
func (n *Node) FlushConntrack(_ context.Context, q api.ConntrackQuery) (api.ConntrackFlushResult, error) {
	return api.ConntrackFlushResult{Flushed: n.sw.FlushConntrack(conntrackFilter(q))}, nil
}

// conntrackCounters adds the conntrack and service counters to c.
func (n *Node) conntrackCounters(c api.Counters) {
	sc := n.sw.Counters()
	ct := sc.Conntrack
	c["conntrack.reply_recovered"] = sc.ReplyRecovered
	c["conntrack.reply_unrecovered"] = sc.ReplyUnrecovered
	c["conntrack.fragments_translated"] = sc.FragTranslated
	c["conntrack.entries"] = ct.Entries
	c["conntrack.inserts"] = ct.Inserts
	c["conntrack.full"] = ct.Full
	c["conntrack.clashes"] = ct.Clashes
	c["conntrack.expired"] = ct.Expired
	c["conntrack.flushed"] = ct.Flushed
	c["conntrack.replaced"] = ct.Replaced
	for _, st := range n.sw.ServiceStats() {
		c["service.new_flows."+st.Name] = st.NewFlows
	}
}

// conntrackMetrics fills the conntrack and per-service parts of a metrics
// snapshot.
func (n *Node) conntrackMetrics(s *api.Snapshot) {
	ct := n.sw.Counters().Conntrack
	s.Conntrack = api.ConntrackCounters{
		Entries: ct.Entries, Max: uint64(n.sw.Config().Conntrack.Size), Inserts: ct.Inserts, Full: ct.Full,
		Clashes: ct.Clashes, Expired: ct.Expired, Flushed: ct.Flushed, Replaced: ct.Replaced,
	}
	stats := n.sw.ServiceStats()
	s.ServiceNewFlows = make(map[string]uint64, len(stats))
	for _, st := range stats {
		s.ServiceNewFlows[st.Name] = st.NewFlows
	}
}
