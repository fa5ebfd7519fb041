package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/childproc"
)

// simCluster is what the benchmark needs of a running sim, read from
// `weft sim status -o json`. The benchmark drives the sim through the weft
// CLI rather than importing package sim: DESIGN.md's import rules (checked
// by internal/archtest) keep bench/ from importing sim/.
type simCluster struct {
	Name  string `json:"name"`
	Dir   string `json:"dir"`
	Nodes []struct {
		Name   string `json:"name"`
		Netns  string `json:"netns"`
		PID    int    `json:"pid"`
		Log    string `json:"log"`
		Socket string `json:"socket"`
		Pods   []struct {
			Name    string       `json:"name"`
			Netns   string       `json:"netns"`
			Address netip.Prefix `json:"address"`
		} `json:"pods"`
	} `json:"nodes"`
}

// weftSim is a two-node, one-pod-per-node sim brought up for the run.
type weftSim struct {
	cfg        *config
	name       string
	state      simCluster
	pod1, pod2 string // namespaces
	pod2IP     string
	pids       []int // the two weftds
	server     *childproc.Proc
}

// weftCmd runs `weft sim SUB --name NAME ARGS...`.
func (s *weftSim) weftCmd(ctx context.Context, sub string, args ...string) *exec.Cmd {
	argv := append([]string{"sim", sub, "--name", s.name}, args...)
	return exec.CommandContext(ctx, s.cfg.WeftBin, argv...)
}

// upWeft builds the sim: `weft sim up --nodes 2 --pods-per-node 1` with the
// benchmark's weftd (wrapped to add E2E_WEFTD_ARGS).
func upWeft(ctx context.Context, cfg *config, name string, progress io.Writer) (*weftSim, error) {
	s := &weftSim{cfg: cfg, name: name}
	weftd := cfg.WeftdBin
	if len(cfg.WeftdArgs) > 0 {
		// The sim takes no extra weftd arguments on its command line, so
		// a wrapper adds them. It execs weftd, so the PID the sim records
		// is weftd's and its argv[0] still names weftd.
		weftd = filepath.Join(cfg.OutDir, "weftd-e2e-wrapper")
		script := "#!/bin/sh\nexec " + shellQuote(cfg.WeftdBin) + ` "$@"`
		for _, a := range cfg.WeftdArgs {
			script += " " + shellQuote(a)
		}
		if err := os.WriteFile(weftd, []byte(script+"\n"), 0o755); err != nil {
			return nil, err
		}
	}
	up := s.weftCmd(ctx, "up", "--nodes", "2", "--pods-per-node", "1", "--weftd", weftd)
	up.Stdout, up.Stderr = progress, progress
	if err := up.Run(); err != nil {
		return nil, fmt.Errorf("weft sim up: %w", err)
	}
	st := s.weftCmd(ctx, "status", "-o", "json")
	out, err := st.Output()
	if err != nil {
		s.down(progress)
		return nil, fmt.Errorf("weft sim status: %w", err)
	}
	if err := json.Unmarshal(out, &s.state); err != nil {
		s.down(progress)
		return nil, fmt.Errorf("weft sim status: %w", err)
	}
	if len(s.state.Nodes) != 2 || len(s.state.Nodes[0].Pods) != 1 || len(s.state.Nodes[1].Pods) != 1 {
		s.down(progress)
		return nil, errors.New("weft sim status: want 2 nodes with one pod each")
	}
	s.pod1 = s.state.Nodes[0].Pods[0].Netns
	s.pod2 = s.state.Nodes[1].Pods[0].Netns
	s.pod2IP = s.state.Nodes[1].Pods[0].Address.Addr().String()
	s.pids = []int{s.state.Nodes[0].PID, s.state.Nodes[1].PID}
	return s, nil
}

// gomaxprocs is the GOMAXPROCS in weftd pid's environment (weft sim sets
// each node's share of the CPUs), or "" if none is (Go's default).
func gomaxprocs(pid int) string {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return ""
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
			return v
		}
	}
	return ""
}

// down stops the iperf3 server and takes the sim down. It uses a fresh
// context: it must run even after the run's context was cancelled.
func (s *weftSim) down(progress io.Writer) {
	if s.server != nil {
		s.server.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.server.Done():
		case <-time.After(3 * time.Second):
			s.server.Cmd.Process.Kill()
			s.server.Wait()
		}
		s.server = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := s.weftCmd(ctx, "down")
	d.Stdout, d.Stderr = progress, progress
	if err := d.Run(); err != nil {
		fmt.Fprintf(progress, "weft sim down --name %s: %v (run it by hand)\n", s.name, err)
	}
}

// startServer starts `iperf3 -s` in pod 2 and waits until pod 1 reaches pod
// 2 with ping.
func (s *weftSim) startServer(ctx context.Context) error {
	srv := inNetns(context.Background(), s.pod2, "iperf3", "-s", "-B", s.pod2IP, "-p", "5201")
	logf, err := os.Create(filepath.Join(s.cfg.OutDir, "iperf3-server-weft.log"))
	if err != nil {
		return err
	}
	srv.Stdout, srv.Stderr = logf, logf
	p, err := childproc.Start(srv) // dies with bench-e2e, however it ends
	logf.Close()
	if err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	s.server = p
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if inNetns(ctx, s.pod1, "ping", "-c", "1", "-W", "1", "-q", s.pod2IP).Run() == nil {
			// Warm the neighbour tables and FDBs, as the anchors do.
			inNetns(ctx, s.pod1, "ping", "-c", "5", "-i", "0.2", "-q", s.pod2IP).Run()
			time.Sleep(time.Second) // iperf3 -s binds asynchronously
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("pod %s (%s) not reachable from %s", s.pod2, s.pod2IP, s.pod1)
}

// The service the svc1 row goes through: the anchor's VIP and port
// (../shared/anchors/kernel-vxlan.sh, ANC_VIP), so both systems are
// measured on the same addresses.
const (
	serviceVIP  = "10.96.0.10"
	serviceName = "e2e-iperf"
	serviceNS   = "e2e"
)

// serviceYAML is a ClusterIP Service on serviceVIP:5201/TCP with one
// EndpointSlice holding pod 2's iperf3 server: the endpoint is given, not
// selected, so the row measures the service path and nothing else.
func serviceYAML(pod2IP string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  clusterIP: %[3]s
  ports:
  - {name: iperf, port: 5201, protocol: TCP, targetPort: 5201}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-1, namespace: %[2]s, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports:
- {name: iperf, port: 5201, protocol: TCP}
endpoints:
- addresses: [%[4]s]
  conditions: {ready: true}
`, serviceName, serviceNS, serviceVIP, pod2IP)
}

// applyService stores serviceYAML through weftd's API (`weft sim apply`)
// and waits until pod 1 reaches pod 2's iperf3 server through the cluster
// IP: every weftd compiles the Service on its next look at the registry.
func (s *weftSim) applyService(ctx context.Context, progress io.Writer) error {
	apply := s.weftCmd(ctx, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(serviceYAML(s.pod2IP))
	apply.Stdout, apply.Stderr = progress, progress
	if err := apply.Run(); err != nil {
		return fmt.Errorf("weft sim apply (service %s/%s): %w", serviceNS, serviceName, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// A one-second iperf3 run, not a bare connect: a connection that
		// sends no iperf3 parameters would hold the server for its timeout.
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := inNetns(cctx, s.pod1, "iperf3", "-c", serviceVIP, "-p", "5201", "-t", "1").Run()
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("cluster IP %s:5201 not reachable from %s within 30 s", serviceVIP, s.pod1)
}

// weftRep is one repetition of one test.
type weftRep struct {
	Test        string  `json:"test"`
	Rep         int     `json:"rep"`
	Gbps        float64 `json:"gbps,omitempty"`
	Retransmits int     `json:"retransmits,omitempty"`
	Bytes       float64 `json:"bytes,omitempty"`
	CPUSeconds  float64 `json:"weftd_cpu_s,omitempty"`
	CPUPerGB    float64 `json:"weftd_cpu_s_per_gb,omitempty"`
	// SysSeconds is the part of CPUSeconds spent in the kernel (system
	// time: the copies, the sockets' and TAPs' stacks, the pods' stacks
	// run by weftd's writes), SysPerGB it per GB.
	SysSeconds  float64 `json:"weftd_sys_s,omitempty"`
	SysPerGB    float64 `json:"weftd_sys_s_per_gb,omitempty"`
	DaemonPct   float64 `json:"weftd_cpu_pct"`
	RxPPS       float64 `json:"rx_pps,omitempty"`
	TxPPS       float64 `json:"tx_pps,omitempty"`
	LossPct     float64 `json:"loss_pct,omitempty"`
	RcvbufDrops int64   `json:"pod2_rcvbuf_drops,omitempty"`
	Ping        *pingFigures
	BgBusyPct   float64 `json:"bg_busy_pct_before"`
	Waited      float64 `json:"waited_s"`
	MachinePct  float64 `json:"machine_busy_pct"`
	// MachinePerGB is machineCPUPerGB of a TCP run: what a GB cost the
	// whole machine, pods and kernel included.
	MachinePerGB float64 `json:"machine_cpu_s_per_gb,omitempty"`
	Err          string  `json:"error,omitempty"`
}

// timed runs one measurement command, accounting the weftds' CPU and the
// machine's busy share around it.
func (s *weftSim) timed(r *weftRep, cmd *exec.Cmd) []byte {
	u0, s0 := cpuSeconds(s.pids)
	b0, t0 := busyTicks()
	w0 := time.Now()
	out, err := cmd.Output()
	wall := time.Since(w0).Seconds()
	b1, t1 := busyTicks()
	u1, s1 := cpuSeconds(s.pids)
	r.CPUSeconds, r.SysSeconds = (u1-u0)+(s1-s0), s1-s0
	r.DaemonPct = r.CPUSeconds / wall * 100
	r.MachinePct = busyPct(b0, t0, b1, t1)
	if err != nil && len(out) == 0 {
		r.Err = err.Error()
	}
	return out
}

// runWeftTests runs every test E2E_SKIP leaves, E2E_REPS times each, in
// rounds (testRounds): the tests of a round run back to back in every
// repetition, in a rotating order, so the paths compared with each other
// see the same machine.
func (s *weftSim) runWeftTests(ctx context.Context, log func(format string, args ...any)) []weftRep {
	var reps []weftRep
	for _, round := range testRounds {
		for rep := 1; rep <= s.cfg.Reps; rep++ {
			for i := range round {
				// Each repetition starts the round one test later, so that
				// with as many repetitions as tests each test runs once in
				// each position (the first run after a pause, or after
				// the policy is deleted, need not cost what the others do).
				test := round[(i+rep-1)%len(round)]
				if s.cfg.skipped(test) {
					continue
				}
				if ctx.Err() != nil {
					return reps
				}
				reps = append(reps, s.runTest(ctx, test, rep, log))
			}
		}
	}
	return reps
}

// runTest is one repetition of one test; pol1 applies the policy before
// it and deletes it after (policyRow).
func (s *weftSim) runTest(ctx context.Context, test string, rep int, log func(format string, args ...any)) weftRep {
	r := weftRep{Test: test, Rep: rep}
	var policyDone func() error
	if test == "pol1" {
		done, err := s.policyRow(ctx, log)
		if err != nil {
			log("weft pol1: %v", err)
			r.Err = err.Error()
			return r
		}
		policyDone = done
	}
	T := strconv.Itoa(int(s.cfg.Duration / time.Second))
	// Wait for a quiet machine before the run's own timeout starts.
	bg, waited := waitQuiet(ctx, s.cfg.QuietPct, s.cfg.QuietMax)
	r.BgBusyPct, r.Waited = bg, waited.Seconds()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Duration+30*time.Second)
	defer cancel()
	switch test {
	case "tcp1", "pol1", "tcp4", "svc1":
		dst := s.pod2IP
		if test == "svc1" {
			dst = serviceVIP
		}
		argv := []string{"iperf3", "-c", dst, "-p", "5201", "-t", T, "-J"}
		if test == "tcp4" {
			argv = append(argv, "-P", "4")
		}
		out := s.timed(&r, inNetns(cctx, s.pod1, argv...))
		f, err := parseIperfTCP(out)
		if err != nil {
			r.Err = err.Error()
			break
		}
		r.Gbps, r.Bytes, r.Retransmits = f.Gbps, f.Bytes, f.Retransmits
		r.CPUPerGB, r.SysPerGB = r.CPUSeconds/(f.Bytes/1e9), r.SysSeconds/(f.Bytes/1e9)
		r.MachinePerGB = machineCPUPerGB(r.MachinePct, runtime.NumCPU(), r.Gbps)
		log("weft %-5s rep%d: %.3f Gbit/s retr=%d weftd %.2f CPU-s/GB (%.2f system; %.0f%% of a core) machine %.0f%% (%.2f CPU-s/GB) bg-before %.0f%% waited %.0fs",
			test, rep, r.Gbps, r.Retransmits, r.CPUPerGB, r.SysPerGB, r.DaemonPct, r.MachinePct, r.MachinePerGB, r.BgBusyPct, r.Waited)
	case "udp":
		rb0 := udpRcvbufErrors(cctx, s.pod2)
		out := s.timed(&r, inNetns(cctx, s.pod1, "iperf3", "-c", s.pod2IP, "-p", "5201", "-u", "-l", "64", "-b", "0", "-t", T, "-J"))
		r.RcvbufDrops = udpRcvbufErrors(cctx, s.pod2) - rb0
		f, err := parseIperfUDP(out)
		if err != nil {
			r.Err = err.Error()
			break
		}
		r.RxPPS, r.TxPPS, r.LossPct = f.RxPPS, f.TxPPS, f.LossPct
		log("weft udp64 rep%d: %.0f pps received (sent %.0f, loss %.2f%%, pod2 rcvbuf drops %d) weftd %.0f%% of a core machine %.0f%% bg-before %.0f%% waited %.0fs",
			rep, r.RxPPS, r.TxPPS, r.LossPct, r.RcvbufDrops, r.DaemonPct, r.MachinePct, r.BgBusyPct, r.Waited)
	case "ping":
		out := s.timed(&r, inNetns(cctx, s.pod1, "ping", "-c", "200", "-i", "0.01", s.pod2IP))
		f, err := parsePing(out)
		if err != nil {
			r.Err = err.Error()
			break
		}
		r.Ping = &f
		log("weft ping  rep%d: avg %.3f ms p50 %.3f p99 %.3f max %.3f (n=%d) bg-before %.0f%% waited %.0fs",
			rep, f.Avg, f.P50, f.P99, f.Max, f.N, r.BgBusyPct, r.Waited)
	}
	if policyDone != nil {
		if err := policyDone(); err != nil && r.Err == "" {
			r.Err = err.Error()
		}
	}
	if r.Err != "" {
		log("weft %s rep%d FAILED: %s", test, rep, r.Err)
	}
	return r
}

// profileTCP records one extra, unmeasured single-stream TCP run with perf
// (both weftds, kernel and user stacks) into outDir, and writes the flat
// profile as text next to it. It returns the report's path.
func (s *weftSim) profileTCP(ctx context.Context, log func(format string, args ...any)) (string, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return "", errors.New("perf not installed: no profile")
	}
	data := filepath.Join(s.cfg.OutDir, "perf-weft-tcp1.data")
	T := strconv.Itoa(int(s.cfg.Duration / time.Second))
	pids := strconv.Itoa(s.pids[0]) + "," + strconv.Itoa(s.pids[1])
	rec := exec.CommandContext(ctx, perf, "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", pids, "-o", data, "--", "sleep", T)
	if err := rec.Start(); err != nil {
		return "", fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // let perf attach before traffic starts
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Duration+30*time.Second)
	defer cancel()
	out, _ := inNetns(cctx, s.pod1, "iperf3", "-c", s.pod2IP, "-p", "5201", "-t", T, "-J").Output()
	if err := rec.Wait(); err != nil {
		return "", fmt.Errorf("perf record: %w", err)
	}
	if f, err := parseIperfTCP(out); err == nil {
		log("weft tcp1 under perf: %.3f Gbit/s (not counted)", f.Gbps)
	}
	txt := filepath.Join(s.cfg.OutDir, "perf-weft-tcp1.txt")
	rep, err := exec.CommandContext(ctx, perf, "report", "-i", data, "--stdio", "--no-children",
		"--sort", "comm,dso,symbol", "--percent-limit", "0.3", "-g", "none").Output()
	if err != nil {
		return "", fmt.Errorf("perf report: %w", err)
	}
	if err := os.WriteFile(txt, rep, 0o644); err != nil {
		return "", err
	}
	return txt, nil
}

// topOfProfile returns the first n sample lines of a perf report.
func topOfProfile(report string, n int) []string {
	var out []string
	for _, l := range strings.Split(report, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		// -g none still prints empty call-graph columns ("-  -").
		out = append(out, strings.TrimRight(l, " -"))
		if len(out) == n {
			break
		}
	}
	return out
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
