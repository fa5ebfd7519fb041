package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/weftnet/weft/bench/internal/outerframe"
	vswitch "github.com/weftnet/weft/switch"
)

// Sink counts what an output received.
type Sink struct {
	Frames, Bytes uint64
}

// VerdictKey is a verdict stripped of its port and peer: what the switch
// did and why.
type VerdictKey struct {
	Action vswitch.Action
	Reply  bool
	Reason vswitch.DropReason
}

func (k VerdictKey) String() string {
	return Expect{Action: k.Action, Reply: k.Reply, Reason: k.Reason}.String()
}

// numActions is the number of vswitch.Action values (drop, deliver, flood,
// encap); a later one would be counted under OtherVerdicts.
const numActions = int(vswitch.ActionEncap) + 1

// Stats counts a replay.
type Stats struct {
	Passes  uint64
	Frames  uint64 // frames replayed (captured frames times passes)
	Bytes   uint64 // their captured bytes
	Batches uint64 // Process batches and decap batches

	// DeviceDrops are frames a device or the socket refused before the
	// switch saw them (an empty frame, which no TAP hands out; an empty
	// datagram).
	DeviceDrops uint64
	// PartialDrops are datagrams marked overlay.FlagPartialCsum whose
	// inner frame cannot travel partial (not TCP or UDP over IPv4):
	// datapath's offload_bad_partial, refused after decapsulation and
	// before the switch.
	PartialDrops uint64

	Underlay   uint64 // frames that entered from the underlay
	Decapped   uint64 // of those, accepted by decapsulation
	DecapDrops [outerframe.NumDropReasons]uint64

	verdicts      [numActions][2][vswitch.NumDropReasons]uint64
	OtherVerdicts uint64

	Ports       []Sink // by PortID: deliveries and flood copies
	FloodCopies uint64
	Encap       Sink // full outer frames built and their length
	EncapErrors uint64
	PortGone    uint64 // deliveries to a port with no sink

	// Switch is the change in the switch's own counters (drops by reason,
	// answers sent) over the same frames.
	Switch vswitch.Counters
}

func (s *Stats) count(v *vswitch.Verdict) {
	a, r := int(v.Action), int(v.Reason)
	if a >= numActions || r >= int(vswitch.NumDropReasons) {
		s.OtherVerdicts++
		return
	}
	rep := 0
	if v.Reply {
		rep = 1
	}
	s.verdicts[a][rep][r]++
}

// Verdict returns how many frames got verdicts matching k.
func (s *Stats) Verdict(k VerdictKey) uint64 {
	if int(k.Action) >= numActions || k.Reason >= vswitch.NumDropReasons {
		return 0
	}
	rep := 0
	if k.Reply {
		rep = 1
	}
	return s.verdicts[k.Action][rep][k.Reason]
}

// Verdicts returns the non-zero verdict counts.
func (s *Stats) Verdicts() map[VerdictKey]uint64 {
	m := map[VerdictKey]uint64{}
	for a := range numActions {
		for rep := range 2 {
			for r := range int(vswitch.NumDropReasons) {
				if n := s.verdicts[a][rep][r]; n != 0 {
					m[VerdictKey{vswitch.Action(a), rep == 1, vswitch.DropReason(r)}] = n
				}
			}
		}
	}
	return m
}

// Action returns the number of verdicts with action a.
func (s *Stats) Action(a vswitch.Action) uint64 {
	var n uint64
	for k, c := range s.Verdicts() {
		if k.Action == a {
			n += c
		}
	}
	return n
}

// Replies returns the number of frames the router answered in place.
func (s *Stats) Replies() uint64 {
	var n uint64
	for k, c := range s.Verdicts() {
		if k.Reply {
			n += c
		}
	}
	return n
}

// DecapDropped returns the frames decapsulation refused.
func (s *Stats) DecapDropped() uint64 {
	var n uint64
	for _, c := range s.DecapDrops {
		n += c
	}
	return n
}

// counterDelta returns a - b for the event counters; gauges are a's.
func counterDelta(a, b vswitch.Counters) vswitch.Counters {
	d := a
	for i := range d.Drops {
		d.Drops[i] -= b.Drops[i]
	}
	d.ARPReplies -= b.ARPReplies
	d.ARPRequests -= b.ARPRequests
	d.ICMPErrors -= b.ICMPErrors
	d.EchoReplies -= b.EchoReplies
	d.FDBLearned -= b.FDBLearned
	d.FDBMoved -= b.FDBMoved
	d.FDBEvicted -= b.FDBEvicted
	d.FDBExpired -= b.FDBExpired
	d.NeighLearned -= b.NeighLearned
	d.NeighEvicted -= b.NeighEvicted
	d.NeighExpired -= b.NeighExpired
	return d
}

// WriteReport prints the verdict mix and the sinks of s.
func (s *Stats) WriteReport(w io.Writer, t *Topology) {
	pct := func(n uint64) float64 {
		if s.Frames == 0 {
			return 0
		}
		return 100 * float64(n) / float64(s.Frames)
	}
	fmt.Fprintf(w, "verdict mix (%d frames, %d passes):\n", s.Frames, s.Passes)
	vs := s.Verdicts()
	keys := make([]VerdictKey, 0, len(vs))
	for k := range vs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b VerdictKey) int {
		return strings.Compare(a.String(), b.String())
	})
	for _, k := range keys {
		fmt.Fprintf(w, "  %-40s %12d  %6.2f%%\n", k, vs[k], pct(vs[k]))
	}
	for r, n := range s.DecapDrops {
		if n != 0 {
			fmt.Fprintf(w, "  %-40s %12d  %6.2f%%\n", "decap drop: "+outerframe.DropReason(r).String(), n, pct(n))
		}
	}
	if s.OtherVerdicts != 0 {
		fmt.Fprintf(w, "  %-40s %12d\n", "unknown verdict", s.OtherVerdicts)
	}
	fmt.Fprintf(w, "sinks:\n")
	name := map[vswitch.PortID]string{t.Host.Port: "host"}
	for _, p := range t.Pods {
		name[p.Port] = "pod " + p.IP.String()
	}
	for id, sk := range s.Ports {
		if sk.Frames != 0 {
			fmt.Fprintf(w, "  port %-3d %-18s %12d frames %14d bytes\n", id, name[vswitch.PortID(id)], sk.Frames, sk.Bytes)
		}
	}
	fmt.Fprintf(w, "  %-27s %12d frames %14d bytes (full outer frames)\n", "encap", s.Encap.Frames, s.Encap.Bytes)
	fmt.Fprintf(w, "  flood copies %d, encap errors %d, deliveries to missing ports %d, refused by the devices %d, bad partial-checksum mark %d\n", s.FloodCopies, s.EncapErrors, s.PortGone, s.DeviceDrops, s.PartialDrops)
	fmt.Fprintf(w, "switch: %d answers (ARP replies %d, echo replies %d, ICMP errors %d, ARP requests %d), %d drops counted\n",
		s.Switch.ARPReplies+s.Switch.EchoReplies+s.Switch.ICMPErrors+s.Switch.ARPRequests,
		s.Switch.ARPReplies, s.Switch.EchoReplies, s.Switch.ICMPErrors, s.Switch.ARPRequests, s.Switch.TotalDrops())
}
