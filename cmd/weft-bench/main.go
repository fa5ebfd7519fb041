// Command weft-bench generates traffic pcaps and replays pcaps through
// weft's forwarding pipeline (switch, VXLAN decap and encap) on one core,
// with counting sinks in place of devices.
//
//	weft-bench gen [-scenario mix] [-routes N] -o FILE
//	weft-bench gen -all -dir DIR
//	weft-bench replay [-pcap FILE [-as-node ADDR|auto|none] | -scenario NAME] [-routes N] [-fdb N] [-duration 5s] [-runs 1]
//	weft-bench scenarios
//	weft-bench medians [FILE...]
//
// A capture of underlay VXLAN traffic (taken between nodes, e.g. on a `weft
// sim` underlay bridge) is replayed as one of its nodes, with the topology
// derived from the capture (bench.AsNode): -as-node picks the node by its
// underlay address; by default a capture whose VXLAN does not involve the
// synthetic node's underlay address is replayed this way as the VXLAN
// destination seen most.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/weftnet/weft/bench"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "weft-bench:", err)
		}
		os.Exit(2)
	}
}

const usage = `usage:
  weft-bench gen [-scenario NAME] [-routes N] -o FILE   write one scenario's pcap
  weft-bench gen -all [-dir DIR]                       write every scenario (default topology) to DIR/<name>.pcap
  weft-bench replay [flags]                            replay a pcap (any Ethernet pcap/pcapng) and print the figures;
                                                       a capture of underlay VXLAN replays as one node (-as-node)
  weft-bench scenarios                                 list the scenarios
  weft-bench medians [FILE...]                         median [min–max] of each benchmark's runs in raw
                                                       'go test -bench -count N' output (files or stdin)
`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "gen":
		return gen(args[1:], stdout, stderr)
	case "replay":
		return replay(args[1:], stdout, stderr)
	case "medians":
		return medians(args[1:], stdout, stderr)
	case "scenarios":
		for _, s := range bench.Scenarios {
			fmt.Fprintf(stdout, "%-18s %s\n", s.Name, s.Doc)
		}
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func gen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "mix", "scenario to generate (see `weft-bench scenarios`)")
	routes := fs.Int("routes", 0, "peer routes in the topology (0 = the default 4); route-encap-64 spreads over them")
	out := fs.String("o", "", "output pcap file")
	all := fs.Bool("all", false, "write every scenario for the default topology")
	dir := fs.String("dir", "bench/testdata", "output directory for -all")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *all {
		for _, s := range bench.Scenarios {
			p := filepath.Join(*dir, s.Name+".pcap")
			if err := writeScenario(s, bench.DefaultTopology(), p); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "wrote", p)
		}
		return nil
	}
	if *out == "" {
		return errors.New("gen: -o FILE is required")
	}
	s, err := bench.ScenarioByName(*scenario)
	if err != nil {
		return err
	}
	if err := writeScenario(s, topology(*routes), *out); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "wrote", *out)
	return nil
}

func topology(routes int) *bench.Topology {
	t := bench.DefaultTopology()
	if routes > 0 {
		t = t.WithRoutes(routes)
	}
	return t
}

func writeScenario(s bench.Scenario, t *bench.Topology, path string) error {
	return bench.WritePcapFile(path, bench.Datas(s.Gen(t)))
}

func replay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pcap := fs.String("pcap", "", "pcap or pcapng file to replay (default: the generated scenario)")
	scenario := fs.String("scenario", "mix", "scenario to generate in memory when -pcap is not given")
	routes := fs.Int("routes", 0, "peer routes in the switch (0 = the default 4; e.g. 5000)")
	fdb := fs.Int("fdb", 0, "extra MACs to teach the FDB before replaying (e.g. 8192 fills the default table)")
	duration := fs.Duration("duration", 5*time.Second, "how long each run replays")
	runs := fs.Int("runs", 1, "number of timed runs; the median is reported")
	quiet := fs.Bool("q", false, "print the figures only, not the verdict mix")
	asNode := fs.String("as-node", "", "with -pcap of underlay VXLAN traffic: replay it as the node with this underlay `address`, "+
		"with the topology derived from the capture; \"auto\" = the VXLAN destination seen most; \"none\" = the synthetic topology. "+
		"Default: auto when the capture's VXLAN does not involve the synthetic node ("+bench.DefaultTopology().Underlay.String()+"), else none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 {
		return errors.New("replay: -runs must be at least 1")
	}
	if *asNode != "" && *pcap == "" {
		return errors.New("replay: -as-node needs -pcap")
	}
	t := topology(*routes)
	var frames [][]byte
	source := *pcap
	if *pcap != "" {
		c, err := bench.LoadPcap(*pcap)
		if err != nil {
			return err
		}
		if c.Truncated > 0 || c.Skipped > 0 {
			fmt.Fprintf(stdout, "note: %d frames truncated by the capture's snap length (replayed as captured), %d longer than %d bytes skipped\n",
				c.Truncated, c.Skipped, bench.MaxFrameLen)
		}
		frames = c.Frames
		uc, why, err := asNodeCapture(frames, *asNode)
		if err != nil {
			return err
		}
		if uc != nil {
			fmt.Fprintf(stdout, "topology from the capture (%s):\n", why)
			uc.WriteSummary(stdout)
			t = uc.Topology
			if *routes > 0 {
				t = t.WithRoutes(*routes)
			}
			frames = uc.Frames
		}
	} else {
		s, err := bench.ScenarioByName(*scenario)
		if err != nil {
			return err
		}
		frames = bench.Datas(s.Gen(t))
		source = "scenario " + s.Name + " (generated)"
	}
	if len(frames) == 0 {
		return errors.New("replay: no frames to replay")
	}
	r, err := bench.NewReplayer(t, frames)
	if err != nil {
		return err
	}
	if *fdb > 0 {
		r.FillFDB(*fdb)
	}
	r.Warm()
	fmt.Fprintf(stdout, "replay %s: %d frames, %d bytes per pass in %d batches (<= %d per port), %d peer routes, FDB %d entries\n",
		source, r.FramesPerPass(), r.BytesPerPass(), r.Batches(), bench.BatchSize, len(t.AllPeers()), r.Switch().Counters().FDBEntries)
	results := make([]bench.Result, *runs)
	for i := range results {
		results[i] = r.Run(*duration)
		fmt.Fprintf(stdout, "run %d: %s\n", i+1, results[i])
	}
	med := median(results)
	if *runs > 1 {
		fmt.Fprintf(stdout, "median: %.1f ns/frame, %.2f Mpps, %.2f Gbit/s, %.3f allocs/frame; median CPU %.1f ns/frame\n",
			med.NsPerFrame(), med.Mpps(), med.Gbps(), med.AllocsPerFrame(), medianCPU(results))
	}
	if !*quiet {
		med.Stats.WriteReport(stdout, t)
	}
	return nil
}

// asNodeCapture derives the node to replay a capture as, per -as-node
// (see its usage), or returns nil for the synthetic topology.
func asNodeCapture(frames [][]byte, asNode string) (uc *bench.UnderlayCapture, why string, err error) {
	var node netip.Addr
	switch asNode {
	case "none":
		return nil, "", nil
	case "auto":
		why = "-as-node auto: the VXLAN destination seen most"
	case "":
		eps := bench.VXLANEndpoints(frames)
		synthetic := bench.DefaultTopology().Underlay
		if len(eps) == 0 || slices.ContainsFunc(eps, func(e bench.VXLANEndpoint) bool { return e.Addr == synthetic }) {
			return nil, "", nil
		}
		why = fmt.Sprintf("its VXLAN does not involve the synthetic node %v, so as the VXLAN destination seen most; -as-node none for the synthetic topology", synthetic)
	default:
		if node, err = netip.ParseAddr(asNode); err != nil {
			return nil, "", fmt.Errorf("replay: -as-node %q: an underlay address, auto or none", asNode)
		}
		why = "-as-node " + node.String()
	}
	uc, err = bench.AsNode(frames, node)
	if err != nil {
		return nil, "", fmt.Errorf("replay: %w", err)
	}
	if len(uc.Frames) == 0 {
		return nil, "", fmt.Errorf("replay: as node %v: none of the captured frames is VXLAN to or from it", uc.Topology.Underlay)
	}
	return uc, why, nil
}

// median returns the run with the median time per frame.
func median(rs []bench.Result) bench.Result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b bench.Result) int {
		switch {
		case a.NsPerFrame() < b.NsPerFrame():
			return -1
		case a.NsPerFrame() > b.NsPerFrame():
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// medianCPU returns the median CPU time per frame over the runs.
func medianCPU(rs []bench.Result) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = r.CPUNsPerFrame()
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}
