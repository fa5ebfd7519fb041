package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// summary is one benchmark run: its conditions, the raw weft repetitions,
// the kernel's RESULT line, and the figures computed from them.
type summary struct {
	When, Commit, Kernel string
	CPUs                 int
	LoadStart, LoadEnd   string
	Reps, T              int
	WeftdArgs            string
	WeftdProcs           string // GOMAXPROCS of the weftds ("" = Go's default)
	QuietPct             float64
	// Machine is what a system call and a thread wake-up cost here,
	// measured before the runs; MachineErr says why not, when the probe
	// failed (the conditions line then leaves the figures out).
	Machine    machineCosts
	MachineErr string

	WeftReps   []weftRep
	KernelRes  *kernelResult `json:",omitempty"`
	KernelNote string        `json:",omitempty"`
	// KernelSvcRes is the anchor's service run (ANC_SERVICE=1): its TCP1
	// is the kernel's svc1.
	KernelSvcRes  *kernelResult `json:",omitempty"`
	KernelSvcNote string        `json:",omitempty"`
	ProfilePath   string        `json:",omitempty"`
	ProfileTop    []string      `json:",omitempty"`

	Weft weftStats
}

// weftStats are the medians and ranges of weft's repetitions.
type weftStats struct {
	TCP1, TCP4, UDP, UDPLoss, PingAvg, PingP99 stat
	Svc1                                       stat // TCP 1 stream through the cluster IP
	Pol1                                       stat // TCP 1 stream with a permissive NetworkPolicy in force
	CPUGB1, CPUGB4, CPUGBSvc1, CPUGBPol1       stat // weftd CPU seconds per GB
	SysGB1, SysGB4                             stat // of CPUGB1 and CPUGB4, weftd's system time
	MachineGB1, MachineGB4                     stat // the whole machine's CPU seconds per GB
	DaemonUDP                                  stat // weftd CPU % of one core during UDP
	Retr1, Retr4                               stat
	BgBusy                                     stat // machine busy % in the second before each run
	Waited                                     stat // seconds waited for quiet
	Failed                                     int
}

func (s *summary) compute() {
	var tcp1, tcp4, svc1, pol1, udp, loss, pavg, p99, cpu1, cpu4, cpus1, cpup1, dudp, r1, r4, bg, waited []float64
	var mach1, mach4, sys1, sys4 []float64
	for _, r := range s.WeftReps {
		if r.Err != "" {
			s.Weft.Failed++
			continue
		}
		bg = append(bg, r.BgBusyPct)
		waited = append(waited, r.Waited)
		switch r.Test {
		case "tcp1":
			tcp1, cpu1, r1 = append(tcp1, r.Gbps), append(cpu1, r.CPUPerGB), append(r1, float64(r.Retransmits))
			mach1, sys1 = appendKnown(mach1, r.MachinePerGB), appendKnown(sys1, r.SysPerGB)
		case "svc1":
			svc1, cpus1 = append(svc1, r.Gbps), append(cpus1, r.CPUPerGB)
		case "pol1":
			pol1, cpup1 = append(pol1, r.Gbps), append(cpup1, r.CPUPerGB)
		case "tcp4":
			tcp4, cpu4, r4 = append(tcp4, r.Gbps), append(cpu4, r.CPUPerGB), append(r4, float64(r.Retransmits))
			mach4, sys4 = appendKnown(mach4, r.MachinePerGB), appendKnown(sys4, r.SysPerGB)
		case "udp":
			udp, loss, dudp = append(udp, r.RxPPS), append(loss, r.LossPct), append(dudp, r.DaemonPct)
		case "ping":
			if r.Ping != nil {
				pavg, p99 = append(pavg, r.Ping.Avg), append(p99, r.Ping.P99)
			}
		}
	}
	w := &s.Weft
	w.TCP1, w.TCP4, w.UDP, w.UDPLoss = statOf(tcp1), statOf(tcp4), statOf(udp), statOf(loss)
	w.PingAvg, w.PingP99 = statOf(pavg), statOf(p99)
	w.Svc1, w.CPUGBSvc1 = statOf(svc1), statOf(cpus1)
	w.Pol1, w.CPUGBPol1 = statOf(pol1), statOf(cpup1)
	w.CPUGB1, w.CPUGB4, w.DaemonUDP = statOf(cpu1), statOf(cpu4), statOf(dudp)
	w.Retr1, w.Retr4 = statOf(r1), statOf(r4)
	w.MachineGB1, w.MachineGB4 = statOf(mach1), statOf(mach4)
	w.SysGB1, w.SysGB4 = statOf(sys1), statOf(sys4)
	w.BgBusy, w.Waited = statOf(bg), statOf(waited)
}

// appendKnown appends v unless it is NaN or 0 (not measured: a JSON file
// from before the figure existed).
func appendKnown(vs []float64, v float64) []float64 {
	if math.IsNaN(v) || v == 0 {
		return vs
	}
	return append(vs, v)
}

// ratio is a/b, NaN unless both are known and b > 0.
func ratio(a, b stat) float64 {
	if !a.Valid() || !b.Valid() || b.Median <= 0 {
		return math.NaN()
	}
	return a.Median / b.Median
}

// ratios are weft/kernel for tcp1, tcp4, udp64 (received pps) and rtt (ping
// avg: above 1 means weft is slower).
func (s *summary) ratios() (tcp1, tcp4, udp, rtt float64) {
	if s.KernelRes == nil {
		n := math.NaN()
		return n, n, n, n
	}
	k := s.KernelRes
	return ratio(s.Weft.TCP1, k.TCP1), ratio(s.Weft.TCP4, k.TCP4), ratio(s.Weft.UDP, k.UDP), ratio(s.Weft.PingAvg, k.Ping)
}

// svcRatio is weft/kernel through the cluster IP (TCP 1 stream), NaN
// without the anchor's service run.
func (s *summary) svcRatio() float64 {
	if s.KernelSvcRes == nil {
		return math.NaN()
	}
	return ratio(s.Weft.Svc1, s.KernelSvcRes.TCP1)
}

// svcOverDirect is weft's service path over its own direct pod-IP path,
// TCP 1 stream (issue 13's target: at least 0.95).
func (s *summary) svcOverDirect() float64 { return ratio(s.Weft.Svc1, s.Weft.TCP1) }

// serviceLine is printed before the ratio line.
func (s *summary) serviceLine() string {
	return fmt.Sprintf("e2e service svc1/tcp1=%s (weft, TCP 1 stream: via cluster IP %s over direct to pod IP; target >= 0.95)",
		fmtRatio(s.svcOverDirect()), serviceVIP)
}

// policyOverNone is weft's TCP 1-stream figure with a permissive policy in
// force over the one without (issue 15's target: within 3 %, >= 0.97).
func (s *summary) policyOverNone() float64 { return ratio(s.Weft.Pol1, s.Weft.TCP1) }

// policyLine is printed after the service line.
func (s *summary) policyLine() string {
	return fmt.Sprintf("e2e policy pol1/tcp1=%s (weft, TCP 1 stream: a NetworkPolicy admitting everything in force over none; target >= 0.97)",
		fmtRatio(s.policyOverNone()))
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

// ratioLine is the last line the benchmark prints.
func (s *summary) ratioLine() string {
	t1, t4, u, r := s.ratios()
	return fmt.Sprintf("e2e ratio tcp1=%s tcp4=%s udp64=%s rtt=%s svc1=%s",
		fmtRatio(t1), fmtRatio(t4), fmtRatio(u), fmtRatio(r), fmtRatio(s.svcRatio()))
}

// costLine gives what a GB costs the whole machine, weft over the kernel
// path, for TCP 1 and 4 streams (above 1: weft costs more). Unlike the
// throughput ratios it does not depend on whether the machine had CPU to
// spare, and where both systems keep the CPUs busy (TCP 4 streams) its
// inverse bounds the throughput ratio.
func (s *summary) costLine() string {
	var k kernelResult
	if s.KernelRes != nil {
		k = *s.KernelRes
	}
	return fmt.Sprintf("e2e cost tcp1=%s tcp4=%s (machine CPU s per GB, weft/kernel: weft %s and %s)",
		fmtRatio(ratio(s.Weft.MachineGB1, k.MachineGB1)), fmtRatio(ratio(s.Weft.MachineGB4, k.MachineGB4)),
		fmtOne(s.Weft.MachineGB1.Median, s.Weft.MachineGB1.Valid(), "%.2f"), fmtOne(s.Weft.MachineGB4.Median, s.Weft.MachineGB4.Valid(), "%.2f"))
}

// fmtStat prints "median [min–max]" with the given verb, or "n/a".
func fmtStat(s stat, verb string) string {
	if !s.Valid() {
		return "n/a"
	}
	if s.N == 1 && s.Min == s.Max {
		return fmt.Sprintf(verb, s.Median)
	}
	return fmt.Sprintf(verb+" ["+verb+"–"+verb+"]", s.Median, s.Min, s.Max)
}

func fmtOne(v float64, ok bool, verb string) string {
	if !ok || math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf(verb, v)
}

// rows is the table both outputs print: test, weft, kernel, weft/kernel.
func (s *summary) rows() [][4]string {
	var k kernelResult
	haveK := s.KernelRes != nil
	if haveK {
		k = *s.KernelRes
	}
	kstat := func(st stat, verb string) string {
		if !haveK {
			return "n/a"
		}
		return fmtStat(st, verb)
	}
	var kGB1, kGB4 stat
	if haveK {
		kGB1, kGB4 = k.MachineGB1, k.MachineGB4
	}
	ksvc := "n/a"
	if s.KernelSvcRes != nil {
		ksvc = fmtStat(s.KernelSvcRes.TCP1, "%.2f")
	}
	w := s.Weft
	t1, t4, u, r := s.ratios()
	p99r := math.NaN()
	if haveK && k.haveP99 && k.PingP99 > 0 && w.PingP99.Valid() {
		p99r = w.PingP99.Median / k.PingP99
	}
	return [][4]string{
		{"TCP, 1 stream (Gbit/s)", fmtStat(w.TCP1, "%.2f"), kstat(k.TCP1, "%.2f"), fmtRatio(t1)},
		{"TCP, 1 stream, permissive NetworkPolicy in force (Gbit/s)", fmtStat(w.Pol1, "%.2f"), "", ""},
		{"TCP, 1 stream: permissive policy / none (weft)", fmtRatio(s.policyOverNone()), "", ""},
		{"TCP, 1 stream via cluster IP (Gbit/s)", fmtStat(w.Svc1, "%.2f"), ksvc, fmtRatio(s.svcRatio())},
		{"TCP, 1 stream: via cluster IP / direct (weft)", fmtRatio(s.svcOverDirect()), "", ""},
		{"TCP, 4 streams (Gbit/s)", fmtStat(w.TCP4, "%.2f"), kstat(k.TCP4, "%.2f"), fmtRatio(t4)},
		{"UDP 64 B, received (pkt/s)", fmtStat(w.UDP, "%.0f"), kstat(k.UDP, "%.0f"), fmtRatio(u)},
		{"UDP 64 B, loss (%)", fmtStat(w.UDPLoss, "%.1f"), kstat(k.UDPLoss, "%.1f"), ""},
		{"ping, avg (ms)", fmtStat(w.PingAvg, "%.3f"), kstat(k.Ping, "%.3f"), fmtRatio(r)},
		{"ping, p99 (ms)", fmtStat(w.PingP99, "%.3f"), fmtOne(k.PingP99, haveK && k.haveP99, "%.3f"), fmtRatio(p99r)},
		{"TCP 1 stream: retransmits", fmtStat(w.Retr1, "%.0f"), "", ""},
		{"weftd CPU s per GB, TCP 1 stream", fmtStat(w.CPUGB1, "%.2f"), "(in kernel)", ""},
		{"weftd CPU s per GB, TCP 1 stream, permissive policy", fmtStat(w.CPUGBPol1, "%.2f"), "", ""},
		{"weftd CPU s per GB, TCP 1 stream via cluster IP", fmtStat(w.CPUGBSvc1, "%.2f"), "(in kernel)", ""},
		{"weftd CPU s per GB, TCP 4 streams", fmtStat(w.CPUGB4, "%.2f"), "(in kernel)", ""},
		{"weftd CPU s per GB, TCP 1 stream, of it in the kernel (system time)", fmtStat(w.SysGB1, "%.2f"), "", ""},
		{"weftd CPU s per GB, TCP 4 streams, of it in the kernel (system time)", fmtStat(w.SysGB4, "%.2f"), "", ""},
		{"weftd CPU during UDP (% of a core)", fmtStat(w.DaemonUDP, "%.0f"), "(in kernel)", ""},
		{"machine CPU s per GB, TCP 1 stream (pods, daemons, kernel)", fmtStat(w.MachineGB1, "%.2f"), fmtStat(kGB1, "%.2f"), fmtRatio(ratio(w.MachineGB1, kGB1))},
		{"machine CPU s per GB, TCP 4 streams (pods, daemons, kernel)", fmtStat(w.MachineGB4, "%.2f"), fmtStat(kGB4, "%.2f"), fmtRatio(ratio(w.MachineGB4, kGB4))},
	}
}

func (s *summary) conditions() string {
	args := s.WeftdArgs
	if args == "" {
		args = "defaults"
	}
	if s.WeftdProcs != "" {
		args += " with GOMAXPROCS " + s.WeftdProcs + " (weft sim's share of the CPUs per node)"
	}
	c := fmt.Sprintf("%s, commit %s, kernel %s, %d CPUs; %d runs x %d s per test (median [min–max]); weftd %s; "+
		"load average %s at start, %s at end; before each weft run the machine was %s %% busy (waited up to %s s for <= %.0f %%)",
		s.When, s.Commit, s.Kernel, s.CPUs, s.Reps, s.T, args, s.LoadStart, s.LoadEnd,
		fmtStat(s.Weft.BgBusy, "%.0f"), fmtOne(s.Weft.Waited.Max, s.Weft.Waited.Valid(), "%.0f"), s.QuietPct)
	if s.MachineErr == "" {
		c += fmt.Sprintf("; on this machine a system call cost %.2f µs, a thread wake-up %.1f µs (%.1f µs across CPUs) and a round trip between two threads on two CPUs idle for %s before it %.0f µs (bench/e2e/machine.go, before the runs)",
			s.Machine.SyscallNs/1000, s.Machine.WakeUs, s.Machine.CrossWakeUs, idleGap, s.Machine.IdleRTTUs)
	}
	if s.Weft.Failed > 0 {
		c += fmt.Sprintf("; %d weft runs failed and are left out", s.Weft.Failed)
	}
	if s.KernelNote != "" {
		c += "; kernel VXLAN: " + s.KernelNote
	}
	if s.KernelSvcNote != "" {
		c += "; kernel VXLAN service path: " + s.KernelSvcNote
	}
	return c
}

// textTable is the table for the terminal.
func (s *summary) textTable() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "End to end: 2 nodes x 1 pod, weft vs kernel VXLAN\n%s\n\n", s.conditions())
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "test\tweft\tkernel VXLAN\tweft/kernel")
	for _, r := range s.rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r[0], r[1], r[2], r[3])
	}
	tw.Flush()
	if s.KernelRes != nil {
		fmt.Fprintf(&b, "\nkernel: %s\n", s.KernelRes.Line)
	}
	if s.KernelSvcRes != nil {
		fmt.Fprintf(&b, "kernel service path: %s\n", s.KernelSvcRes.Line)
	}
	return b.String()
}

// Section markers in docs/BENCHMARKS.md: the benchmark owns what is
// between them and nothing else in the file.
const (
	sectionBegin = "<!-- e2e:begin -->"
	sectionEnd   = "<!-- e2e:end -->"
)

// markdown is the "End to end" section, markers included.
func (s *summary) markdown() string {
	var b strings.Builder
	b.WriteString(sectionBegin + "\n")
	b.WriteString("## End to end\n\n")
	b.WriteString("Two nodes with one pod each, on one machine: weft (`weft sim`, two weftd processes, VXLAN over a veth/bridge underlay) " +
		"against the Linux kernel's VXLAN device routed like flannel's vxlan backend in the same two-node topology " +
		"(`../shared/anchors/kernel-vxlan.sh`), measured back to back in one run of `make bench-e2e` (`go run ./bench/e2e`). " +
		"iperf3 from pod 1 to pod 2: TCP with 1 and 4 streams, UDP with 64-byte datagrams at full rate (`-u -l 64 -b 0`, " +
		"datagrams received per second); `ping -c 200 -i 0.01` for latency. Pod MTU 1450 in both. " +
		"The service row is TCP with 1 stream from pod 1 to the cluster IP " + serviceVIP + ":5201, whose one endpoint is pod 2: " +
		"in weft a ClusterIP Service with an EndpointSlice applied through weftd's API (`weft sim apply`), load-balanced by the " +
		"client's weftd (conntrack + DNAT in its pipeline); in the kernel the anchor's service path (`ANC_SERVICE=1`, an iptables " +
		"DNAT on node 1 as kube-proxy's iptables mode does). \"via cluster IP / direct\" is weft's service row over its TCP 1-stream row " +
		"(issue 13's target: at least 0.95). The policy row is TCP with 1 stream pod to pod while a NetworkPolicy selecting both pods " +
		"admits everything both ways, so both weftds decide every new flow and track it in conntrack; \"permissive policy / none\" " +
		"is it over the TCP 1-stream row (issue 15's target: within 3 %). Each repetition runs the direct, policy and cluster-IP " +
		"runs back to back, in a rotating order, so a drift of the machine lands in all three, not in their ratios.\n\n")
	b.WriteString(s.conditions() + ".\n\n")
	b.WriteString("| test | weft | kernel VXLAN | weft / kernel |\n|---|---|---|---|\n")
	for _, r := range s.rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r[0], r[1], r[2], r[3])
	}
	b.WriteString("\n`" + s.ratioLine() + "`\n\n`" + s.costLine() + "`\n\n")
	b.WriteString("![weft vs kernel VXLAN throughput](e2e.svg)\n\n")
	if s.KernelRes != nil {
		b.WriteString("Kernel anchor's own line: `" + s.KernelRes.Line + "`\n\n")
	}
	if s.KernelSvcRes != nil {
		b.WriteString("Kernel anchor's service path (`ANC_SERVICE=1`, TCP 1 stream only): `" + s.KernelSvcRes.Line + "`\n\n")
	}
	b.WriteString("weftd CPU s per GB is the user+system time of both weftd processes during the TCP runs over the bytes received; " +
		"its system time is what weftd's system calls cost in the kernel (the copies, the TAPs' and UDP sockets' stacks, and the pods' " +
		"receive path, which a TAP write runs in weftd's thread). " +
		"Machine CPU s per GB is what a GB cost the whole machine, whatever ran (pods, daemons, the kernel's softirqs): " +
		"its busy share during the run times its CPUs over the throughput, for the kernel from the anchor's per-run `machineCPU=` log lines; " +
		"its weft / kernel column is how many times the kernel's cost weft pays. Where both systems keep the CPUs busy " +
		"(TCP 4 streams), its inverse bounds the throughput ratio weft can reach on this machine. " +
		"A perf profile of both weftds during an extra single-stream TCP run is written to `bench/out/perf-weft-tcp1.txt`.\n")
	b.WriteString(sectionEnd + "\n")
	return b.String()
}

// writeSection puts section (markers included) into the file at path:
// replacing the old one between the markers, else appending it; the rest
// of the file, which others own, is left as it is.
func writeSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	updated, err := replaceSection(string(old), section)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".e2e.tmp"
	if err := os.WriteFile(tmp, []byte(updated), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func replaceSection(doc, section string) (string, error) {
	i := strings.Index(doc, sectionBegin)
	j := strings.Index(doc, sectionEnd)
	switch {
	case i < 0 && j < 0:
		if doc == "" {
			return "# Benchmarks\n\n" + section, nil
		}
		if !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n" + section, nil
	case i < 0 || j < i || strings.Count(doc, sectionBegin) > 1 || strings.Count(doc, sectionEnd) > 1:
		return "", errors.New("e2e section markers are unpaired or repeated; fix them by hand")
	}
	end := j + len(sectionEnd)
	if end < len(doc) && doc[end] == '\n' {
		end++
	}
	return doc[:i] + section + doc[end:], nil
}
