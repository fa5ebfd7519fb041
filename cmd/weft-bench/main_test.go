package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/bench"
)

// simCapture is the real capture of a two-node `weft sim`'s underlay.
var simCapture = filepath.Join("..", "..", "bench", "testdata", "captures", "sim-crossnode.pcap")

// TestReplayUnderlayCapture replays the sim capture as each of its nodes:
// the topology comes from the capture (by default for such a capture),
// the underlay's own chatter is skipped, and every replayed frame is
// delivered or encapsulated, none dropped.
func TestReplayUnderlayCapture(t *testing.T) {
	c, err := bench.LoadPcap(simCapture)
	if err != nil {
		t.Fatal(err)
	}
	eps := bench.VXLANEndpoints(c.Frames)
	if len(eps) < 2 {
		t.Fatalf("VXLAN endpoints %v: want two nodes", eps)
	}
	tests := []struct {
		name string
		args []string
		node string
	}{
		{"default", nil, eps[0].Addr.String()},
		{"auto", []string{"-as-node", "auto"}, eps[0].Addr.String()},
		{"the other node", []string{"-as-node", eps[1].Addr.String()}, eps[1].Addr.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"replay", "-pcap", simCapture, "-duration", "20ms"}, tc.args...)
			if err := run(args, &out, &errb); err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			o := out.String()
			for _, w := range []string{"topology from the capture", "node " + tc.node + ":", "VXLAN frames to the node",
				"underlay ARP", "underlay IPv6", "deliver", "encap"} {
				if !strings.Contains(o, w) {
					t.Errorf("output lacks %q:\n%s", w, o)
				}
			}
			_, mix, _ := strings.Cut(o, "verdict mix")
			mix, _, _ = strings.Cut(mix, "sinks:")
			lines := strings.Split(strings.TrimSpace(mix), "\n")[1:]
			if len(lines) != 2 {
				t.Errorf("verdict mix has %d lines, want deliver and encap:\n%s", len(lines), o)
			}
			for _, l := range lines {
				if f := strings.Fields(l); len(f) != 3 || f[0] != "deliver" && f[0] != "encap" {
					t.Errorf("verdict %q: want plain deliver or encap only", l)
				}
			}
			if !strings.Contains(o, " 0 drops counted") {
				t.Errorf("the switch counted drops:\n%s", o)
			}
		})
	}
	// -as-node none: the synthetic topology, as before.
	var out, errb bytes.Buffer
	if err := run([]string{"replay", "-pcap", simCapture, "-duration", "20ms", "-as-node", "none"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if strings.Contains(out.String(), "topology from the capture") || !strings.Contains(out.String(), "drop: hairpin") {
		t.Errorf("-as-node none did not replay through the synthetic topology:\n%s", out.String())
	}
}

func TestGenAndReplay(t *testing.T) {
	dir := t.TempDir()
	pcap := filepath.Join(dir, "l2.pcap")
	var out, errb bytes.Buffer
	if err := run([]string{"gen", "-scenario", "l2", "-o", pcap}, &out, &errb); err != nil {
		t.Fatalf("gen: %v\n%s", err, errb.String())
	}
	if fi, err := os.Stat(pcap); err != nil || fi.Size() == 0 {
		t.Fatalf("gen wrote nothing: %v", err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"pcap", []string{"replay", "-pcap", pcap, "-duration", "20ms"},
			[]string{"512 frames", "ns/frame", "Mpps", "allocs/frame", "deliver"}},
		{"scenario with routes and fdb", []string{"replay", "-scenario", "route-encap-64", "-routes", "600", "-fdb", "100", "-duration", "20ms", "-runs", "3", "-q"},
			[]string{"600 frames", "600 peer routes", "median:"}},
		{"mix", []string{"replay", "-duration", "20ms"},
			[]string{"scenario mix", "encap", "flood", "decap drop"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := run(tc.args, &out, &errb); err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pcap")
	if err := os.WriteFile(bad, []byte("not a pcap"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "help"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"gen without -o", []string{"gen"}, "-o FILE"},
		{"unknown scenario", []string{"gen", "-scenario", "nope", "-o", filepath.Join(dir, "x.pcap")}, "unknown scenario"},
		{"missing pcap", []string{"replay", "-pcap", filepath.Join(dir, "missing.pcap")}, "no such file"},
		{"bad pcap", []string{"replay", "-pcap", bad}, "pcap"},
		{"too many routes", []string{"replay", "-routes", "100000", "-duration", "1ms"}, "routes"},
		{"runs", []string{"replay", "-runs", "0"}, "-runs"},
		{"as-node without pcap", []string{"replay", "-as-node", "auto"}, "needs -pcap"},
		{"as-node not an address", []string{"replay", "-pcap", simCapture, "-as-node", "node1"}, "underlay address, auto or none"},
		{"as-node not in the capture", []string{"replay", "-pcap", simCapture, "-as-node", "192.0.2.1"}, "sends and receives no VXLAN"},
		{"as-node on a capture without VXLAN", []string{"replay", "-pcap", filepath.Join("..", "..", "bench", "testdata", "l2.pcap"), "-as-node", "auto"}, "no VXLAN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(tc.args, &out, &errb)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out.String())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
