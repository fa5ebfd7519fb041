package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kernelResult is the anchor script's RESULT line, parsed.
type kernelResult struct {
	Line                  string
	TCP1, TCP4, UDP, Ping stat // Gbit/s, Gbit/s, received pps, avg ms
	PingP50, PingP99      float64
	UDPLoss               stat // percent
	System, PodOffload    string
	DaemonCPU             string
	// MachineGB1 and MachineGB4 are what a GB cost the whole machine in
	// the TCP 1- and 4-stream runs (machineCPUPerGB of each repetition),
	// read from the anchor's per-repetition log lines, which the RESULT
	// line does not carry: unknown (N 0) for a given E2E_KERNEL_RESULT.
	MachineGB1, MachineGB4 stat
	haveP50, haveP99, have bool
}

// anchorRepRE matches the anchor's log line for one TCP repetition
// (common.sh anc_run_tests):
//
//	[09:04:11] tcp4   rep1: 17.102 Gbit/s retr=0 daemonCPU=0% machineCPU=93% bgCPU_before=1% waited=0s
var anchorRepRE = regexp.MustCompile(`\b(tcp1|tcp4)\s+rep[0-9]+: ([0-9.]+) Gbit/s .*\bmachineCPU=([0-9.]+)%`)

// machineFromAnchorLog fills r.MachineGB1/4 from the anchor's log (its
// stderr) on a machine with cpus CPUs. Lines it does not know are skipped.
func (r *kernelResult) machineFromAnchorLog(log string, cpus int) {
	var gb1, gb4 []float64
	for _, m := range anchorRepRE.FindAllStringSubmatch(log, -1) {
		gbps, err1 := strconv.ParseFloat(m[2], 64)
		busy, err2 := strconv.ParseFloat(m[3], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		v := machineCPUPerGB(busy, cpus, gbps)
		if math.IsNaN(v) {
			continue
		}
		if m[1] == "tcp1" {
			gb1 = append(gb1, v)
		} else {
			gb4 = append(gb4, v)
		}
	}
	r.MachineGB1, r.MachineGB4 = statOf(gb1), statOf(gb4)
}

var (
	resultStatRE = regexp.MustCompile(`\b([a-z0-9_]+)=([0-9.]+)\[([0-9.]+)-([0-9.]+)\]`)
	resultWordRE = regexp.MustCompile(`\b([a-z0-9_]+|daemon_cpu_pct\([a-z0-9/]+\))=([^\s\[]+)(?:\s|$)`)
	resultLossRE = regexp.MustCompile(`\budp_loss=\[([^\]]*)\]`)
)

// parseKernelResult reads a line
//
//	RESULT system=kernel-vxlan ... tcp1_gbps=9.70[9.51-9.80] ... ping_p99_ms=0.071 ...
//
// printed by the anchor scripts (../shared/anchors/common.sh anc_summary).
func parseKernelResult(line string) (kernelResult, error) {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "RESULT ") {
		return kernelResult{}, fmt.Errorf("not a RESULT line: %q", line)
	}
	r := kernelResult{Line: line}
	for _, m := range resultStatRE.FindAllStringSubmatch(line, -1) {
		med, err1 := strconv.ParseFloat(m[2], 64)
		lo, err2 := strconv.ParseFloat(m[3], 64)
		hi, err3 := strconv.ParseFloat(m[4], 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		s := stat{Median: med, Min: lo, Max: hi, N: 1}
		switch m[1] {
		case "tcp1_gbps":
			r.TCP1 = s
		case "tcp4_gbps":
			r.TCP4 = s
		case "udp64_rx_pps":
			r.UDP = s
		case "ping_avg_ms":
			r.Ping = s
		default:
			continue
		}
		r.have = true
	}
	for _, m := range resultWordRE.FindAllStringSubmatch(line, -1) {
		switch m[1] {
		case "system":
			r.System = m[2]
		case "pod_offload":
			r.PodOffload = m[2]
		case "ping_p50_ms":
			if v, err := strconv.ParseFloat(m[2], 64); err == nil {
				r.PingP50, r.haveP50 = v, true
			}
		case "ping_p99_ms":
			if v, err := strconv.ParseFloat(m[2], 64); err == nil {
				r.PingP99, r.haveP99 = v, true
			}
		default:
			if strings.HasPrefix(m[1], "daemon_cpu_pct") {
				r.DaemonCPU = m[2]
			}
		}
	}
	if m := resultLossRE.FindStringSubmatch(line); m != nil {
		var losses []float64
		for _, f := range strings.Fields(m[1]) {
			if v, err := strconv.ParseFloat(strings.TrimSuffix(f, "%"), 64); err == nil {
				losses = append(losses, v)
			}
		}
		r.UDPLoss = statOf(losses)
	}
	if !r.have {
		return r, fmt.Errorf("RESULT line has no figures: %q", line)
	}
	return r, nil
}

// runKernelAnchor runs the kernel VXLAN anchor script with the same
// repetitions, duration and skips as the weft run, streaming its progress
// to progress, and returns its parsed RESULT line. With service it runs the
// anchor's service path (ANC_SERVICE=1: pod 1 -> serviceVIP, DNATed to pod
// 2 by iptables on node 1) for the svc1 row, TCP 1 stream only.
func runKernelAnchor(ctx context.Context, cfg *config, progress io.Writer, service bool) (kernelResult, error) {
	if _, err := os.Stat(cfg.KernelScript); err != nil {
		return kernelResult{}, fmt.Errorf("kernel anchor: %w (set E2E_KERNEL_SCRIPT)", err)
	}
	cmd := exec.CommandContext(ctx, "bash", cfg.KernelScript)
	cmd.Env = append(os.Environ(),
		"ANC_REPS="+strconv.Itoa(cfg.Reps),
		"ANC_T="+strconv.Itoa(int(cfg.Duration/time.Second)),
		"ANC_OUT="+cfg.OutDir+"/anchors",
		"ANC_QUIET_PCT="+strconv.FormatFloat(cfg.QuietPct, 'f', -1, 64),
		"ANC_QUIET_MAX="+strconv.Itoa(int(cfg.QuietMax/time.Second)),
	)
	if service {
		// Only tcp1 is the service row; the anchor's ping goes to pod 2
		// anyway (cluster IPs need not answer ICMP).
		cmd.Env = append(cmd.Env, "ANC_SERVICE=1", "ANC_SKIP=tcp4 udp ping")
	} else {
		cmd.Env = append(cmd.Env, "ANC_SERVICE=0", "ANC_SKIP="+strings.Join(cfg.Skip, " "))
	}
	// The script cleans up its namespaces on TERM (trap); give it time.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	// Its log goes to stderr: shown as it comes, and kept for the
	// per-repetition machine CPU figures.
	var anchorLog bytes.Buffer
	cmd.Stderr = io.MultiWriter(progress, &anchorLog)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return kernelResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return kernelResult{}, fmt.Errorf("kernel anchor: %w", err)
	}
	var result string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := sc.Text()
		fmt.Fprintln(progress, l)
		if strings.HasPrefix(l, "RESULT ") {
			result = l
		}
	}
	if err := cmd.Wait(); err != nil {
		return kernelResult{}, fmt.Errorf("kernel anchor %s: %w", cfg.KernelScript, err)
	}
	if result == "" {
		return kernelResult{}, fmt.Errorf("kernel anchor %s printed no RESULT line", cfg.KernelScript)
	}
	kr, err := parseKernelResult(result)
	if err == nil {
		kr.machineFromAnchorLog(anchorLog.String(), runtime.NumCPU())
	}
	return kr, err
}
