// Command weft-bench generates traffic pcaps and replays pcaps through
// weft's forwarding pipeline (switch, VXLAN decap and encap) on one core,
// with counting sinks in place of devices.
//
//	weft-bench gen [-scenario mix] [-routes N] -o FILE
//	weft-bench gen -all -dir DIR
//	weft-bench replay [-pcap FILE | -scenario NAME] [-routes N] [-fdb N] [-duration 5s] [-runs 1]
//	weft-bench scenarios
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
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
  weft-bench replay [flags]                            replay a pcap (any Ethernet pcap/pcapng) and print the figures
  weft-bench scenarios                                 list the scenarios
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 {
		return errors.New("replay: -runs must be at least 1")
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
