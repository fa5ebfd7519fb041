package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kernelResult is the anchor script's RESULT line, parsed.
type kernelResult struct {
	Line                   string
	TCP1, TCP4, UDP, Ping  stat // Gbit/s, Gbit/s, received pps, avg ms
	PingP50, PingP99       float64
	UDPLoss                stat // percent
	System, PodOffload     string
	DaemonCPU              string
	haveP50, haveP99, have bool
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
	cmd.Stderr = progress
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
	return parseKernelResult(result)
}
