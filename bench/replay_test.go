package bench

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/weftnet/weft/bench/internal/outerframe"
	vswitch "github.com/weftnet/weft/switch"
)

// expected sums the generator's intentions over frames: the counts a
// steady-state pass must produce.
type expected struct {
	verdicts    map[VerdictKey]uint64
	decapDrops  [outerframe.NumDropReasons]uint64
	ports       map[vswitch.PortID]uint64 // deliveries and flood copies
	encapByPeer map[[4]byte]uint64
	underlay    uint64
	floods      uint64

	arpReplies, echoReplies, icmpErrors, arpRequests uint64
	reasons                                          [vswitch.NumDropReasons]uint64
}

func expectFrom(t *Topology, fs []Frame) expected {
	e := expected{verdicts: map[VerdictKey]uint64{}, ports: map[vswitch.PortID]uint64{}, encapByPeer: map[[4]byte]uint64{}}
	for _, f := range fs {
		x := f.Expect
		if x.Underlay {
			e.underlay++
		}
		if x.DecapDrop != outerframe.DropNone {
			e.decapDrops[x.DecapDrop]++
			continue
		}
		e.verdicts[VerdictKey{x.Action, x.Reply, x.Reason}]++
		e.reasons[x.Reason]++
		switch x.Action {
		case vswitch.ActionDeliver:
			e.ports[x.Port]++
		case vswitch.ActionFlood:
			e.floods++
			for _, p := range t.Ports() {
				if p.Port != x.Port {
					e.ports[p.Port]++
				}
			}
		case vswitch.ActionEncap:
			e.encapByPeer[x.Peer.As4()]++
		}
		if !x.Reply {
			continue
		}
		switch {
		case f.Class == ClassARPGateway:
			e.arpReplies++
		case x.Reason == vswitch.DropNeighMiss:
			e.arpRequests++
		case x.Reason == vswitch.DropNone:
			e.echoReplies++
		default:
			e.icmpErrors++
		}
	}
	return e
}

// TestReplayMixVerdicts replays the committed mix in steady state and
// checks every count against what the generator meant each frame to do.
func TestReplayMixVerdicts(t *testing.T) {
	for _, tc := range []struct {
		routes int
		mode   Mode
	}{{4, ModeOffload}, {5000, ModeOffload}, {4, ModePlain}, {5000, ModePlain}} {
		routes := tc.routes
		t.Run(fmt.Sprintf("%s/routes=%d", tc.mode, routes), func(t *testing.T) {
			topo := DefaultTopology().WithRoutes(routes)
			gen := Mix(DefaultTopology(), DefaultMix)
			frames := loadTestdata(t, "mix")
			if len(frames) != len(gen) {
				t.Fatalf("mix.pcap has %d frames, the generator %d; %s", len(frames), len(gen), regenHint)
			}
			want := expectFrom(topo, gen)
			r, err := NewReplayerMode(topo, frames, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			r.Warm()
			txBefore := peerTx(r)
			r.Pass()
			st := r.Stats()

			got := st.Verdicts()
			if !maps.Equal(got, want.verdicts) {
				for _, k := range unionKeys(got, want.verdicts) {
					if got[k] != want.verdicts[k] {
						t.Errorf("verdict %-32s: %d, want %d", k, got[k], want.verdicts[k])
					}
				}
				explainMismatches(t, r, gen)
			}
			if st.DecapDrops != want.decapDrops {
				t.Errorf("decap drops %v, want %v", st.DecapDrops, want.decapDrops)
			}
			if st.Underlay != want.underlay {
				t.Errorf("%d frames from the underlay, want %d", st.Underlay, want.underlay)
			}
			for id, s := range st.Ports {
				if s.Frames != want.ports[vswitch.PortID(id)] {
					t.Errorf("port %d sink: %d frames, want %d", id, s.Frames, want.ports[vswitch.PortID(id)])
				}
			}
			var encaps uint64
			txAfter := peerTx(r)
			for peer, n := range want.encapByPeer {
				encaps += n
				if d := txAfter[peer] - txBefore[peer]; d != n {
					t.Errorf("peer %v: %d frames sent, want %d", peer, d, n)
				}
			}
			if st.Encap.Frames != encaps || st.EncapErrors != 0 || st.PortGone != 0 || st.OtherVerdicts != 0 {
				t.Errorf("encap sink %d frames (want %d), %d encap errors, %d to missing ports, %d unknown verdicts",
					st.Encap.Frames, encaps, st.EncapErrors, st.PortGone, st.OtherVerdicts)
			}

			// The switch's own counters agree with the verdicts.
			sc := st.Switch
			for reason := vswitch.DropReason(1); reason < vswitch.NumDropReasons; reason++ {
				if sc.Drops[reason] != want.reasons[reason] {
					t.Errorf("switch counter drops[%s] = %d, want %d", reason, sc.Drops[reason], want.reasons[reason])
				}
			}
			answers := []struct {
				name      string
				got, want uint64
			}{
				{"ARP replies", sc.ARPReplies, want.arpReplies},
				{"echo replies", sc.EchoReplies, want.echoReplies},
				{"ICMP errors", sc.ICMPErrors, want.icmpErrors},
				{"ARP requests", sc.ARPRequests, want.arpRequests},
			}
			for _, a := range answers {
				if a.got != a.want || a.want == 0 {
					t.Errorf("switch %s: %d, want %d (> 0)", a.name, a.got, a.want)
				}
			}
			if st.Frames != uint64(len(frames)) || st.Passes != 1 {
				t.Errorf("stats: %d frames in %d passes, want %d in 1", st.Frames, st.Passes, len(frames))
			}
		})
	}
}

func peerTx(r *Replayer) map[[4]byte]uint64 {
	m := map[[4]byte]uint64{}
	for _, p := range r.peers.List() {
		if q, ok := r.peers.Lookup(p.Underlay.As4()); ok {
			m[p.Underlay.As4()] = q.Stats().TxFrames.Load()
		}
	}
	return m
}

func unionKeys(a, b map[VerdictKey]uint64) []VerdictKey {
	var ks []VerdictKey
	for k := range a {
		ks = append(ks, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, func(x, y VerdictKey) int {
		if x.String() < y.String() {
			return -1
		}
		return 1
	})
	return ks
}

// explainMismatches traces the local-port frames whose verdict differs
// from the generator's intention, to say which class went wrong.
func explainMismatches(t *testing.T, r *Replayer, gen []Frame) {
	shown := 0
	for i, f := range gen {
		in, underlay := r.topo.Ingress(f.Data)
		if underlay {
			continue
		}
		v, steps := r.sw.Trace(f.Data, in, 0)
		x := f.Expect
		if v.Action != x.Action || v.Reason != x.Reason || v.Reply != x.Reply {
			t.Logf("frame %d %s on port %d: verdict %+v, want %s; trace %v", i, f.Class, in, v, x, steps)
			if shown++; shown == 10 {
				return
			}
		}
	}
}

// TestReplayScenarios checks the single-path scenarios do what their names
// say: every frame is forwarded the one way.
func TestReplayScenarios(t *testing.T) {
	tests := []struct {
		name  string
		topo  *Topology
		check func(st Stats, frames uint64) bool
	}{
		{"l2", DefaultTopology(), func(st Stats, n uint64) bool {
			return st.Verdict(VerdictKey{Action: vswitch.ActionDeliver}) == n
		}},
		{"route-encap-64", DefaultTopology(), func(st Stats, n uint64) bool {
			return st.Verdict(VerdictKey{Action: vswitch.ActionEncap}) == n && st.Encap.Frames == n
		}},
		{"route-encap-64", DefaultTopology().WithRoutes(5000), func(st Stats, n uint64) bool {
			return st.Verdict(VerdictKey{Action: vswitch.ActionEncap}) == n && st.Encap.Frames == n
		}},
		{"decap-deliver-64", DefaultTopology(), func(st Stats, n uint64) bool {
			return st.Decapped == n && st.Verdict(VerdictKey{Action: vswitch.ActionDeliver}) == n
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/routes="+strconv.Itoa(tc.topo.Routes), func(t *testing.T) {
			s, err := ScenarioByName(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewReplayer(tc.topo, Datas(s.Gen(tc.topo)))
			if err != nil {
				t.Fatal(err)
			}
			r.Warm()
			r.Pass()
			st := r.Stats()
			if !tc.check(st, r.FramesPerPass()) {
				t.Errorf("%d frames: verdicts %v, decapped %d, encap sink %d", r.FramesPerPass(), st.Verdicts(), st.Decapped, st.Encap.Frames)
			}
		})
	}
}

// TestZeroAllocs pins the replay loop at zero allocations per pass (so per
// frame) in steady state: route + encap, decap + deliver, L2 forwarding,
// and the whole mix (floods, ARP replies, ICMP errors and drops included).
func TestZeroAllocs(t *testing.T) {
	tests := []struct {
		name     string
		topo     *Topology
		frames   func(*Topology) [][]byte
		fdbFill  int
		mustHave []VerdictKey
	}{
		{"route+encap", DefaultTopology(), scenarioData("route-encap-64"), 0,
			[]VerdictKey{{Action: vswitch.ActionEncap}}},
		{"route+encap 5000 routes", DefaultTopology().WithRoutes(5000), scenarioData("route-encap-64"), 0,
			[]VerdictKey{{Action: vswitch.ActionEncap}}},
		{"decap+deliver", DefaultTopology(), scenarioData("decap-deliver-64"), 0,
			[]VerdictKey{{Action: vswitch.ActionDeliver}}},
		{"l2 forward, full FDB", DefaultTopology(), scenarioData("l2"), 8192,
			[]VerdictKey{{Action: vswitch.ActionDeliver}}},
		{"mix", DefaultTopology(), scenarioData("mix"), 0, []VerdictKey{
			{Action: vswitch.ActionDeliver}, {Action: vswitch.ActionFlood}, {Action: vswitch.ActionEncap},
			{Action: vswitch.ActionDeliver, Reply: true}, // ARP and echo replies
			{Action: vswitch.ActionDrop, Reason: vswitch.DropSpoofed},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReplayer(tc.topo, tc.frames(tc.topo))
			if err != nil {
				t.Fatal(err)
			}
			if tc.fdbFill > 0 {
				r.FillFDB(tc.fdbFill)
			}
			r.Warm()
			r.Pass()
			st := r.Stats()
			for _, k := range tc.mustHave {
				if st.Verdict(k) == 0 {
					t.Errorf("no %s verdict in a pass: %v", k, st.Verdicts())
				}
			}
			if n := testing.AllocsPerRun(20, r.Pass); n != 0 {
				t.Errorf("%.1f allocations per pass of %d frames", n, r.FramesPerPass())
			}
		})
	}
}

func scenarioData(name string) func(*Topology) [][]byte {
	return func(t *Topology) [][]byte {
		s, err := ScenarioByName(name)
		if err != nil {
			panic(err)
		}
		return Datas(s.Gen(t))
	}
}
