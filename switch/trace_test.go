package vswitch

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/packet"
)

func TestTraceIsDry(t *testing.T) {
	tests := []struct {
		name       string
		f          []byte
		in         PortID
		wantStages []string
		contains   string
	}{
		{"L2 unknown unicast", udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 8), portA,
			[]string{StageIngress, StageL2, StageL2, StageOutput}, "would learn"},
		{"route to peer", udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 8), portA,
			[]string{StageIngress, StageL2, StageL2, StageL3, StageOutput}, "encap to peer 192.168.0.2"},
		{"ttl expired", udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 8), portA,
			[]string{StageIngress, StageL2, StageL2, StageL3, StageOutput}, "ICMP type 11"},
		{"ARP for the gateway", arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP), portA,
			[]string{StageIngress, StageL2, StageL2, StageL3, StageOutput}, "is-at 02:aa:00:00:00:01"},
		{"neighbour miss", udpFrame(routerMAC, peerMAC, peerPodIP, mustAddr("10.244.1.77"), 64, 8), portOverlay,
			[]string{StageIngress, StageL2, StageL3, StageOutput}, "ARP request"},
		{"spoofed", udpFrame(podBMAC, podAMAC, podBIP, podAIP, 64, 8), portA,
			[]string{StageIngress, StageOutput}, "drop (spoofed)"},
		{"ARP snooped on host port", arpFrame(bcast, packet.ARPOpRequest, otherMAC, mustAddr("10.244.1.60"), packet.MAC{}, podAIP), portHost,
			[]string{StageIngress, StageL2, StageL2, StageL2, StageOutput}, "would learn neighbour 10.244.1.60"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, func(c *Config) { c.ICMPBurst = 1 })
			orig := slices.Clone(tc.f)
			before := s.Counters()
			v, steps := s.Trace(tc.f, tc.in, sec)
			var stages []string
			var all strings.Builder
			for _, st := range steps {
				stages = append(stages, st.Stage)
				all.WriteString(st.Stage + ": " + st.Decision + "\n")
			}
			if !slices.Equal(stages, tc.wantStages) {
				t.Errorf("stages %v want %v\n%s", stages, tc.wantStages, all.String())
			}
			if !strings.Contains(all.String(), tc.contains) {
				t.Errorf("trace lacks %q:\n%s", tc.contains, all.String())
			}
			if !bytes.Equal(tc.f, orig) {
				t.Error("Trace modified the frame")
			}
			if s.Counters() != before || len(s.FDB()) != 0 || len(s.Neighbours()) != 3 {
				t.Errorf("Trace had side effects: %+v, fdb %v, neighbours %v", s.Counters(), s.FDB(), s.Neighbours())
			}
			// The live pipeline gives the same verdict, and (burst 1) the
			// trace spent no rate-limit token.
			got, _ := process(s, withCap(tc.f), tc.in, sec)
			if got != v {
				t.Errorf("Process verdict %+v, Trace verdict %+v", got, v)
			}
		})
	}
}
